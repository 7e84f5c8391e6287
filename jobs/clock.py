"""Time for jobs: the real clock, and a fake one that tests move by hand."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that only moves when told to; ``sleep`` moves it instead of waiting."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._now = start
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float = 0, **delta: float) -> datetime:
        self._now += timedelta(seconds=seconds, **delta)
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = moment

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.slept.append(seconds)
            self._now += timedelta(seconds=seconds)
        await asyncio.sleep(0)


class OffsetClock(SystemClock):
    """Real time, shifted: starts at ``start`` and runs at the real pace. For drills and the
    fault tests, which run real processes "on" a chosen working day."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._offset = start - datetime.now(UTC)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset


CLOCK_START_ENV = "CREDITBOT_CLOCK_START"


def clock_from_env(environ: Mapping[str, str] | None = None) -> SystemClock:
    """The system clock, or an ``OffsetClock`` when ``CREDITBOT_CLOCK_START`` holds an
    ISO-8601 instant with a UTC offset (``2026-03-02T09:00:00+08:00``)."""
    value = (os.environ if environ is None else environ).get(CLOCK_START_ENV, "").strip()
    if not value:
        return SystemClock()
    try:
        start = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{CLOCK_START_ENV}={value!r} is not an ISO-8601 date and time") from None
    if start.tzinfo is None:
        raise ValueError(f"{CLOCK_START_ENV}={value!r} needs a UTC offset (+08:00, Z)")
    return OffsetClock(start)
