"""Approval cards: who is asked (credit.store.approval_notices), what the card says in English
and Chinese (bot.approval_cards through bot.compose), the real dispatcher sending one to the
fake Slack and one to the fake Telegram, and the scheduler's follow-up — reminders after
``remind_after_hours``, escalation after ``escalate_after_hours``, expiry — with the FakeClock
moved, never slept. SQLite and PostgreSQL (the ``engine`` fixture)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select, update

from bot.approval_cards import compose_card, press_answer
from bot.compose import compose
from bot.slack_render import render_blocks
from bot.telegram_render import render_text
from credit.settings import Settings
from credit.store.approval_notices import (
    card_copies,
    card_payload,
    decide_from_card,
    notify_approvers,
    remind_or_escalate,
)
from credit.store.approvals import decide, expire_requests
from credit.store.db import read_session, write_session
from credit.store.models import Approval, OutboxMessage, Person
from jobs import tasks
from jobs.runtime import Runtime, install
from jobs.scheduler import APPROVAL_FOLLOWUP_EVERY_SECONDS, JOB_IDS, build_scheduler
from tests.support.approvals import (
    MAX_CHAT,
    MIA,
    NOW,
    ORDER,
    RITA,
    World,
    build_ledger,
    buttons_of,
    make_world,
    raise_and_notify,
    texts,
)
from tests.support.transport import ScriptedTransport


@pytest.fixture
def world(engine: Engine) -> Iterator[World]:
    yield from make_world(engine)


def person_id(engine: Engine, code: str) -> int:
    with read_session(engine) as s:
        return s.execute(select(Person.id).where(Person.code == code)).scalar_one()


def card_recipients(engine: Engine, kind: str = "approval_card") -> list[str]:
    with read_session(engine) as s:
        return list(
            s.execute(
                select(Person.code)
                .join(OutboxMessage, OutboxMessage.recipient_id == Person.id)
                .where(OutboxMessage.kind == kind)
                .order_by(Person.code)
            ).scalars()
        )


# --- who is asked ---------------------------------------------------------------------------------


def test_cards_go_to_the_regions_active_managers_only(engine: Engine) -> None:
    build_ledger(engine)
    settings = Settings()
    request_id = raise_and_notify(engine, settings, NOW)

    # Mia and Max manage North; not Olaf (inactive), Sam (South), Rita (the requester and
    # rep), nor the credit desk or the executive (higher levels: only on escalation)
    assert card_recipients(engine) == ["max", "mia"]
    with read_session(engine) as s:
        rows = s.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars().all()
        keys = {r.idempotency_key for r in rows if r.kind == "approval_card"}
        assert keys == {
            f"approval_card:{request_id}:0:{person_id(engine, code)}" for code in ("mia", "max")
        }
        assert all(r.channel == "console" for r in rows)  # the default channels
    with write_session(engine) as s:  # asking again queues nothing twice
        assert notify_approvers(s, settings, request_id, NOW) == 0
    assert card_recipients(engine) == ["max", "mia"]


def test_a_manager_who_raised_the_request_is_not_asked(engine: Engine) -> None:
    build_ledger(engine)
    raise_and_notify(engine, Settings(), NOW, by="mia")
    assert card_recipients(engine) == ["max"]


def test_nobody_eligible_at_a_level_passes_the_card_up(engine: Engine) -> None:
    build_ledger(engine)
    with write_session(engine) as s:  # North has no active manager any more
        s.execute(update(Person).where(Person.code.in_(["mia", "max"])).values(active=False))
    raise_and_notify(engine, Settings(), NOW)
    assert card_recipients(engine) == ["carl"]  # the credit desk, the next level up
    with read_session(engine) as s:
        [row] = s.execute(select(OutboxMessage)).scalars().all()
        assert row.payload["escalated"] is True
        assert row.payload["role"] == "regional_manager"  # the level it decides


def test_a_larger_excess_goes_to_the_credit_desk(engine: Engine) -> None:
    build_ledger(engine)
    raise_and_notify(engine, Settings(), NOW, amount="150000.00")  # CN¥130,000 over the limit
    assert card_recipients(engine) == ["carl"]


# --- what the card says ---------------------------------------------------------------------------


def test_the_card_shows_position_aging_and_recent_decisions_in_english_and_chinese(
    engine: Engine,
) -> None:
    build_ledger(engine)
    settings = Settings()
    earlier = raise_and_notify(engine, settings, NOW - timedelta(days=3), order="SO-0999")
    with write_session(engine) as s:
        decide(
            s,
            settings,
            request_id=earlier,
            approver_person_id=person_id(engine, "mia"),
            decision="reject",
            reason="payment plan first",
            channel="slack",
            now=NOW - timedelta(days=2),
        )
    request_id = raise_and_notify(engine, settings, NOW)
    with read_session(engine) as s:
        payloads = {
            r.payload["recipient"]["code"]: r.payload
            for r in s.execute(
                select(OutboxMessage).where(
                    OutboxMessage.kind == "approval_card",
                    OutboxMessage.idempotency_key.like(f"approval_card:{request_id}:%"),
                )
            ).scalars()
        }
    mia, max_ = payloads["mia"], payloads["max"]
    assert (mia["customer"]["rating"], mia["credit_limit"], mia["excess"]) == (
        "C",
        "100000.00",
        "10000.00",
    )

    english = compose(mia)
    blocks, fallback = render_blocks(english)
    shown = texts(blocks)
    for fact in (
        "Acme Pumps &amp; Co (C001)",  # escaped for Slack
        "*Rating:* C",
        "*Credit limit:* CN¥100,000.00",
        "*Exposure with this shipment:* CN¥110,000.00",
        "*Over the limit by:* CN¥10,000.00",
        "*Overdue:* CN¥20,000.00",
        "over the credit limit; has overdue invoices",
        "• current: CN¥60,000.00",
        "• 31-60: CN¥20,000.00",
        "Rejected by Mia Manager: payment plan first".lower(),
    ):
        assert fact.lower() in shown.lower(), fact
    assert "SO-0999" in shown and "Nov 23, 2026" in shown  # the earlier decision, its date
    assert buttons_of(blocks) == ["approve", "reject"]
    [approve, reject] = english.buttons
    assert approve.value == reject.value == f"{request_id}|0"
    assert fallback == "Order SO-1001: CN¥30,000.00 for Acme Pumps &amp; Co (C001)"

    chinese = render_text(compose(max_))
    for fact in (
        "发货待审批 — Acme Pumps &amp; Co (C001)",
        "信用等级:</b> C",
        "信用额度:</b> ¥100,000.00",
        "超出额度:</b> ¥10,000.00",
        "逾期金额:</b> ¥20,000.00",
        "超出信用额度；有逾期发票",
        "未到期：¥60,000.00",
        "Mia Manager 已拒绝：payment plan first",
    ):
        assert fact in chinese, fact
    assert [b.label for b in compose(max_).buttons] == ["批准", "拒绝"]

    # decided: the outcome in place of the buttons, each in its reader's language
    outcome = {"status": "rejected", "by": "Mia Manager", "reason": "too risky"}
    decided = compose_card(mia, outcome)
    assert decided.buttons == [] and decided.sections[0].heading == (
        "✗ Rejected by Mia Manager: too risky"
    )
    assert compose_card(max_, outcome).sections[0].heading == "✗ Mia Manager 已拒绝：too risky"
    expired = compose_card(mia, {"status": "expired", "at_local": "2026-11-28T10:00"})
    assert expired.sections[0].heading.startswith("⌛ Expired Nov 28, 2026 10:00")
    changed = compose_card(
        max_, {"status": "limit_changed", "was": "100000.00", "now": "80000.00", "currency": "CNY"}
    )
    assert "¥100,000.00" in changed.sections[0].heading
    assert "¥80,000.00" in changed.sections[0].heading


def test_the_requester_is_told_in_their_language(engine: Engine) -> None:
    build_ledger(engine)
    settings = Settings()
    request_id = raise_and_notify(engine, settings, NOW)
    with write_session(engine) as s:
        s.execute(update(Person).where(Person.code == "rita").values(locale="zh_CN"))
        decide(
            s,
            settings,
            request_id=request_id,
            approver_person_id=person_id(engine, "max"),
            decision="approve",
            channel="telegram",
            now=NOW,
        )
    with read_session(engine) as s:
        row = s.execute(
            select(OutboxMessage).where(OutboxMessage.kind == "approval_decided")
        ).scalar_one()
    message = compose(row.payload)
    assert message.title == f"发货已批准：订单 {ORDER}"
    assert "Max Wang 已批准" in message.summary


# --- dispatch to both platforms ---------------------------------------------------------------


def test_the_dispatcher_sends_a_slack_card_and_a_telegram_card(world: World) -> None:
    request_id = world.raise_request()

    world.dispatch()

    slack_card = world.slack_card(MIA)
    assert buttons_of(slack_card.blocks) == ["approve", "reject"]
    assert "*Over the limit by:* CN¥10,000.00" in texts(slack_card.blocks)
    [tg_card] = world.tg.messages(MAX_CHAT)
    assert tg_card.plain.startswith("发货待审批 — Acme Pumps & Co (C001)")
    labels = [b["text"] for row in tg_card.reply_markup["inline_keyboard"] for b in row]
    assert labels == ["批准", "拒绝"]
    with read_session(world.engine) as s:
        copies = card_copies(s, request_id)
        tokens = [
            world.tg_button(tg_card, label) for label in labels
        ]  # opaque tokens, not the value
    assert all("|" not in token for token in tokens)
    refs = {c.channel: c.platform_ref for c in copies}
    assert refs["slack"] == {"channel": slack_card.channel, "ts": slack_card.ts}
    assert (refs["telegram"]["chat_id"], refs["telegram"]["message_id"]) == (
        MAX_CHAT,
        tg_card.message_id,
    )


# --- reminders, escalation, expiry -----------------------------------------------------------


def _dispatch_scripted(world: World) -> dict[str, ScriptedTransport]:
    transports = {
        "slack": ScriptedTransport(world.clock, "slack"),
        "telegram": ScriptedTransport(world.clock, "telegram"),
    }
    from jobs.dispatch import Dispatcher

    dispatcher = Dispatcher(
        world.engine, world.settings, transports, world.clock, respect_send_windows=False
    )
    asyncio.run(dispatcher.drain())
    return transports


def _follow_up(world: World) -> object:
    with write_session(world.engine) as s:
        return remind_or_escalate(s, world.settings, world.clock.now())


def test_reminded_after_n_hours_escalated_after_m_hours(world: World) -> None:
    cfg = world.settings.approvals
    assert (cfg.remind_after_hours, cfg.escalate_after_hours, cfg.expire_after_hours) == (
        4.0,
        24.0,
        72.0,
    )
    request_id = world.raise_request()
    _dispatch_scripted(world)  # the cards are sent at 10:00

    world.clock.advance(hours=3, minutes=59)
    assert _follow_up(world).reminders == 0  # type: ignore[attr-defined]
    world.clock.advance(minutes=1)  # 4 hours after the cards went out
    report = _follow_up(world)
    assert report.reminders == 2 and report.escalated == {}  # type: ignore[attr-defined]
    assert card_recipients(world.engine, "approval_reminder") == ["max", "mia"]
    assert _follow_up(world).reminders == 0  # type: ignore[attr-defined]  # once a day
    sent = _dispatch_scripted(world)
    [reminder] = [c for c in sent["slack"].calls if c.kind == "approval_reminder"]
    assert reminder.message.title.startswith("Reminder: a shipment waits for your approval")
    assert [b.action_id for b in reminder.message.buttons] == ["approve", "reject"]

    world.clock.advance(hours=19, minutes=59)  # 23:59 after raising: not escalated yet …
    report = _follow_up(world)
    assert report.escalated == {}  # type: ignore[attr-defined]
    assert report.reminders == 2  # type: ignore[attr-defined]  # … but a new day: reminded
    world.clock.advance(minutes=1)  # 24 hours: the credit desk is asked too
    report = _follow_up(world)
    assert report.escalated == {request_id: ["credit_manager"]}  # type: ignore[attr-defined]
    assert card_recipients(world.engine) == ["carl", "max", "mia"]
    assert report.reminders == 0  # type: ignore[attr-defined]
    [escalation] = world.audit_rows("shipment.escalate")
    assert escalation.channel == "scheduler"
    assert escalation.after["to_roles"] == ["credit_manager"]
    assert escalation.after["recipients"] == ["carl"]
    assert _follow_up(world).escalated == {}  # type: ignore[attr-defined]  # once
    sent = _dispatch_scripted(world)
    [carl_card] = [c for c in sent["slack"].calls if c.recipient == "carl"]
    assert carl_card.message.title.startswith("Escalated to you: shipment approval")

    world.clock.advance(hours=24)  # 48 hours: the executive too
    report = _follow_up(world)
    assert report.escalated == {request_id: ["credit_manager", "executive"]}  # type: ignore[attr-defined]
    assert card_recipients(world.engine) == ["carl", "eve", "max", "mia"]

    # an escalated approver may decide the lower level's request
    with write_session(world.engine) as s:
        decision = decide_from_card(
            s,
            world.settings,
            request_id=request_id,
            card_level=0,
            approver_person_id=person_id(world.engine, "carl"),
            decision="approve",
            channel="slack",
            now=world.clock.now(),
        )
    assert decision.result.won and decision.result.status == "approved"
    with read_session(world.engine) as s:
        row = s.execute(select(Approval).where(Approval.request_id == request_id)).scalar_one()
        assert (row.level, row.role, row.approver_id) == (
            0,
            "regional_manager",
            person_id(world.engine, "carl"),
        )
    world.clock.advance(hours=24)
    report = _follow_up(world)  # decided: nothing more
    assert (report.reminders, report.escalated) == (0, {})  # type: ignore[attr-defined]


def test_the_follow_up_job_expires_requests_and_updates_every_card(world: World) -> None:
    request_id = world.raise_request()
    world.dispatch()
    rt = Runtime(world.engine, world.settings, world.clock, world.transports())
    install(rt)
    try:
        world.clock.advance(hours=72, seconds=1)
        result = asyncio.run(tasks.approval_followup_job())
    finally:
        install(None)

    assert result["expired"] == [request_id] and result["cards_updated"] == 2
    assert world.request(request_id).status == "expired"
    mia = world.slack_card(MIA)
    assert buttons_of(mia.blocks) == []
    assert "⌛ Expired Nov 28, 2026 10:00" in texts(mia.blocks)
    [max_card] = world.tg.messages(MAX_CHAT)
    assert max_card.reply_markup is None and "⌛ 已于 2026年11月28日 10:00" in max_card.plain
    assert [a for _, a, _ in world.audit()] == [
        "shipment.raise",
        "shipment.notify",
        "shipment.expire",
        "shipment.cards_updated",
    ]
    # the requester hears of it
    world.dispatch()
    [told] = world.slack_cards(RITA)
    assert "Shipment request expired: order SO-1001" in texts(told.blocks)


def test_the_scheduler_runs_the_follow_up_every_few_minutes() -> None:
    sched = build_scheduler(Settings())
    job = sched.get_job("approval_followup")
    assert "approval_followup" in JOB_IDS
    assert job.func is tasks.approval_followup_job
    assert job.trigger.interval == timedelta(seconds=APPROVAL_FOLLOWUP_EVERY_SECONDS)
    assert job.coalesce is True and job.max_instances == 1


def test_the_follow_up_sends_first_cards_for_requests_nobody_was_asked_about(
    engine: Engine,
) -> None:
    """The ERP API raises requests; the job asks the approvers when nothing else did."""
    build_ledger(engine)
    settings = Settings()
    from credit.store.approvals import raise_request

    with write_session(engine) as s:
        raise_request(
            s,
            settings,
            customer_code="C001",
            order_ref=ORDER,
            amount="30000.00",
            currency="CNY",
            now=NOW,
        )
    with write_session(engine) as s:
        report = remind_or_escalate(s, settings, NOW)
    assert report.cards == 2
    assert card_recipients(engine) == ["max", "mia"]


def test_an_approver_above_authority_or_from_another_region_is_refused(engine: Engine) -> None:
    build_ledger(engine)
    settings = Settings()
    big = raise_and_notify(engine, settings, NOW, amount="150000.00", order="SO-BIG")
    small = raise_and_notify(engine, settings, NOW)
    with write_session(engine) as s:
        above = decide_from_card(
            s,
            settings,
            request_id=big,
            card_level=1,
            approver_person_id=person_id(engine, "mia"),
            decision="approve",
            channel="slack",
            now=NOW,
        )
        elsewhere = decide_from_card(
            s,
            settings,
            request_id=small,
            card_level=0,
            approver_person_id=person_id(engine, "sam"),
            decision="approve",
            channel="slack",
            now=NOW,
        )
    assert (above.result.won, above.result.refusal, above.outcome) == (
        False,
        "above_authority",
        None,
    )
    assert elsewhere.result.refusal == "other_region"
    from bot.i18n import Translator

    assert press_answer(Translator("en"), above.result) == (
        "Not done: this request is above your approval authority"
    )
    assert press_answer(Translator("zh_CN"), elsewhere.result) == "未执行：该客户不在您的区域"
    refused = [(a, c) for a, act, c in _audit(engine) if act == "shipment.decide.refused"]
    assert refused == [("mia", "slack"), ("sam", "slack")]


def _audit(engine: Engine) -> list[tuple[str, str, str]]:
    from credit.store.models import AuditLog

    with read_session(engine) as s:
        rows = s.execute(select(AuditLog).order_by(AuditLog.id)).scalars()
        return [(r.actor, r.action, r.channel) for r in rows]


def test_a_chain_level_signed_updates_its_cards_and_asks_the_next(engine: Engine) -> None:
    build_ledger(engine)
    settings = Settings(approvals={"chain": True})
    request_id = raise_and_notify(engine, settings, NOW, amount="150000.00")  # two levels
    assert card_recipients(engine) == ["max", "mia"]
    with write_session(engine) as s:
        first = decide_from_card(
            s,
            settings,
            request_id=request_id,
            card_level=0,
            approver_person_id=person_id(engine, "mia"),
            decision="approve",
            channel="slack",
            now=NOW,
        )
    assert first.result.won and not first.result.final
    assert first.level == 0 and first.outcome["status"] == "level_approved"
    heading = compose_card(_payload(engine, request_id), first.outcome).sections[0].heading
    assert heading == (
        "✓ Approved by Mia Manager (regional manager); now waiting for the credit manager"
    )
    assert card_recipients(engine) == ["carl", "max", "mia"]  # the credit desk is asked now
    with write_session(engine) as s:  # Max presses his stale level-0 card
        stale = decide_from_card(
            s,
            settings,
            request_id=request_id,
            card_level=0,
            approver_person_id=person_id(engine, "max"),
            decision="approve",
            channel="telegram",
            now=NOW,
        )
    assert (stale.result.won, stale.result.decided_by_name) == (False, "Mia Manager")
    with write_session(engine) as s:
        final = decide_from_card(
            s,
            settings,
            request_id=request_id,
            card_level=1,
            approver_person_id=person_id(engine, "carl"),
            decision="approve",
            channel="slack",
            now=NOW,
        )
    assert final.result.final and final.outcome["status"] == "approved"


def _payload(engine: Engine, request_id: int) -> dict:
    with read_session(engine) as s:
        base = card_payload(s, Settings(), request_id, NOW)
    return {
        **base,
        "kind": "approval_card",
        "recipient": {"code": "mia", "name": "Mia Manager", "locale": "en"},
    }


def test_expire_requests_leaves_decided_ones_alone(engine: Engine) -> None:
    build_ledger(engine)
    settings = Settings()
    request_id = raise_and_notify(engine, settings, NOW)
    with write_session(engine) as s:
        assert expire_requests(s, NOW + timedelta(hours=71), settings) == []
        assert expire_requests(s, NOW + timedelta(hours=73), settings) == [request_id]
    with read_session(engine) as s:
        payload = s.execute(
            select(OutboxMessage.payload).where(OutboxMessage.kind == "approval_decided")
        ).scalar_one()
    assert payload["decision"] == "expired"
    assert json.dumps(payload)  # plain JSON
    assert Decimal(payload["amount"]) == Decimal("30000.00")
