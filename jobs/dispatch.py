"""The outbox dispatcher: claim due rows, pace, send through a transport, record the outcome.

* Rate limits: per channel, a global rate and a minimum gap per recipient (``Pacer``); a 429
  pauses the channel for ``Retry-After`` and puts the row back without counting an attempt.
* Transient failures retry with exponential backoff and jitter; after ``max_attempts`` the row
  is ``dead`` and the admins are alerted.
* Permanent failures (unknown channel, revoked token, blocked bot) are ``failed`` at once with
  the reason, and the admins are alerted — no retry loop.
* Rows are claimed with a lease; a dispatcher killed mid-send leaves the row to be claimed
  again when the lease runs out (the one in flight may be sent twice, nothing is lost).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
from collections import defaultdict, deque
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine

from bot import metrics
from bot.transports.base import (
    Outgoing,
    PermanentSendError,
    RateLimited,
    TransientSendError,
    Transport,
)
from credit.calendar import BusinessCalendar, SendWindow
from credit.settings import Settings
from credit.store import outbox
from jobs.clock import SystemClock
from jobs.pacing import Pacer

log = logging.getLogger("creditbot.dispatch")


# recording a sent message when the database is away: first retry, longest wait
RECORD_RETRY_FIRST_SECONDS = 0.25
RECORD_RETRY_MAX_SECONDS = 4.0

# channels that are not people: no send windows
ALWAYS_OPEN = frozenset({"erp"})
# Sends on the wire at once per channel on the real clock (so network latency overlaps; each
# recipient still gets one at a time). On any other clock one at a time: a fake clock moves
# only when someone sleeps, and overlapping sends would see it jump under them.
IN_FLIGHT = 8
# A slot this close is now (a fake clock keeps whole microseconds: a shorter sleep would not
# move it, and a timestamp near 1.8e9 s is exact to ~2e-7 s only).
_NEAR = 1e-5


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


@dataclass
class DispatchReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    rate_limited: int = 0
    deferred: int = 0
    failed: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)


def backoff_seconds(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: base·2^(attempt-1), capped, times 0.5–1.5."""
    raw = min(cap, base * (2 ** max(0, attempt - 1)))
    return raw * (0.5 + rng.random())


class Dispatcher:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        transports: Mapping[str, Transport],
        clock: Clock,
        *,
        calendar: BusinessCalendar | None = None,
        rng: random.Random | None = None,
        respect_send_windows: bool = True,
        max_in_flight: int | None = None,
    ) -> None:
        self.engine = engine
        if max_in_flight is None:
            max_in_flight = IN_FLIGHT if isinstance(clock, SystemClock) else 1
        self.max_in_flight = max(1, max_in_flight)
        self.settings = settings
        self.respect_send_windows = respect_send_windows
        self.transports = dict(transports)
        self.clock = clock
        self.calendar = calendar or BusinessCalendar(settings.calendar.holiday_country)
        self.window = SendWindow(
            settings.calendar.send_window_start, settings.calendar.send_window_end
        )
        self.rng = rng or random.Random()
        cfg = settings.outbox
        self.pacers = {
            ch: Pacer(cfg.global_per_second, cfg.per_recipient_interval_seconds)
            for ch in self.transports
        }

    async def dispatch_once(self) -> DispatchReport:
        """Claim due rows and work through them.

        Each recipient's rows go in order, one at a time; recipients go side by side, each
        send at the first slot the pacer allows (nobody waits behind another recipient's
        gap). While a claim comes back full and sends are going (a row settled since), the
        next batch is claimed, for up to ``lease_seconds`` and up to as many rows in hand as
        the channel may send in half a lease: every recipient with a backlog then has rows in
        hand (with a single batch in hand, recipients whose rows lie further down the queue
        sit idle), and a backlog flows on without a pause between batches. Rows the pacer
        cannot fit in before 0.75 x lease are given back. Returns when every row claimed is
        settled.
        """
        report = DispatchReport()
        cfg = self.settings.outbox
        budget = self.clock.now() + timedelta(seconds=cfg.lease_seconds)
        cap = max(cfg.batch_size, int(cfg.global_per_second * cfg.lease_seconds / 2))
        work = _Round(self, report)
        want = cfg.batch_size
        got = await work.claim(want)
        while True:
            room = cap - work.in_hand
            if (
                got == want
                and work.settled
                and room >= max(1, cfg.batch_size // 4)
                and self.clock.now() < budget
            ):
                want = min(cfg.batch_size, room)
                got = await work.claim(want)
                continue
            if work.in_hand == 0:
                break
            await work.changed()
        await work.finish()
        return report

    async def drain(self, max_batches: int = 1000) -> DispatchReport:
        """Dispatch until nothing is due now (tests and ``creditbot dispatch --once``)."""
        total = DispatchReport()
        for _ in range(max_batches):
            report = await self.dispatch_once()
            for name in (
                "claimed",
                "sent",
                "retried",
                "rate_limited",
                "deferred",
                "failed",
                "dead",
            ):
                setattr(total, name, getattr(total, name) + getattr(report, name))
            total.errors += report.errors
            if report.claimed == 0 or report.sent + report.failed + report.dead == 0:
                break
        return total

    def _window_opens(self, channel: str, row: outbox.Claimed, now: datetime) -> datetime | None:
        """When the row may go, if that is later than ``now``. Send windows are for people;
        admin alerts and machine-to-machine calls (the ERP's decision callbacks) go at any
        hour."""
        if row.kind == "admin_alert" or channel in ALWAYS_OPEN or not self.respect_send_windows:
            return None
        zone = row.address.get("time_zone") or self.settings.calendar.timezone
        opens = self.window.next_open(now, zone, self.calendar)
        return opens if opens > now else None

    async def _defer(self, row: outbox.Claimed, at: datetime, report: DispatchReport) -> None:
        """Back to pending until ``at`` without counting an attempt (a closed send window, or
        a slot the lease would not cover)."""
        await asyncio.to_thread(
            outbox.reschedule, self.engine, row.id, at, None, count_attempt=False
        )
        report.deferred += 1

    async def _transmit(self, channel: str, row: outbox.Claimed, message: Outgoing) -> Any:
        """The transport's send. Whatever the answer, the next message to this recipient waits
        the full gap from the moment it came: the platform saw this one no later than that."""
        try:
            return await self.transports[channel].send(message)
        finally:
            self.pacers[channel].settle(str(row.recipient_id), self.clock.now().timestamp())

    async def _deliver(self, channel: str, row: outbox.Claimed, report: DispatchReport) -> None:
        """Send ``row`` now (its slot has come) and record the outcome."""
        pacer = self.pacers[channel]
        message = Outgoing(row.id, row.kind, row.address, row.payload, row.platform_ref)
        try:
            ref = await self._transmit(channel, row, message)
        except RateLimited as exc:
            now = self.clock.now()
            pacer.pause_until(now.timestamp() + exc.retry_after)
            at = now + timedelta(seconds=exc.retry_after)
            await asyncio.to_thread(
                outbox.reschedule, self.engine, row.id, at, str(exc), count_attempt=False
            )
            report.rate_limited += 1
            metrics.MESSAGES_RATE_LIMITED.labels(channel).inc()
        except PermanentSendError as exc:
            await self._give_up(row, "failed", exc.reason, report, unreachable=exc.unreachable)
        except Exception as exc:  # transient, or a bug in a transport: retry with backoff
            reason = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, TransientSendError):
                log.exception("transport %s raised on message %s", channel, row.id)
            if row.attempts >= self.settings.outbox.max_attempts:
                await self._give_up(
                    row, "dead", f"gave up after {row.attempts} attempts: {reason}", report
                )
                return
            delay = backoff_seconds(
                row.attempts,
                self.settings.outbox.backoff_base_seconds,
                self.settings.outbox.backoff_cap_seconds,
                self.rng,
            )
            at = self.clock.now() + timedelta(seconds=delay)
            await asyncio.to_thread(outbox.reschedule, self.engine, row.id, at, reason)
            report.retried += 1
            metrics.MESSAGES_RETRIED.labels(channel).inc()
            report.errors.append(reason)
        else:
            await self._record_sent(row, ref)
            report.sent += 1
            metrics.MESSAGES_SENT.labels(channel).inc()

    async def _record_sent(self, row: outbox.Claimed, ref: Any) -> None:
        """Mark ``row`` sent. The platform has the message: if the database is away (a
        restart, a lock), try again with backoff for most of the lease rather than leave
        the row to be sent a second time when the lease runs out."""
        give_up_at = self.clock.now() + timedelta(seconds=self.settings.outbox.lease_seconds * 0.8)
        delay = RECORD_RETRY_FIRST_SECONDS
        while True:
            try:
                await asyncio.to_thread(
                    outbox.mark_sent, self.engine, row.id, ref, self.clock.now()
                )
                return
            except Exception as exc:
                if self.clock.now() + timedelta(seconds=delay) > give_up_at:
                    log.error(
                        "message %s was sent but could not be recorded (%s): it will be sent "
                        "again when its lease runs out",
                        row.id,
                        type(exc).__name__,
                    )
                    raise
                log.warning(
                    "message %s sent; recording it failed (%s), again in %.1f s",
                    row.id,
                    type(exc).__name__,
                    delay,
                )
                await self.clock.sleep(delay)
                delay = min(delay * 2, RECORD_RETRY_MAX_SECONDS)

    async def _give_up(
        self,
        row: outbox.Claimed,
        status: str,
        reason: str,
        report: DispatchReport,
        *,
        unreachable: bool = False,
    ) -> None:
        now = self.clock.now()
        await asyncio.to_thread(
            outbox.give_up_and_alert,
            self.engine,
            row.id,
            status,
            reason,
            now,
            channels=self.settings.outbox.channels,
            unreachable_person_id=row.recipient_id if unreachable else None,
        )
        setattr(report, status, getattr(report, status) + 1)
        metrics.GIVEN_UP[status].labels(row.channel).inc()
        report.errors.append(reason)
        log.warning("message %s %s: %s", row.id, status, reason)


def dispatch_summary(report: DispatchReport) -> dict[str, Any]:
    return {
        k: getattr(report, k)
        for k in ("claimed", "sent", "retried", "rate_limited", "deferred", "failed", "dead")
    }


class _Round:
    """One ``dispatch_once``: the claimed rows in lanes (one per channel and recipient, in
    claim order), a schedule per channel (each lane's next row at its booked slot) and the
    sends on the wire. A lane books its next row when the previous one is settled, so one
    recipient's messages never overlap; a channel's loop starts each send when its slot
    comes, at most ``max_in_flight`` at once."""

    def __init__(self, dispatcher: Dispatcher, report: DispatchReport) -> None:
        self.d = dispatcher
        self.report = report
        self.in_hand = 0  # rows claimed and not yet settled (sent, put back or given up)
        self.settled = 0  # rows settled since the last claim
        self.lanes: dict[tuple[str, str], deque[tuple[outbox.Claimed, datetime]]] = {}
        self.ready: dict[str, list[tuple[float, int, str]]] = defaultdict(list)  # heaps
        self.wire: dict[str, set[asyncio.Task[None]]] = defaultdict(set)
        self.wake: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.loops: dict[str, asyncio.Task[None]] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self._seq = itertools.count()
        self._changed = asyncio.Event()

    async def claim(self, limit: int) -> int:
        """Claim up to ``limit`` due rows and put them in their lanes; how many came."""
        d, cfg = self.d, self.d.settings.outbox
        claimed_at = d.clock.now()
        rows = await asyncio.to_thread(
            outbox.claim,
            d.engine,
            claimed_at,
            limit=limit,
            lease_seconds=cfg.lease_seconds,
            channels=[*d.transports, outbox.UNROUTABLE],
        )
        self.report.claimed += len(rows)
        self.settled = 0
        # A send must start well before the lease lapses: after that another dispatcher may
        # claim the row and send it too. Rows the pacer cannot fit in by then are given back.
        send_by = claimed_at + timedelta(seconds=cfg.lease_seconds * 0.75)
        for row in rows:
            self.in_hand += 1
            if row.channel == outbox.UNROUTABLE:
                reason = "no chat identity for the configured channels"
                self._spawn(d._give_up(row, "failed", reason, self.report))
                continue
            lane_id = (row.channel, str(row.recipient_id))
            lane = self.lanes.get(lane_id)
            if lane is not None:  # busy: its next row is booked when this one's turn comes
                lane.append((row, send_by))
                continue
            self.lanes[lane_id] = deque([(row, send_by)])
            self._book(*lane_id)
        return len(rows)

    async def changed(self) -> None:
        """Until a row is settled."""
        self._changed.clear()
        await self._changed.wait()

    async def finish(self) -> None:
        """Wait for every task (the rows are settled by now) and raise what one raised."""
        await asyncio.gather(*self.tasks, *self.loops.values())

    # --- lanes ---------------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` (it settles one row) in the background."""

        async def settle() -> None:
            try:
                await work
            finally:
                self.in_hand -= 1
                self.settled += 1
                self._changed.set()

        self.tasks.append(asyncio.create_task(settle()))

    def _book(self, channel: str, key: str) -> None:
        """Book the slot of the lane's next row; rows that cannot go now (a closed send
        window, a slot after ``send_by``) are put back. An empty lane is dropped."""
        d = self.d
        lane = self.lanes[(channel, key)]
        pacer = d.pacers[channel]
        while lane:
            row, send_by = lane[0]
            now = d.clock.now()
            opens = d._window_opens(channel, row, now)
            if opens is not None:
                lane.popleft()
                self._spawn(d._defer(row, opens, self.report))
                continue
            slot = pacer.reserve(key, now.timestamp(), latest=send_by.timestamp())
            if slot > send_by.timestamp():  # (a long 429 pause): back to pending, not sent late
                lane.popleft()
                self._spawn(d._defer(row, datetime.fromtimestamp(slot, UTC), self.report))
                continue
            heapq.heappush(self.ready[channel], (slot, next(self._seq), key))
            self.wake[channel].set()
            loop = self.loops.get(channel)
            if loop is None or loop.done():
                if loop is not None:
                    self.tasks.append(loop)  # keep it for finish(): it may have raised
                self.loops[channel] = asyncio.create_task(self._run(channel))
            return
        del self.lanes[(channel, key)]

    async def _send(self, channel: str, key: str, row: outbox.Claimed) -> None:
        d = self.d
        try:
            await d._deliver(channel, row, self.report)
        finally:
            self.wire[channel].discard(asyncio.current_task())  # type: ignore[arg-type]
            self.in_hand -= 1
            self.settled += 1
            self._changed.set()
            self.wake[channel].set()
            self._book(channel, key)

    # --- a channel's loop ----------------------------------------------------------------------

    async def _run(self, channel: str) -> None:
        """Start each booked send when its slot comes; return when nothing is booked or on
        the wire."""
        d = self.d
        heap, wire, wake = self.ready[channel], self.wire[channel], self.wake[channel]
        pacer = d.pacers[channel]
        while heap or wire:
            if not heap or len(wire) >= d.max_in_flight:
                wake.clear()
                await wake.wait()
                continue
            slot, _, key = heap[0]
            if slot < pacer.paused_until:  # booked before a 429 paused the channel: again
                heapq.heappop(heap)
                self._book(channel, key)
                continue
            delay = slot - d.clock.now().timestamp()
            if delay > _NEAR:  # sleep until the slot, unless something is booked meanwhile
                wake.clear()
                sleeper = asyncio.create_task(d.clock.sleep(delay))
                waker = asyncio.create_task(wake.wait())
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
                for task in (sleeper, waker):
                    task.cancel()
                continue
            heapq.heappop(heap)
            row, _ = self.lanes[(channel, key)].popleft()
            task = asyncio.create_task(self._send(channel, key, row))
            wire.add(task)
            self.tasks.append(task)
            await asyncio.sleep(0)  # let it start: it reaches the wire at its slot's time
