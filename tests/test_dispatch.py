"""The outbox and the dispatcher, on SQLite and PostgreSQL, on a fake clock.

The chat platform is ``ScriptedTransport`` (tests/support/transport.py): it records each send
with the clock's time and raises what a test scripts (429, transient, permanent errors).
Nothing here sleeps in real time: the dispatcher's waits move the ``FakeClock``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine

from bot.transports.base import PermanentSendError, RateLimited, TransientSendError
from credit.store import outbox
from credit.store.db import write_session
from credit.store.models import AuditLog
from jobs.clock import FakeClock
from jobs.dispatch import Dispatcher, backoff_seconds
from tests.support.outbox_data import (
    ADMINS,
    INACTIVE_ADMIN,
    NOW,
    FixedRandom,
    admin_alert_message,
    audits,
    person,
    put,
    reminders,
    row,
    rows,
    seed_people,
    settings,
)
from tests.support.transport import ScriptedTransport

T = TypeVar("T")
S = timedelta(seconds=1)
EPS = 1e-5  # timedelta keeps microseconds: allow for rounding of float waits


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def make(
    engine: Engine, clock: FakeClock, rng: random.Random | None = None, **outbox_settings: object
) -> tuple[Dispatcher, ScriptedTransport]:
    transport = ScriptedTransport(clock)
    dispatcher = Dispatcher(
        engine, settings(**outbox_settings), {"slack": transport}, clock, rng=rng
    )
    return dispatcher, transport


def admin_ids(people: dict[str, int]) -> list[int]:
    return sorted(people[code] for code in ADMINS)


# --- 1. enqueue ----------------------------------------------------------------------------


def test_enqueue_is_idempotent_and_counts_only_new_rows(engine):
    seed_people(engine)
    first = reminders(engine, ["rep01", "rep02"])
    with write_session(engine) as s:
        assert outbox.enqueue(s, first, NOW) == 2

    same_key = dataclasses.replace(first[0], payload={"kind": "reminder", "changed": True})
    (third,) = reminders(engine, ["rep03"])
    with write_session(engine) as s:
        # an old key (with another payload), a new one, and the new one again in the same call
        assert outbox.enqueue(s, [same_key, third, third], NOW + timedelta(hours=1)) == 1
    with write_session(engine) as s:
        assert outbox.enqueue(s, [same_key, *first, third], NOW + timedelta(hours=2)) == 0
        assert outbox.enqueue(s, [], NOW) == 0

    stored = rows(engine)
    assert sorted(r.idempotency_key for r in stored) == sorted(
        m.idempotency_key for m in [*first, third]
    )
    kept = rows(engine, idempotency_key=first[0].idempotency_key)[0]
    assert kept.payload == first[0].payload  # the first write wins
    assert kept.created_at == NOW
    assert all(r.status == "pending" and r.attempts == 0 for r in stored)
    assert {r.next_attempt_at for r in stored} == {NOW}


def test_enqueue_is_part_of_the_callers_transaction(engine):
    seed_people(engine)
    messages = reminders(engine, ["rep01"])
    with pytest.raises(RuntimeError), write_session(engine) as s:
        assert outbox.enqueue(s, messages, NOW) == 1
        raise RuntimeError("the business change failed")
    assert rows(engine) == []


# --- 2. a plain dispatch -------------------------------------------------------------------


def test_dispatch_sends_each_due_row_once_and_records_the_reference(engine):
    seed_people(engine)
    due = put(engine, reminders(engine, ["rep01", "rep02", "rep03"]))
    (later,) = put(
        engine, reminders(engine, ["rep01"], not_before=NOW + timedelta(hours=1), tag="x")
    )
    clock = FakeClock(NOW)
    dispatcher, transport = make(engine, clock)

    report = run(dispatcher.drain())

    assert (report.claimed, report.sent, report.errors) == (3, 3, [])
    assert sorted(transport.delivered_ids()) == sorted(due)
    assert {c.recipient for c in transport.calls} == {"rep01", "rep02", "rep03"}
    for call in transport.calls:
        stored = row(engine, call.message_id)
        assert stored.status == "sent"
        assert stored.platform_ref == call.ref
        assert stored.platform_ref["message_id"] == stored.id
        assert stored.sent_at == call.at
        assert (stored.attempts, stored.lease_until, stored.last_error) == (1, None, None)
    assert row(engine, later).status == "pending"

    again = run(dispatcher.drain())
    assert (again.claimed, again.sent) == (0, 0)
    assert len(transport.calls) == 3

    clock.set(NOW + timedelta(hours=1))
    run(dispatcher.drain())
    other, other_transport = make(engine, clock)  # a second dispatcher finds nothing left
    assert run(other.drain()).claimed == 0
    assert other_transport.calls == []
    assert Counter(transport.delivered_ids()) == Counter([*due, later])
    assert row(engine, later).sent_at == NOW + timedelta(hours=1)


def test_sent_at_is_the_clock_time_of_the_send(engine):
    seed_people(engine)
    ids = put(engine, reminders(engine, ["rep01", "rep01"]))
    clock = FakeClock(NOW)
    dispatcher, transport = make(engine, clock, per_recipient_interval_seconds=30)
    run(dispatcher.drain())
    assert [row(engine, i).sent_at for i in ids] == [NOW, NOW + 30 * S]
    assert [c.at for c in transport.calls] == [NOW, NOW + 30 * S]


# --- 3. pacing -----------------------------------------------------------------------------


def test_messages_to_one_recipient_are_spaced_by_the_per_recipient_interval(engine):
    seed_people(engine)
    ids = put(engine, reminders(engine, ["rep01", "rep02"] * 3))
    clock = FakeClock(NOW)
    dispatcher, transport = make(
        engine, clock, per_recipient_interval_seconds=5, global_per_second=25, batch_size=4
    )

    run(dispatcher.drain())  # two batches: the pacer carries over between them

    assert sorted(transport.delivered_ids()) == sorted(ids)
    for code in ("rep01", "rep02"):
        times = [c.at for c in transport.calls if c.recipient == code]
        assert len(times) == 3
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert all(g >= 5 - EPS for g in gaps), (code, gaps)
    # one recipient's gap does not hold up the other: the six go in about 10 s, not 25
    assert transport.calls[0].at == NOW
    assert (transport.calls[-1].at - NOW).total_seconds() < 11


def test_many_recipients_never_exceed_the_global_rate(engine):
    codes = [f"rep{i:02d}" for i in range(1, 31)]
    seed_people(engine, reps=30)
    put(engine, reminders(engine, codes))
    clock = FakeClock(NOW)
    dispatcher, transport = make(engine, clock, global_per_second=4, batch_size=200)

    run(dispatcher.drain())

    assert sorted(c.recipient for c in transport.delivered) == codes
    times = sorted(c.at.timestamp() for c in transport.calls)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.25 - EPS
    for start in times:
        assert sum(start <= t < start + 1 - EPS for t in times) <= 4
    assert times[-1] - times[0] <= 29 * 0.25 + EPS  # paced, not slower than needed


# --- 4. 429 --------------------------------------------------------------------------------


def test_rate_limit_pauses_the_channel_and_does_not_count_an_attempt(engine):
    seed_people(engine)
    a, b = put(engine, reminders(engine, ["rep01", "rep02"]))
    clock = FakeClock(NOW)
    dispatcher, transport = make(engine, clock)
    transport.fail(a, RateLimited(7))

    report = run(dispatcher.dispatch_once())

    assert (report.rate_limited, report.sent) == (1, 1)
    limited = row(engine, a)
    assert limited.status == "pending"
    assert limited.attempts == 0
    assert limited.next_attempt_at == NOW + 7 * S
    assert limited.lease_until is None
    assert "rate limited" in (limited.last_error or "")
    first_429 = transport.attempts_for(a)[0].at
    (b_call,) = transport.attempts_for(b)
    assert b_call.delivered and b_call.at - first_429 >= 7 * S  # the channel waited

    run(dispatcher.drain())

    assert Counter(transport.delivered_ids()) == Counter([a, b])
    sent = row(engine, a)
    assert sent.status == "sent" and sent.attempts == 1
    assert sent.sent_at is not None and sent.sent_at >= NOW + 7 * S


def test_after_a_429_nothing_goes_out_on_the_channel_before_retry_after(engine):
    seed_people(engine)
    (a,) = put(engine, reminders(engine, ["rep01"]))
    (c,) = put(engine, reminders(engine, ["rep02"], not_before=NOW + 3 * S))
    clock = FakeClock(NOW)
    dispatcher, transport = make(engine, clock)
    transport.fail(a, RateLimited(7))

    run(dispatcher.drain())
    assert transport.delivered == []
    clock.set(NOW + 3 * S)  # c is due now, but the channel is paused until NOW+7
    run(dispatcher.drain())
    clock.set(max(clock.now(), NOW + 7 * S))
    run(dispatcher.drain())

    assert Counter(transport.delivered_ids()) == Counter([a, c])
    assert all(call.at >= NOW + 7 * S for call in transport.delivered)
    assert row(engine, a).attempts == 1


# --- 5. transient errors -------------------------------------------------------------------


def test_transient_errors_back_off_exponentially_then_the_row_is_dead(engine):
    people = seed_people(engine)
    (a,) = put(engine, reminders(engine, ["rep01"]))
    clock = FakeClock(NOW)
    dispatcher, transport = make(
        engine,
        clock,
        rng=FixedRandom(0.5),  # jitter factor exactly 1: the bare schedule
        max_attempts=6,
        backoff_base_seconds=10,
        backoff_cap_seconds=30,
    )
    transport.fail(a, *[TransientSendError("upstream 502")] * 10)

    delays = []
    for attempt in range(1, 6):
        report = run(dispatcher.drain())
        assert (report.retried, report.dead) == (1, 0)
        stored = row(engine, a)
        assert (stored.status, stored.attempts) == ("pending", attempt)
        assert "TransientSendError: upstream 502" in (stored.last_error or "")
        delays.append((stored.next_attempt_at - clock.now()).total_seconds())
        clock.set(stored.next_attempt_at - S)
        assert run(dispatcher.drain()).claimed == 0  # not before the backoff is over
        clock.set(stored.next_attempt_at)
    assert delays == pytest.approx([10, 20, 30, 30, 30])

    report = run(dispatcher.drain())
    assert report.dead == 1
    dead = row(engine, a)
    assert (dead.status, dead.attempts, dead.lease_until) == ("dead", 6, None)
    assert (dead.last_error or "").startswith("gave up after 6 attempts: TransientSendError")
    assert len(transport.attempts_for(a)) == 6

    (entry,) = audits(engine, "outbox.dead")
    assert entry.entity == "outbox" and entry.entity_id == str(a)
    assert "gave up after 6 attempts" in entry.after["reason"]

    alerts = rows(engine, kind="admin_alert")
    assert sorted(r.recipient_id for r in alerts) == admin_ids(people)  # not the inactive one
    assert people[INACTIVE_ADMIN] not in {r.recipient_id for r in alerts}
    for alert in alerts:
        assert alert.channel == "slack"
        assert alert.payload["message_id"] == a
        assert alert.payload["status"] == "dead"
        assert alert.payload["recipient_code"] == "rep01"

    clock.advance(hours=24)
    run(dispatcher.drain())
    assert len(transport.attempts_for(a)) == 6  # dead stays dead
    assert sorted(c.recipient for c in transport.delivered) == sorted(ADMINS)
    assert all(c.kind == "admin_alert" for c in transport.delivered)


def test_backoff_delays_are_jittered_within_half_to_one_and_a_half_times(engine):
    seed_people(engine)
    (a,) = put(engine, reminders(engine, ["rep01"]))
    clock = FakeClock(NOW)
    base, cap = 10.0, 50.0
    dispatcher, transport = make(
        engine,
        clock,
        rng=random.Random(20261125),
        max_attempts=8,
        backoff_base_seconds=base,
        backoff_cap_seconds=cap,
    )
    transport.fail(a, *[TransientSendError("timeout")] * 7)
    factors = []
    for n in range(1, 8):
        run(dispatcher.drain())
        stored = row(engine, a)
        delay = (stored.next_attempt_at - clock.now()).total_seconds()
        raw = min(cap, base * 2 ** (n - 1))
        assert 0.5 * raw - EPS <= delay <= 1.5 * raw + EPS, (n, delay)
        factors.append(delay / raw)
        clock.set(stored.next_attempt_at)
    assert len({round(f, 3) for f in factors}) > 1  # really jittered
    run(dispatcher.drain())
    assert row(engine, a).status == "sent" and len(transport.attempts_for(a)) == 8


def test_backoff_seconds_bounds():
    rng = random.Random(7)
    for attempt in range(1, 12):
        raw = min(600.0, 5.0 * 2 ** (attempt - 1))
        samples = [backoff_seconds(attempt, 5.0, 600.0, rng) for _ in range(400)]
        assert all(0.5 * raw <= d <= 1.5 * raw for d in samples)
        assert min(samples) < 0.6 * raw and max(samples) > 1.4 * raw
    assert backoff_seconds(3, 5.0, 600.0, FixedRandom(0.0)) == 10.0
    assert backoff_seconds(3, 5.0, 600.0, FixedRandom(0.5)) == 20.0
    assert backoff_seconds(30, 5.0, 600.0, FixedRandom(0.5)) == 600.0


def test_alerts_about_alerts_are_not_created(engine):
    seed_people(engine)
    (a,) = put(engine, reminders(engine, ["rep01"]))
    clock = FakeClock(NOW)
    dispatcher, transport = make(engine, clock, max_attempts=1)
    transport.fail(a, TransientSendError("timeout"))

    run(dispatcher.dispatch_once())
    assert row(engine, a).status == "dead"
    first, second = (r.id for r in rows(engine, kind="admin_alert"))
    transport.fail(first, PermanentSendError("channel_not_found"))
    transport.fail(second, TransientSendError("timeout"))

    run(dispatcher.drain())

    assert row(engine, first).status == "failed"
    assert row(engine, second).status == "dead"
    assert [r.id for r in rows(engine, kind="admin_alert")] == [first, second]
    assert [e.entity_id for e in audits(engine, "outbox.failed")] == [str(first)]
    assert sorted(e.entity_id for e in audits(engine, "outbox.dead")) == sorted(
        [str(a), str(second)]
    )


# --- 6. permanent errors -------------------------------------------------------------------


@pytest.mark.parametrize("unreachable", [True, False], ids=["unreachable", "reachable"])
def test_permanent_error_fails_at_once_and_alerts_the_admins(engine, unreachable):
    people = seed_people(engine)
    a, _ = put(engine, reminders(engine, ["rep01", "rep02"]))
    clock = FakeClock(NOW)
    dispatcher, transport = make(engine, clock)
    reason = "bot was blocked by the user"
    transport.fail(a, PermanentSendError(reason, unreachable=unreachable))

    report = run(dispatcher.dispatch_once())

    assert (report.failed, report.sent, report.retried) == (1, 1, 0)
    failed = row(engine, a)
    assert (failed.status, failed.last_error, failed.attempts) == ("failed", reason, 1)
    assert failed.lease_until is None
    (entry,) = audits(engine, "outbox.failed")
    assert entry.entity_id == str(a) and entry.after == {"reason": reason}

    alerts = rows(engine, kind="admin_alert")
    assert sorted(r.recipient_id for r in alerts) == admin_ids(people)
    assert {(r.payload["status"], r.payload["reason"]) for r in alerts} == {("failed", reason)}

    blocked = person(engine, "rep01")
    marked = audits(engine, "person.unreachable")
    if unreachable:
        assert blocked.unreachable_reason == reason
        assert [(e.entity, e.entity_id, e.after) for e in marked] == [
            ("person", "rep01", {"reason": reason})
        ]
    else:
        assert blocked.unreachable_reason is None
        assert marked == []
    assert person(engine, "rep02").unreachable_reason is None

    clock.advance(hours=48)  # no retry, however long we wait
    run(dispatcher.drain())
    assert len(transport.attempts_for(a)) == 1
    assert row(engine, a).status == "failed"
    assert Counter(c.kind for c in transport.delivered) == {"reminder": 1, "admin_alert": 2}


# --- 7. the send window --------------------------------------------------------------------

FRIDAY_2000_SHANGHAI = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
MONDAY_0800_SHANGHAI = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)


def test_outside_the_send_window_a_row_waits_for_the_next_working_morning(engine):
    seed_people(
        engine, lon01={"role": "rep", "slack_user_id": "ULON01", "time_zone": "Europe/London"}
    )
    (late,) = put(engine, reminders(engine, ["rep01"], not_before=FRIDAY_2000_SHANGHAI))
    (london,) = put(engine, reminders(engine, ["lon01"], not_before=FRIDAY_2000_SHANGHAI))
    (alert,) = put(engine, [admin_alert_message(engine, "adm01", "alert:t", FRIDAY_2000_SHANGHAI)])
    clock = FakeClock(FRIDAY_2000_SHANGHAI)
    dispatcher, transport = make(engine, clock)

    report = run(dispatcher.drain())

    assert (report.deferred, report.sent) == (1, 2)
    # 12:00 in London is inside *their* window; admin alerts are never held back
    assert sorted(transport.delivered_ids()) == sorted([london, alert])
    deferred = row(engine, late)
    assert deferred.status == "pending"
    assert deferred.next_attempt_at == MONDAY_0800_SHANGHAI
    assert deferred.attempts == 0 and deferred.lease_until is None

    for moment in (datetime(2026, 11, 28, 2, tzinfo=UTC), MONDAY_0800_SHANGHAI - S):
        clock.set(moment)
        assert run(dispatcher.drain()).claimed == 0
    clock.set(MONDAY_0800_SHANGHAI)
    run(dispatcher.drain())
    assert transport.attempts_for(late)[0].at == MONDAY_0800_SHANGHAI
    assert len(transport.attempts_for(late)) == 1
    sent = row(engine, late)
    assert (sent.status, sent.attempts) == ("sent", 1)


def test_before_the_window_opens_a_row_waits_until_eight_the_same_day(engine):
    seed_people(engine)
    early = datetime(2026, 11, 24, 22, 30, tzinfo=UTC)  # Wednesday 06:30 in Shanghai
    (a,) = put(engine, reminders(engine, ["rep01"], not_before=early))
    clock = FakeClock(early)
    dispatcher, transport = make(engine, clock)
    assert run(dispatcher.drain()).deferred == 1
    assert row(engine, a).next_attempt_at == NOW - 2 * timedelta(hours=1)  # 08:00 local
    assert transport.calls == []


# --- 8. unroutable -------------------------------------------------------------------------


def test_an_unroutable_row_fails_with_a_clear_reason_and_alerts_the_admins(engine):
    people = seed_people(engine, rep_nochat={"role": "rep"}, adm_nochat={"role": "admin"})
    nochat = person(engine, "rep_nochat")
    channel = outbox.route(nochat, ["slack"])
    assert channel == outbox.UNROUTABLE
    (a,) = put(engine, reminders(engine, ["rep_nochat"], channel=channel))
    clock = FakeClock(NOW)
    dispatcher, transport = make(engine, clock)

    run(dispatcher.drain())

    failed = row(engine, a)
    assert failed.status == "failed"
    assert failed.last_error == "no chat identity for the configured channels"
    assert transport.attempts_for(a) == []

    alerts = {r.recipient_id: r for r in rows(engine, kind="admin_alert")}
    assert sorted(alerts) == sorted([*admin_ids(people), people["adm_nochat"]])
    for alert in alerts.values():
        assert alert.payload["recipient_code"] == "rep_nochat"
        assert alert.payload["channel"] == outbox.UNROUTABLE
        assert "no chat identity" in alert.payload["reason"]
    # the admin without a chat identity cannot be told either: that alert fails, quietly
    assert alerts[people["adm_nochat"]].channel == outbox.UNROUTABLE
    assert row(engine, alerts[people["adm_nochat"]].id).status == "failed"
    assert sorted(e.entity_id for e in audits(engine, "outbox.failed")) == sorted(
        [str(a), str(alerts[people["adm_nochat"]].id)]
    )
    assert sorted(c.recipient for c in transport.delivered) == sorted(ADMINS)
    assert len(rows(engine, kind="admin_alert")) == 3  # no alert about the failed alert


# --- 9. leases -----------------------------------------------------------------------------


def test_a_leased_row_is_not_claimed_again_until_the_lease_lapses(engine):
    seed_people(engine)
    (a,) = put(engine, reminders(engine, ["rep01"]))

    (first,) = outbox.claim(engine, NOW, limit=10, lease_seconds=60, channels=["slack"])
    assert (first.id, first.attempts, first.channel, first.kind) == (a, 1, "slack", "reminder")
    assert first.address["slack_user_id"] == "UREP0001"
    assert first.address["time_zone"] == "Asia/Shanghai"
    assert first.payload["recipient"]["code"] == "rep01"
    leased = row(engine, a)
    assert (leased.status, leased.attempts, leased.lease_until) == ("sending", 1, NOW + 60 * S)

    for later in (0, 1, 30, 60):
        assert outbox.claim(engine, NOW + later * S, limit=10, lease_seconds=60) == []
    clock = FakeClock(NOW + 30 * S)
    dispatcher, transport = make(engine, clock)
    assert run(dispatcher.drain()).claimed == 0
    assert transport.calls == []

    assert (
        outbox.claim(engine, NOW + 61 * S, limit=10, lease_seconds=60, channels=["telegram"]) == []
    )
    (again,) = outbox.claim(engine, NOW + 61 * S, limit=10, lease_seconds=60, channels=["slack"])
    assert (again.id, again.attempts) == (a, 2)
    assert row(engine, a).lease_until == NOW + 121 * S


class SleepHookClock(FakeClock):
    """A FakeClock that runs ``hook`` (once) when a sleep carries it past ``moment``."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.hook: tuple[datetime, Callable[[], Awaitable[object]]] | None = None

    async def sleep(self, seconds: float) -> None:
        await super().sleep(seconds)
        if self.hook is not None and self.now() > self.hook[0]:
            _, hook = self.hook
            self.hook = None
            await hook()


def test_a_long_pause_does_not_send_rows_whose_lease_has_lapsed(engine):
    """A Retry-After longer than the lease must not make two dispatchers send the same rows:
    the rows that could not go before the lease ends are given back, not sent late."""
    seed_people(engine)
    a, b, c = put(engine, reminders(engine, ["rep01", "rep02", "rep03"]))
    clock = SleepHookClock(NOW)
    first, first_transport = make(engine, clock, lease_seconds=120)
    second, second_transport = make(engine, clock, lease_seconds=120)
    first_transport.fail(a, RateLimited(300))
    # while the first dispatcher waits out the 429, a second one runs after the lease lapsed
    clock.hook = (NOW + 120 * S, second.drain)

    run(first.dispatch_once())
    clock.set(max(clock.now(), NOW + 300 * S))
    run(second.drain())
    run(first.drain())

    delivered = first_transport.delivered_ids() + second_transport.delivered_ids()
    assert Counter(delivered) == Counter([a, b, c])
    for i in (a, b, c):
        stored = row(engine, i)
        assert (stored.status, stored.attempts) == ("sent", 1)
        assert stored.sent_at is not None and stored.sent_at >= NOW + 300 * S


# --- 10. concurrent claims -----------------------------------------------------------------


def test_concurrent_claims_never_hand_out_a_row_twice(engine):
    seed_people(engine, reps=20)
    ids = put(engine, reminders(engine, [f"rep{i % 20 + 1:02d}" for i in range(200)]))
    workers = 4
    barrier = threading.Barrier(workers)
    got: list[list[int]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            while batch := outbox.claim(
                engine, NOW, limit=10, lease_seconds=120, channels=["slack"]
            ):
                got[n].extend(c.id for c in batch)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []

    claimed = [i for batch in got for i in batch]
    assert len(claimed) == len(set(claimed)) == 200
    assert set(claimed) == set(ids)
    assert {(r.status, r.attempts) for r in rows(engine)} == {("sending", 1)}


# --- 11. operator retry --------------------------------------------------------------------


def test_retry_puts_failed_and_dead_rows_back_and_audits_it(engine):
    seed_people(engine)
    failed, dead, sent = put(engine, reminders(engine, ["rep01", "rep02", "rep03"]))
    (pending,) = put(
        engine, reminders(engine, ["rep02"], not_before=NOW + timedelta(hours=1), tag="p")
    )
    (leased,) = put(engine, reminders(engine, ["rep03"], not_before=NOW - 60 * S, tag="l"))
    (claimed,) = outbox.claim(engine, NOW, limit=1, lease_seconds=3600, channels=["slack"])
    assert claimed.id == leased
    clock = FakeClock(NOW)
    dispatcher, transport = make(engine, clock, max_attempts=1)
    transport.fail(failed, PermanentSendError("not_in_channel"))
    transport.fail(dead, TransientSendError("timeout"))
    run(dispatcher.dispatch_once())
    statuses = {i: row(engine, i).status for i in (failed, dead, sent, pending, leased)}
    assert statuses == {
        failed: "failed",
        dead: "dead",
        sent: "sent",
        pending: "pending",
        leased: "sending",
    }

    later = NOW + timedelta(minutes=10)
    for i in (sent, pending, leased):
        before = row(engine, i)
        with pytest.raises(ValueError, match="only failed or dead"), write_session(engine) as s:
            outbox.retry(s, i, later, "ops")
        after = row(engine, i)
        assert (after.status, after.attempts) == (before.status, before.attempts)
    with pytest.raises(LookupError), write_session(engine) as s:
        outbox.retry(s, 999_999, later, "ops")
    assert audits(engine, "outbox.retry") == []

    for i, was in ((failed, "failed"), (dead, "dead")):
        with write_session(engine) as s:
            outbox.retry(s, i, later, "ops@huarui")
        again = row(engine, i)
        assert (again.status, again.attempts, again.lease_until) == ("pending", 0, None)
        assert again.next_attempt_at == later
        entry: AuditLog = audits(engine, "outbox.retry")[-1]
        assert (entry.actor, entry.entity, entry.entity_id) == ("ops@huarui", "outbox", str(i))
        assert entry.before["status"] == was and entry.after == {"status": "pending"}
        assert entry.at == later

    clock.set(later)
    run(dispatcher.drain())
    for i in (failed, dead):
        assert row(engine, i).status == "sent"
        assert len(transport.attempts_for(i)) == 2
        assert transport.attempts_for(i)[-1].delivered
