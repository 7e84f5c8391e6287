"""The scheduled jobs. Module-level functions with primitive arguments, as APScheduler's
job stores require; they take everything else from ``jobs.runtime.current()``."""

from __future__ import annotations

import asyncio
import logging
from datetime import date

from bot.metrics import SCAN_DURATION
from credit.store.approval_notices import (
    FollowUp,
    expired_outcome,
    record_outcome,
    remind_or_escalate,
)
from credit.store.approvals import expire_requests
from credit.store.db import write_session
from credit.store.digest import run_digest
from credit.store.escalation import review_credit_holds, run_scan
from credit.store.models import ShipmentRequest
from jobs.runtime import current

log = logging.getLogger("creditbot.jobs")


async def scan_job(as_of: str | None = None) -> dict[str, object]:
    """Scan the receivables for today's business date (or ``as_of``) and queue reminders."""
    rt = current()
    day = date.fromisoformat(as_of) if as_of else rt.business_date()
    with SCAN_DURATION.time():
        result = await asyncio.to_thread(
            run_scan, rt.engine, rt.settings, rt.calendar, day, rt.clock.now()
        )
    log.info("scan %s: %s", day, result)
    return {"date": day.isoformat(), "skipped": result.skipped, "queued": result.queued}


async def credit_hold_review_job(as_of: str | None = None) -> list[str]:
    rt = current()
    day = date.fromisoformat(as_of) if as_of else rt.business_date()
    if not rt.calendar.is_business_day(day):
        return []
    lifted = await asyncio.to_thread(
        review_credit_holds, rt.engine, rt.settings, rt.calendar, day, rt.clock.now()
    )
    log.info("credit-hold review %s: lifted %s", day, lifted)
    return lifted


async def dispatch_job() -> dict[str, int]:
    rt = current()
    report = await rt.dispatcher.dispatch_once()
    return {"claimed": report.claimed, "sent": report.sent}


async def digest_job(as_of: str | None = None) -> int:
    """The daily digest on business days: writes the day's aging snapshot and queues one
    digest per person (``credit.store.digest.run_digest``), then runs every registered
    digest hook. Returns how many hooks ran."""
    rt = current()
    day = date.fromisoformat(as_of) if as_of else rt.business_date()
    if not rt.calendar.is_business_day(day):
        return 0
    result = await asyncio.to_thread(
        run_digest, rt.engine, rt.settings, rt.calendar, day, rt.clock.now()
    )
    log.info("digest %s: %s", day, result)
    for hook in rt.digest_hooks:
        result = hook(rt, day)
        if asyncio.iscoroutine(result):
            await result
    return len(rt.digest_hooks)


async def approval_followup_job() -> dict[str, object]:
    """Shipment requests waiting for a decision: lapse the expired ones (the ERP and the
    requester told; every copy of their cards edited to say so), make sure each pending one
    has its cards, remind and escalate (``credit.store.approval_notices``)."""
    from bot.approval_cards import update_card_copies

    rt = current()
    now = rt.clock.now()

    def work() -> tuple[dict[int, dict[str, object]], FollowUp]:
        with write_session(rt.engine) as session:
            outcomes: dict[int, dict[str, object]] = {}
            for request_id in expire_requests(session, now, rt.settings):
                request = session.get(ShipmentRequest, request_id)
                assert request is not None
                outcomes[request_id] = expired_outcome(request, rt.settings)
                record_outcome(session, request_id, outcomes[request_id])
            return outcomes, remind_or_escalate(session, rt.settings, now)

    expired, followup = await asyncio.to_thread(work)
    updated = 0
    for request_id, outcome in expired.items():
        updated += await update_card_copies(
            rt.engine, rt.transports, request_id, outcome, channel="scheduler", now=now
        )
    log.info("approval follow-up: expired %s, %s", sorted(expired), followup)
    return {
        "expired": sorted(expired),
        "cards": followup.cards,
        "reminders": followup.reminders,
        "escalated": followup.escalated,
        "cards_updated": updated,
    }
