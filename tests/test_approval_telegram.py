"""Deciding a shipment request from its Telegram card, end to end: the cards are dispatched by
the real dispatcher (Mia's to the fake Slack, Max's to the fake Telegram, in Chinese, its
buttons opaque tokens); the real PTB application (bot.telegram_app) processes the fake's
updates, decides in the database (SQLite and PostgreSQL), answers the callback, and edits
every copy — ``editMessageText`` on Telegram, ``chat.update`` on Slack. Reject asks for the
reason in the chat (the question kept in the database) before deciding."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select, update

from credit.store.db import read_session, write_session
from credit.store.models import Approval, Customer, Person, TelegramConversation
from tests.support.approvals import (
    MAX_CHAT,
    MIA,
    RITA,
    World,
    buttons_of,
    make_world,
    snapshot,
    texts,
)

APPROVE, REJECT = "批准", "拒绝"


@pytest.fixture(autouse=True)
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
def world(engine: Engine) -> Iterator[World]:
    for w in make_world(engine):
        w.request_id = w.raise_request()  # type: ignore[attr-defined]
        w.dispatch()
        yield w


def decisions(w: World) -> list[tuple[str | None, str | None, str | None, str | None]]:
    with read_session(w.engine) as s:
        rows = s.execute(
            select(Approval.decision, Approval.reason, Approval.channel, Person.code)
            .join(Person, Person.id == Approval.approver_id, isouter=True)
            .order_by(Approval.level)
        ).all()
        return [tuple(r) for r in rows]


def test_approve_on_telegram_decides_and_updates_both_cards(world: World) -> None:
    request_id = world.request_id  # type: ignore[attr-defined]
    card = snapshot(world.telegram_card(MAX_CHAT))
    mia = world.slack_card(MIA)

    async def body(w: World) -> None:
        w.clock.advance(seconds=1)
        await w.process(w.press_update(card, APPROVE))

    world.run(body)

    assert world.request(request_id).status == "approved"
    assert decisions(world) == [("approve", None, "telegram", "max")]
    assert world.answers() == [("已批准", False)]
    edited = world.tg.message(MAX_CHAT, card.message_id)
    assert edited.reply_markup is None
    assert "✓ Max Wang 已批准" in edited.plain
    [update_call] = world.slack.calls("chat.update")
    assert (update_call.params["channel"], update_call.params["ts"]) == (mia.channel, mia.ts)
    assert "✓ Approved by Max Wang" in texts(world.slack_card(MIA).blocks)
    assert buttons_of(world.slack_card(MIA).blocks) == []
    assert world.audit()[-2:] == [
        ("max", "shipment.approve", "telegram"),
        ("creditbot", "shipment.cards_updated", "telegram"),
    ]
    world.dispatch()
    [told] = world.slack_cards(RITA)
    assert "approved by Max Wang" in texts(told.blocks)


def test_reject_asks_the_reason_then_decides_and_updates_both_cards(world: World) -> None:
    request_id = world.request_id  # type: ignore[attr-defined]
    card = snapshot(world.telegram_card(MAX_CHAT))

    async def press(w: World) -> None:
        w.clock.advance(seconds=1)
        await w.process(w.press_update(card, REJECT))

    world.run(press)

    assert world.request(request_id).status == "pending"  # nothing decided yet
    assert world.answers() == [(None, False)]  # answered, no alert
    [*_, question] = world.tg.messages(MAX_CHAT)
    assert question.plain == (
        "Acme Pumps & Co (C001) 的订单 SO-1001：请回复拒绝原因，或发送 /cancel"
    )
    assert world.count(TelegramConversation) == 1  # the question waits in the database

    async def answer(w: World) -> None:
        await w.say(MAX_CHAT, "  ")  # no reason: asked again
        await w.say(MAX_CHAT, "客户已逾期两张发票")

    world.run(answer)

    assert world.request(request_id).status == "rejected"
    assert decisions(world) == [("reject", "客户已逾期两张发票", "telegram", "max")]
    assert world.count(TelegramConversation) == 0
    reprompt, done = [m.plain for m in world.tg.messages(MAX_CHAT)][-2:]
    assert reprompt.startswith("请用文字说明原因") and reprompt.endswith("或发送 /cancel")
    assert done == "已拒绝"
    edited = world.tg.message(MAX_CHAT, card.message_id)
    assert edited.reply_markup is None and "✗ Max Wang 已拒绝：客户已逾期两张发票" in edited.plain
    assert "✗ Rejected by Max Wang: 客户已逾期两张发票" in texts(world.slack_card(MIA).blocks)
    world.dispatch()
    [told] = world.slack_cards(RITA)
    assert "Shipment rejected: order SO-1001" in texts(told.blocks)


def test_presses_at_the_same_moment_decide_once(world: World) -> None:
    request_id = world.request_id  # type: ignore[attr-defined]
    card = snapshot(world.telegram_card(MAX_CHAT))
    mia = snapshot(world.slack_card(MIA))

    async def body(w: World) -> None:
        presses = [w.press_update(card, APPROVE) for _ in range(6)]
        slack_click = asyncio.to_thread(w.send, w.click(mia, "approve", MIA))
        await asyncio.gather(slack_click, *(w.process(p) for p in presses))

    world.run(body)

    assert world.request(request_id).status == "approved"
    [(_, _, _, code)] = decisions(world)
    winner = {"mia": "Mia Manager", "max": "Max Wang"}[code]  # type: ignore[index]
    assert len(world.audit_rows("shipment.approve")) == 1
    lost = world.audit_rows("shipment.decide.lost")
    assert len(lost) == 6 and {r.after["decided_by"] for r in lost} == {winner}
    alerts = [t for t, alert in world.answers() if alert]
    assert set(alerts) == {f"已由 {winner} 审批"}
    assert len(alerts) == (6 if code == "mia" else 5)
    if code == "mia":
        assert world.ephemerals(MIA) == []
    else:
        assert world.ephemerals(MIA) == [f"Already decided by {winner}"]
    assert world.tg.message(MAX_CHAT, card.message_id).reply_markup is None


def test_an_inactive_approver_is_refused_with_an_alert_and_audited(world: World) -> None:
    request_id = world.request_id  # type: ignore[attr-defined]
    card = snapshot(world.telegram_card(MAX_CHAT))
    with write_session(world.engine) as s:  # Max has left since the card went out
        s.execute(update(Person).where(Person.code == "max").values(active=False))

    async def body(w: World) -> None:
        w.clock.advance(seconds=1)
        await w.process(w.press_update(card, APPROVE))

    world.run(body)

    assert world.request(request_id).status == "pending"
    assert world.answers() == [("未执行：您的 CreditBot 人员状态为停用", True)]
    assert world.tg.calls("editMessageText") == []
    [refused] = world.audit_rows("shipment.decide.refused")
    assert (refused.actor, refused.channel, refused.after["refusal"]) == (
        "max",
        "telegram",
        "inactive",
    )


def test_a_card_whose_limit_changed_says_so_on_both_platforms(world: World) -> None:
    request_id = world.request_id  # type: ignore[attr-defined]
    card = snapshot(world.telegram_card(MAX_CHAT))
    with write_session(world.engine) as s:
        s.execute(
            update(Customer)
            .where(Customer.code == "C001")
            .values(credit_limit=Decimal("150000.00"))
        )

    async def body(w: World) -> None:
        w.clock.advance(seconds=1)
        await w.process(w.press_update(card, APPROVE))

    world.run(body)

    assert world.request(request_id).status == "pending"
    assert world.answers() == [("未执行：自申请以来客户的信用额度已调整", True)]
    edited = world.tg.message(MAX_CHAT, card.message_id)
    assert edited.reply_markup is None
    assert "已由 ¥100,000.00 调整为 ¥150,000.00" in edited.plain
    assert "changed from CN¥100,000.00 to CN¥150,000.00" in texts(world.slack_card(MIA).blocks)


def test_an_expired_card_says_so_instead_of_asking_for_a_reason(world: World) -> None:
    request_id = world.request_id  # type: ignore[attr-defined]
    card = snapshot(world.telegram_card(MAX_CHAT))
    world.clock.advance(hours=80)
    from credit.store.approvals import expire_requests

    with write_session(world.engine) as s:
        assert expire_requests(s, world.clock.now(), world.settings) == [request_id]

    async def body(w: World) -> None:
        await w.process(w.press_update(card, REJECT))
        await w.process(w.press_update(card, APPROVE))

    world.run(body)

    assert world.count(TelegramConversation) == 0
    assert world.answers() == [
        ("此申请已过期：未作出任何审批。", True),
        ("此申请已过期：未作出任何审批。", True),
    ]
    assert world.request(request_id).status == "expired"


def test_a_copy_left_stale_is_repaired_when_it_is_pressed(world: World) -> None:
    """Telegram failed the edit when Mia decided on Slack: Max's card still shows its
    buttons. His press is told who decided, and his card is edited then."""
    card = snapshot(world.telegram_card(MAX_CHAT))
    world.tg.script("editMessageText", 502)
    world.send(world.click(snapshot(world.slack_card(MIA)), "approve", MIA))
    assert world.tg.message(MAX_CHAT, card.message_id).reply_markup is not None
    [first] = world.audit_rows("shipment.cards_updated")
    assert first.after == {"updated": 1, "failed": 1, "status": "approved"}

    async def body(w: World) -> None:
        w.clock.advance(seconds=1)
        await w.process(w.press_update(card, APPROVE))
        await w.process(w.press_update(card, APPROVE))  # pressed again: already shown

    world.run(body)

    assert world.answers() == [("已由 Mia Manager 审批", True)] * 2
    repaired = world.tg.message(MAX_CHAT, card.message_id)
    assert repaired.reply_markup is None and "✓ Mia Manager 已批准" in repaired.plain
    assert [c.status for c in world.tg.calls("editMessageText")] == [502, 200]
    _, second = world.audit_rows("shipment.cards_updated")
    assert second.after == {
        "updated": 1,
        "failed": 0,
        "status": "approved",
        "pressed_only": True,
    }
    assert second.channel == "telegram"
