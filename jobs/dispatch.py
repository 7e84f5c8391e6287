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
import logging
import random
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine

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
from jobs.pacing import Pacer

log = logging.getLogger("creditbot.dispatch")


# channels that are not people: no send windows
ALWAYS_OPEN = frozenset({"erp"})


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
    ) -> None:
        self.engine = engine
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
        """Claim one batch of due rows and work through it."""
        report = DispatchReport()
        cfg = self.settings.outbox
        claimed_at = self.clock.now()
        rows = await asyncio.to_thread(
            outbox.claim,
            self.engine,
            claimed_at,
            limit=cfg.batch_size,
            lease_seconds=cfg.lease_seconds,
            channels=[*self.transports, outbox.UNROUTABLE],
        )
        report.claimed = len(rows)
        by_channel: dict[str, list[outbox.Claimed]] = defaultdict(list)
        for row in rows:
            by_channel[row.channel].append(row)
        # A send must start well before the lease lapses: after that another dispatcher may
        # claim the row and send it too. Rows the pacer cannot fit in by then are given back.
        send_by = claimed_at + timedelta(seconds=cfg.lease_seconds * 0.75)
        await asyncio.gather(
            *(self._work_channel(ch, items, report, send_by) for ch, items in by_channel.items())
        )
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

    async def _work_channel(
        self, channel: str, rows: list[outbox.Claimed], report: DispatchReport, send_by: datetime
    ) -> None:
        for row in rows:
            await self._deliver(channel, row, report, send_by)

    async def _deliver(
        self, channel: str, row: outbox.Claimed, report: DispatchReport, send_by: datetime
    ) -> None:
        now = self.clock.now()
        if channel == outbox.UNROUTABLE:
            await self._give_up(
                row, "failed", "no chat identity for the configured channels", report
            )
            return
        zone = row.address.get("time_zone") or self.settings.calendar.timezone
        # send windows are for people; admin alerts and machine-to-machine calls (the ERP's
        # decision callbacks) go at any hour
        if row.kind != "admin_alert" and channel not in ALWAYS_OPEN and self.respect_send_windows:
            opens = self.window.next_open(now, zone, self.calendar)
            if opens > now:
                await asyncio.to_thread(
                    outbox.reschedule, self.engine, row.id, opens, None, count_attempt=False
                )
                report.deferred += 1
                return
        pacer = self.pacers[channel]
        slot = pacer.reserve(str(row.recipient_id), now.timestamp())
        if slot > send_by.timestamp():  # (a long 429 pause): back to pending, not sent late
            at = datetime.fromtimestamp(slot, UTC)
            await asyncio.to_thread(
                outbox.reschedule, self.engine, row.id, at, None, count_attempt=False
            )
            report.deferred += 1
            return
        wait = slot - now.timestamp()
        if wait > 0:
            await self.clock.sleep(wait)
        message = Outgoing(row.id, row.kind, row.address, row.payload, row.platform_ref)
        try:
            ref = await self.transports[channel].send(message)
        except RateLimited as exc:
            now = self.clock.now()
            pacer.pause_until(now.timestamp() + exc.retry_after)
            at = now + timedelta(seconds=exc.retry_after)
            await asyncio.to_thread(
                outbox.reschedule, self.engine, row.id, at, str(exc), count_attempt=False
            )
            report.rate_limited += 1
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
            report.errors.append(reason)
        else:
            await asyncio.to_thread(outbox.mark_sent, self.engine, row.id, ref, self.clock.now())
            report.sent += 1

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
        report.errors.append(reason)
        log.warning("message %s %s: %s", row.id, status, reason)


def dispatch_summary(report: DispatchReport) -> dict[str, Any]:
    return {
        k: getattr(report, k)
        for k in ("claimed", "sent", "retried", "rate_limited", "deferred", "failed", "dead")
    }
