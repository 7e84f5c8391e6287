"""The scheduled jobs through the runtime, as ``creditbot run`` wires them."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, date, datetime

from sqlmodel import select

from bot.transports.console import ConsoleTransport
from credit.settings import Settings
from credit.store.db import read_session, write_session
from credit.store.demo import build_demo_ledger
from credit.store.models import OutboxMessage, ScanRun
from jobs import tasks
from jobs.clock import FakeClock
from jobs.runtime import Runtime, current, install
from jobs.scheduler import JOB_IDS, build_scheduler

WEDNESDAY_10_SHANGHAI = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)


def _runtime(engine, out: io.StringIO) -> Runtime:
    settings = Settings()
    with write_session(engine) as s:
        build_demo_ledger(
            s, as_of=date(2026, 11, 25), seed=3, settings=settings, customers=40, invoices=400
        )
    return Runtime(
        engine, settings, FakeClock(WEDNESDAY_10_SHANGHAI), {"console": ConsoleTransport(out)}
    )


def test_scan_then_dispatch_jobs_deliver_todays_reminders_once(engine):
    out = io.StringIO()
    rt = _runtime(engine, out)
    install(rt)
    try:
        assert current() is rt
        result = asyncio.run(tasks.scan_job())
        assert result["date"] == "2026-11-25" and result["queued"] > 0
        assert asyncio.run(tasks.scan_job())["queued"] == 0  # same day: nothing new
        sent = 0
        for _ in range(20):
            report = asyncio.run(tasks.dispatch_job())
            sent += report["sent"]
            if report["claimed"] == 0:
                break
        with read_session(engine) as s:
            rows = s.exec(select(OutboxMessage)).all()
            runs = s.exec(select(ScanRun)).all()
        assert sent == len(rows) == result["queued"]
        assert {r.status for r in rows} == {"sent"}
        assert out.getvalue().count(">>> to ") == sent
        assert [r.business_date for r in runs] == [date(2026, 11, 25)]
    finally:
        install(None)


def test_jobs_skip_days_off(engine):
    out = io.StringIO()
    rt = _runtime(engine, out)
    rt.clock.set(datetime(2026, 11, 28, 2, 0, tzinfo=UTC))  # a Saturday
    install(rt)
    try:
        assert asyncio.run(tasks.scan_job())["skipped"]
        assert asyncio.run(tasks.credit_hold_review_job()) == []
        assert asyncio.run(tasks.digest_job()) == 0
    finally:
        install(None)


def test_the_digest_hook_runs_registered_builders_on_working_days(engine):
    rt = _runtime(engine, io.StringIO())
    seen: list[date] = []

    async def builder(runtime: Runtime, day: date) -> None:
        seen.append(day)

    rt.digest_hooks.append(builder)
    install(rt)
    try:
        assert asyncio.run(tasks.digest_job()) == 1
        assert seen == [date(2026, 11, 25)]
    finally:
        install(None)


def test_scheduler_starts_with_every_job_scheduled():
    async def start_and_stop() -> dict[str, datetime | None]:
        sched = build_scheduler(Settings())
        sched.start(paused=True)
        try:
            return {job.id: job.next_run_time for job in sched.get_jobs()}
        finally:
            sched.shutdown(wait=False)

    next_runs = asyncio.run(start_and_stop())
    assert set(next_runs) == set(JOB_IDS)
    assert all(when is not None for when in next_runs.values())
    scan = next_runs["receivables_scan"].astimezone(Settings().zone)
    assert (scan.hour, scan.minute) == (8, 30)
