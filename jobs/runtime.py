"""The running application's parts, shared by the scheduled jobs.

APScheduler jobs are module-level functions with primitive arguments (see ``jobs.tasks``);
they find the engine, settings, clock and transports here, set once by ``creditbot run``
(or by a test).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import Engine

from bot.transports.base import Transport
from credit.calendar import BusinessCalendar
from credit.settings import Settings
from jobs.dispatch import Clock, Dispatcher


@dataclass
class Runtime:
    engine: Engine
    settings: Settings
    clock: Clock
    transports: Mapping[str, Transport]
    calendar: BusinessCalendar = field(init=False)
    dispatcher: Dispatcher = field(init=False)
    # extra work after the daily digest (credit.store.digest.run_digest, which the digest
    # job always runs) registers here; the job calls each, in order
    digest_hooks: list[Callable[[Runtime, date], Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.calendar = BusinessCalendar(self.settings.calendar.holiday_country)
        self.dispatcher = Dispatcher(
            self.engine, self.settings, self.transports, self.clock, calendar=self.calendar
        )

    def business_date(self) -> date:
        """Today in the company's time zone."""
        return self.clock.now().astimezone(self.settings.zone).date()


_current: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("no CreditBot runtime installed (start it with `creditbot run`)")
    return _current
