"""The business calendar: working days and send windows. Pure; the clock is passed in.

A working day is a weekday that is not a public holiday of the configured country, or a
weekend day the country declares a working day (China's 调休 make-up days, which the
``holidays`` package knows). A message is delivered only inside the recipient's send window
(default 08:00–19:00) in their own time zone, on one of their working days.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays


@lru_cache(maxsize=64)
def _country(country: str, year: int) -> holidays.HolidayBase:
    return holidays.country_holidays(country, years=year)


@dataclass(frozen=True)
class BusinessCalendar:
    country: str = "CN"
    extra_holidays: frozenset[date] = field(default_factory=frozenset)

    def holiday_name(self, day: date) -> str | None:
        if day in self.extra_holidays:
            return "company holiday"
        return _country(self.country, day.year).get(day)

    def is_business_day(self, day: date) -> bool:
        if self.holiday_name(day) is not None:
            return False
        if day.weekday() < 5:
            return True
        workdays = getattr(_country(self.country, day.year), "weekend_workdays", ())
        return day in workdays

    def next_business_day(self, day: date, *, inclusive: bool = True) -> date:
        """``day`` itself when it is a working day (and ``inclusive``), else the next one."""
        current = day if inclusive else day + timedelta(days=1)
        for _ in range(366):
            if self.is_business_day(current):
                return current
            current += timedelta(days=1)
        raise ValueError(f"no working day within a year after {day}")

    def previous_business_day(self, day: date) -> date:
        current = day - timedelta(days=1)
        for _ in range(366):
            if self.is_business_day(current):
                return current
            current -= timedelta(days=1)
        raise ValueError(f"no working day within a year before {day}")


@dataclass(frozen=True)
class SendWindow:
    start: time = time(8, 0)
    end: time = time(19, 0)

    def next_open(self, now: datetime, zone: str, calendar: BusinessCalendar) -> datetime:
        """The earliest instant >= ``now`` (aware) inside the window on a working day of the
        recipient's time zone, returned in UTC."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        tz = ZoneInfo(zone)
        local = now.astimezone(tz)
        day = local.date()
        for _ in range(400):
            if calendar.is_business_day(day):
                opens = datetime.combine(day, self.start, tz)
                closes = datetime.combine(day, self.end, tz)
                if local < opens:
                    return opens.astimezone(UTC)
                if local < closes:
                    return local.astimezone(UTC)
            day += timedelta(days=1)
            local = datetime.combine(day, time(0, 0), tz)
        raise ValueError("no send window found within a year")

    def is_open(self, now: datetime, zone: str, calendar: BusinessCalendar) -> bool:
        return self.next_open(now, zone, calendar) == now.astimezone(UTC)
