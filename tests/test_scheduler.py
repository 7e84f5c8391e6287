"""The scheduler's wiring: job ids and options, DST days, catch-up after downtime."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from credit.settings import Settings
from credit.store.db import read_session
from credit.store.models import ScanRun
from jobs.clock import FakeClock
from jobs.runtime import Runtime, install
from jobs.scheduler import JOB_IDS, build_scheduler, catch_up, scan_missed


def _settings(**calendar) -> Settings:
    return Settings(calendar={"timezone": "Asia/Shanghai", **calendar})


def test_jobs_have_explicit_ids_coalesce_and_a_real_misfire_grace():
    settings = _settings()
    sched = build_scheduler(settings)
    jobs = {job.id: job for job in sched.get_jobs()}
    assert set(jobs) == set(JOB_IDS)
    for job in jobs.values():
        assert job.coalesce is True
        assert job.max_instances == 1
        assert job.misfire_grace_time and job.misfire_grace_time >= 1
    assert jobs["receivables_scan"].misfire_grace_time == settings.schedule.misfire_grace_seconds
    assert str(jobs["receivables_scan"].trigger.timezone) == "Asia/Shanghai"
    # module-level functions: a job store could serialise them by reference
    for job in jobs.values():
        assert job.func.__module__ == "jobs.tasks"


def _fires(trigger, start: datetime, end: datetime) -> list[datetime]:
    fires, previous, now = [], None, start
    for _ in range(50):  # bounded: a trigger that repeats an instant must not hang the test
        nxt = trigger.get_next_fire_time(previous, now)
        if nxt is None or nxt >= end:
            return fires
        fires.append(nxt)
        previous, now = nxt, nxt + timedelta(microseconds=1)
    raise AssertionError(f"trigger keeps firing: {fires[-3:]}")


@pytest.mark.parametrize("at", [time(8, 30), time(2, 30)])
@pytest.mark.parametrize(
    ("day_before", "dst_day"),
    [(date(2026, 3, 28), date(2026, 3, 29)), (date(2026, 10, 24), date(2026, 10, 25))],
)
def test_daily_jobs_run_exactly_once_on_dst_change_days(at, day_before, dst_day):
    """Europe/Berlin springs forward on 29 March and falls back on 25 October 2026; 02:30 does
    not exist on the first and happens twice on the second. Each day still runs once."""
    settings = Settings(
        calendar={"timezone": "Europe/Berlin", "holiday_country": "DE"},
        schedule={"scan_at": at},
    )
    sched = build_scheduler(settings)
    trigger = sched.get_job("receivables_scan").trigger
    berlin = ZoneInfo("Europe/Berlin")
    start = datetime.combine(day_before, time(0, 0), berlin)
    end = start + timedelta(days=4)
    fires = _fires(trigger, start, end)
    days = [f.astimezone(berlin).date() for f in fires]
    assert days == [day_before + timedelta(days=i) for i in range(4)]
    assert len(set(days)) == len(days)
    # and never in the wrong place: each fire is the configured wall-clock time, or (02:30 on
    # the spring-forward day, which does not exist) the moment the clocks jump
    for fire in fires:
        local = fire.astimezone(berlin)
        assert local.time() == at or (local.date() == dst_day and local.time() == time(3, 30))


def test_a_missed_scan_runs_once_at_start_up(engine):
    # Wednesday 2026-11-25, 10:00 in Shanghai: past the 08:30 scan, nothing ran yet
    clock = FakeClock(datetime(2026, 11, 25, 2, 0, tzinfo=UTC))
    rt = Runtime(engine, _settings(), clock, {})
    install(rt)
    try:
        assert scan_missed(rt)
        assert asyncio.run(catch_up(rt)) is True
        with read_session(engine) as s:
            runs = s.exec(select(ScanRun)).all()
        assert [r.business_date for r in runs] == [date(2026, 11, 25)]
        # a second start the same day does not scan again
        assert scan_missed(rt) is False
        assert asyncio.run(catch_up(rt)) is False
    finally:
        install(None)


@pytest.mark.parametrize(
    ("moment", "why"),
    [
        (datetime(2026, 11, 25, 0, 0, tzinfo=UTC), "08:00 local: before the scan time"),
        (datetime(2026, 11, 28, 2, 0, tzinfo=UTC), "a Saturday"),
        (datetime(2026, 10, 1, 2, 0, tzinfo=UTC), "National Day"),
    ],
)
def test_no_catch_up_before_scan_time_or_on_days_off(engine, moment, why):
    rt = Runtime(engine, _settings(), FakeClock(moment), {})
    assert scan_missed(rt) is False, why
