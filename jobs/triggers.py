"""A once-a-day trigger that stays once a day across DST changes.

APScheduler's CronTrigger (3.11.3, checked) fires a job twice on the day clocks fall back
when its time is in the repeated hour, and then keeps returning that same instant — the
scheduler's catch-up loop spins on it. ``DailyTrigger`` fires exactly once per local date: an
ambiguous time uses its first occurrence, a time skipped by spring-forward fires at the
moment the clocks jump to.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo

from apscheduler.triggers.base import BaseTrigger


class DailyTrigger(BaseTrigger):
    def __init__(self, at: time, timezone: tzinfo) -> None:
        self.at = at.replace(tzinfo=None, fold=0)
        self.timezone = timezone

    def fire_time_on(self, day: date) -> datetime:
        """The single instant the job runs on local date ``day``."""
        wall = datetime.combine(day, self.at, self.timezone)
        return wall.astimezone(UTC).astimezone(self.timezone)  # normalises skipped times

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        day = now.astimezone(self.timezone).date()
        if previous_fire_time is not None:
            after_previous = previous_fire_time.astimezone(self.timezone).date() + timedelta(1)
            day = max(day, after_previous)
        while True:
            candidate = self.fire_time_on(day)
            if candidate >= now:
                return candidate
            day += timedelta(days=1)

    def __str__(self) -> str:
        return f"daily at {self.at:%H:%M} ({self.timezone})"

    def __repr__(self) -> str:
        return f"<DailyTrigger at={self.at.isoformat()!r} timezone={self.timezone!s}>"
