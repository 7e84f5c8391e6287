"""APScheduler wiring: the jobs, their triggers, and the catch-up after downtime.

Schedules come from config at start-up (memory job store); the durable state is in our own
tables (``scan_run``, ``outbox``), which is what makes a restart safe: a scan missed while
the service was down runs once at start-up (``catch_up``), and running it twice is harmless;
so does a missed digest (``aging_snapshot`` records that the day's digest ran).
"""

from __future__ import annotations

import logging
from datetime import datetime, time

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import select

from credit.settings import Settings
from credit.store.db import read_session
from credit.store.digest import digest_done
from credit.store.models import ScanRun
from jobs import tasks
from jobs.runtime import Runtime
from jobs.triggers import DailyTrigger

log = logging.getLogger("creditbot.scheduler")

JOB_IDS = (
    "receivables_scan",
    "daily_digest",
    "outbox_dispatch",
    "credit_hold_review",
    "approval_followup",
)
# shipment approvals waiting for a decision: expiry, first cards, reminders, escalation
APPROVAL_FOLLOWUP_EVERY_SECONDS = 300


def _daily(at: time, settings: Settings) -> DailyTrigger:
    return DailyTrigger(at, settings.zone)


def build_scheduler(settings: Settings) -> AsyncIOScheduler:
    """An AsyncIOScheduler with CreditBot's jobs (not started)."""
    sched = AsyncIOScheduler(
        timezone=settings.zone,
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": settings.schedule.misfire_grace_seconds,
        },
    )
    common = {
        "replace_existing": True,
        "coalesce": True,
        "max_instances": 1,
        "misfire_grace_time": settings.schedule.misfire_grace_seconds,
    }
    sched.add_job(
        tasks.credit_hold_review_job,
        _daily(settings.schedule.credit_hold_review_at, settings),
        id="credit_hold_review",
        name="credit-hold review",
        **common,
    )
    sched.add_job(
        tasks.scan_job,
        _daily(settings.schedule.scan_at, settings),
        id="receivables_scan",
        name="receivables scan",
        **common,
    )
    sched.add_job(
        tasks.digest_job,
        _daily(settings.schedule.digest_at, settings),
        id="daily_digest",
        name="daily digest",
        **common,
    )
    sched.add_job(
        tasks.dispatch_job,
        IntervalTrigger(seconds=settings.schedule.dispatch_every_seconds),
        id="outbox_dispatch",
        name="outbox dispatch",
        replace_existing=True,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=max(1, settings.schedule.dispatch_every_seconds),
    )
    sched.add_job(
        tasks.approval_followup_job,
        IntervalTrigger(seconds=APPROVAL_FOLLOWUP_EVERY_SECONDS),
        id="approval_followup",
        name="shipment approvals: expire, remind, escalate",
        replace_existing=True,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=APPROVAL_FOLLOWUP_EVERY_SECONDS,
    )
    return sched


def scan_missed(rt: Runtime, now: datetime | None = None) -> bool:
    """Is today's scan due (past its time, a working day) but not yet run?"""
    now = now or rt.clock.now()
    local = now.astimezone(rt.settings.zone)
    today = local.date()
    if local.time() < rt.settings.schedule.scan_at or not rt.calendar.is_business_day(today):
        return False
    with read_session(rt.engine) as s:
        done = s.execute(select(ScanRun.id).where(ScanRun.business_date == today)).first()
    return done is None


def digest_missed(rt: Runtime, now: datetime | None = None) -> bool:
    """Is today's digest due (past its time, a working day) but not yet run?"""
    now = now or rt.clock.now()
    local = now.astimezone(rt.settings.zone)
    today = local.date()
    if local.time() < rt.settings.schedule.digest_at or not rt.calendar.is_business_day(today):
        return False
    with read_session(rt.engine) as s:
        return not digest_done(s, today)


async def catch_up(rt: Runtime) -> bool:
    """Run today's scan, then today's digest, once each if the service was down when they
    were due. True when anything ran."""
    ran = False
    if scan_missed(rt):
        log.info("today's scan was missed while the service was down: running it now")
        await tasks.scan_job()
        ran = True
    if digest_missed(rt):
        log.info("today's digest was missed while the service was down: running it now")
        await tasks.digest_job()
        ran = True
    return ran
