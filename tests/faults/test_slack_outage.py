"""Slack down for a minute: every ``chat.postMessage`` answered HTTP 500 or 429 with a
``Retry-After``, for 60 s of wall time, then Slack recovers.

Two replicas dispatch admin alerts to 16 admins (12 queued before the outage, 4 during it):
admin alerts go at any hour, so the test does not depend on the time of day, and the
replicas run on the real clock — one clock for the replicas and the fake, so "not before the
``Retry-After``" is checked exactly. Backoff (``[outbox] backoff_base_seconds = 2``,
``backoff_cap_seconds = 8``, ``max_attempts = 30``) lets a message live through the minute.

* Nothing is lost, nothing dead or failed, each admin gets one message: Slack stored exactly
  one post per outbox row, the one its ``platform_ref`` names.
* ``Retry-After`` is honoured: after a 429 for a conversation, the next request to that
  conversation comes no sooner than the time it named (from the fake's request log).
* Retries are bounded (the backoff, no hot loop) and go on through the whole minute; the
  replicas stay ready during the outage and deliver by themselves after it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from tests.fakes.slack_api import Answer, FakeSlackAPI, RateLimit
from tests.faults.conftest import (
    Fleet,
    migrate,
    outbox_by_status,
    probe_engine,
    replica_env,
    rows,
    slack_admins,
    slack_posts,
    wait_for,
)
from tests.support.outbox_data import admin_alert_message, put, seed_people

pytestmark = [pytest.mark.faults, pytest.mark.postgres]

OUTAGE_SECONDS = 60.0  # required: a minute of wall time
FIRST, LATER = 12, 4
MAX_ATTEMPTS = 30


class Outage:
    """The fake's ``fault``: for ``seconds`` after ``start()``, each conversation's calls are
    answered 500, then 429 with Retry-After 3..7 s, in turn. Every answer is logged."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.until: float | None = None
        self.lock = threading.Lock()
        self.answers: list[tuple[str, float, Answer]] = []
        self._calls: Counter[str] = Counter()

    def start(self) -> None:
        self.until = time.time() + self.seconds

    def __call__(self, method: str, channel: str, at: float) -> Answer | None:
        if self.until is None or at >= self.until:
            return None
        with self.lock:
            n = self._calls[channel]
            self._calls[channel] += 1
            answer: Answer = 500 if n % 2 == 0 else RateLimit(3 + (n // 2) % 5)
            self.answers.append((channel, at, answer))
            return answer


def test_a_minute_of_slack_errors_and_rate_limits_is_ridden_out_and_delivered_once(
    fresh_pg_url: str, fleet: Fleet, fake_slack: FakeSlackAPI
) -> None:
    url = fresh_pg_url
    migrate(url)
    db = probe_engine(url)
    try:
        admins = slack_admins(FIRST + LATER)
        seed_people(db, reps=0, **admins)
        codes = sorted(admins)

        def queue(which: list[str], tag: str) -> list[int]:
            now = datetime.now(UTC)
            return put(
                db,
                [admin_alert_message(db, code, f"fault:{tag}:{code}", now) for code in which],
                now,
            )

        env = replica_env(
            db_url=url,
            slack=fake_slack,
            extra={
                "CREDITBOT_OUTBOX__BACKOFF_BASE_SECONDS": "2",
                "CREDITBOT_OUTBOX__BACKOFF_CAP_SECONDS": "8",
                "CREDITBOT_OUTBOX__MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            },
        )
        replicas = [fleet.start(name, env, clock=False) for name in ("a", "b")]
        fleet.wait_ready(replicas, timeout=60)

        outage = Outage(OUTAGE_SECONDS)
        fake_slack.fault = outage
        outage.start()
        assert outage.until is not None
        ids = queue(codes[:FIRST], "first")

        # more messages while Slack is down: once each of the first has been refused twice
        def refused_twice() -> bool:
            with outage.lock:
                seen = Counter(channel for channel, _, _ in outage.answers)
            return len(seen) == FIRST and min(seen.values()) >= 2

        wait_for(refused_twice, timeout=OUTAGE_SECONDS / 2, what="the first messages refused")
        ids += queue(codes[FIRST:], "later")

        # through the outage: the replicas stay ready; nothing is sent, nothing given up
        def outage_over() -> bool:
            for r in replicas:
                assert r.ready(), f"{r.name} not ready during the Slack outage"
            statuses = outbox_by_status(db)
            assert set(statuses) <= {"pending", "sending"}, statuses
            return time.time() >= outage.until  # type: ignore[operator]

        wait_for(outage_over, timeout=OUTAGE_SECONDS + 5, what="the minute's end", interval=0.5)
        wait_for(
            lambda: outbox_by_status(db) == {"sent": FIRST + LATER},
            timeout=45,
            what=f"every message sent after the outage (now {outbox_by_status(db)})",
            interval=0.2,
        )

        # exactly once each: Slack's posts are the outbox's records, one per admin
        posts = slack_posts(fake_slack)
        recorded = Counter(
            (ref["channel"], ref["ts"]) for (ref,) in rows(db, "SELECT platform_ref FROM outbox")
        )
        assert Counter((m.channel, m.ts) for m in posts) == recorded
        assert sorted(m.channel for m in posts) == sorted(
            FakeSlackAPI.dm_for(a["slack_user_id"]) for a in admins.values()
        )
        attempts = [n for (n,) in rows(db, "SELECT attempts FROM outbox")]
        assert max(attempts) < MAX_ATTEMPTS
        assert set(outbox_by_status(db)) == {"sent"}

        # Retry-After honoured, per conversation, from the fake's log of every request
        requests = defaultdict(list)
        for r in fake_slack.calls("chat.postMessage"):
            requests[FakeSlackAPI.dm_for(str(r.params["channel"]))].append(r.at)
        limited = [
            (c, at, a.retry_after) for c, at, a in outage.answers if isinstance(a, RateLimit)
        ]
        assert len(limited) >= FIRST + LATER
        for channel, at, wait in limited:
            later = [t for t in requests[channel] if t > at]
            assert later, f"nothing sent to {channel} after its 429"
            assert min(later) - at >= wait, (channel, wait, min(later) - at)

        # retried through the whole minute, with backoff: no hot loop
        answered = [at for _, at, _ in outage.answers]
        assert max(answered) >= outage.until - 10
        per_channel = Counter(channel for channel, _, _ in outage.answers)
        assert max(per_channel.values()) <= 25, per_channel
        assert len(outage.answers) == len(fake_slack.calls("chat.postMessage")) - len(posts)

        fleet.wait_ready(replicas, timeout=10)
        fleet.wait_leader(replicas, timeout=10)
        assert sorted(ids) == sorted(i for (i,) in rows(db, "SELECT id FROM outbox"))
    finally:
        fake_slack.fault = None
        db.dispose()


def test_outage_answers_alternate_errors_and_rate_limits() -> None:
    outage = Outage(60)
    assert outage("chat.postMessage", "D1", time.time()) is None  # not started
    outage.start()
    now = time.time()
    answers = [outage("chat.postMessage", "D1", now) for _ in range(4)]
    assert answers == [500, RateLimit(3), 500, RateLimit(4)]
    assert outage("chat.postMessage", "D2", now) == 500
    assert outage("chat.postMessage", "D1", now + timedelta(minutes=2).total_seconds()) is None
