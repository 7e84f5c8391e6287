"""The shipment approval story end to end, on SQLite and PostgreSQL, every hop over real HTTP:

1. the ERP POSTs a shipment request to ``/api/v1/shipment-requests`` — the Starlette app of
   ``bot.http.create_app`` (the ERP API and the Slack app's ``/slack/events`` in one ASGI
   app) served by uvicorn in the test's event loop — with a ``callback_url`` pointing at a
   local HTTP receiver (``tests.test_erp_callback.Receiver``);
2. the real ``jobs.dispatch.Dispatcher``, with the real Slack, Telegram and ERP transports,
   sends the approvers' cards to the fake Slack (Mia) and the fake Telegram (Max);
3. Mia presses Approve: a signed Slack ``block_actions`` request into the same app;
4. the decision is stored, both cards are edited (``chat.update``, ``editMessageText``), the
   requester is told, and the signed callback reaches the receiver exactly once although it
   answers 500 twice first (retries moved along by the FakeClock; no sleeping).

And a blacklisted customer's request: 201 refused, no card anywhere, the callback
"refused" delivered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, select
from starlette.applications import Starlette

from bot.api import api_routes
from bot.http import create_app
from bot.slack_app import build_slack_app
from bot.transports.erp import verify
from credit.settings import ApiSettings
from credit.store.db import read_session
from credit.store.models import Approval, OutboxMessage, Person
from jobs.dispatch import Dispatcher
from tests.support.approvals import (
    BLACKLISTED,
    MAX_CHAT,
    MIA,
    NOW,
    RITA,
    World,
    add_customers,
    build_ledger,
    buttons_of,
    open_world,
    snapshot,
    texts,
)
from tests.support.asgi import serve
from tests.support.outbox_data import FixedRandom
from tests.test_approvals_store import CALLBACK_SECRET
from tests.test_erp_callback import Receiver

API_KEY = "e2e-erp-key-4f0c9b2a7d1e"
REQUESTS = "/api/v1/shipment-requests"
ORDER = "SO-2026-1181"
KEYED = {"X-API-Key": API_KEY}


@pytest.fixture
def world(engine: Engine) -> Iterator[World]:
    build_ledger(engine)
    add_customers(engine)
    api = ApiSettings(api_keys=[SecretStr(API_KEY)], callback_secret=SecretStr(CALLBACK_SECRET))
    with open_world(engine, api=api) as w:
        yield w


def web_app(w: World) -> Starlette:
    """What ``creditbot serve`` serves: the Slack app and the ERP API, in one ASGI app."""
    slack_app = build_slack_app(w.engine, w.settings, clock=w.clock, listener_executor=w.executor)
    return create_app(slack_app, api=api_routes(w.engine, w.settings, w.clock))


def erp_row(w: World) -> OutboxMessage:
    with read_session(w.engine) as s:
        return s.execute(
            select(OutboxMessage).where(OutboxMessage.kind == "erp_callback")
        ).scalar_one()


def signature_ok(hit: Any) -> bool:
    """What the ERP does: check the HMAC of the raw body with the shared callback secret."""
    return verify(CALLBACK_SECRET, hit.body, hit.headers["x-creditbot-signature"])


def test_erp_request_to_slack_approval_to_signed_callback(world: World) -> None:
    w = world
    dispatcher: Dispatcher = w.dispatcher(rng=FixedRandom(0.5))

    with Receiver(500, 500) as erp:

        async def story(client: httpx.AsyncClient) -> dict[str, Any]:
            # 1. the ERP raises the request: over the limit, with invoices overdue → pending
            raised = await client.post(
                REQUESTS,
                headers=KEYED,
                json={
                    "customer_code": "C001",
                    "order_ref": ORDER,
                    "amount": "30000.00",
                    "currency": "CNY",
                    "requested_by": "rita",
                    "callback_url": erp.url,
                },
            )
            assert raised.status_code == 201, raised.text
            request = raised.json()
            assert (request["status"], request["reasons"]) == (
                "pending",
                ["over_limit", "over_term"],
            )
            rid = request["id"]

            # 2. the dispatcher sends the cards: Mia's to Slack, Max's to Telegram (Chinese)
            cards = await dispatcher.drain()
            assert (cards.sent, cards.errors) == (2, [])
            mia_card = snapshot(w.slack_card(MIA, ORDER))
            max_card = w.telegram_card(MAX_CHAT, ORDER)
            assert buttons_of(mia_card.blocks) == ["approve", "reject"]
            assert max_card.reply_markup is not None
            assert erp.hits == []  # nothing decided yet: nothing to call back

            # 3. Mia presses Approve: a signed Slack request into the same app
            content, headers = w.signed(w.click(mia_card, "approve", MIA))
            pressed = await client.post("/slack/events", content=content, headers=headers)
            assert pressed.status_code == 200
            await asyncio.to_thread(w.executor.drain)  # Bolt works after answering

            # 4. the requester's message and the callback: 500, 500, then delivered
            first = await dispatcher.drain()
            assert (first.sent, first.retried) == (1, 1)  # Rita told; the ERP failed once
            w.clock.set(erp_row(w).next_attempt_at)
            second = await dispatcher.drain()
            assert (second.sent, second.retried) == (0, 1)
            w.clock.set(erp_row(w).next_attempt_at)
            third = await dispatcher.drain()
            assert (third.sent, third.retried) == (1, 0)
            w.clock.advance(hours=6)
            assert (await dispatcher.drain()).claimed == 0  # nothing more, ever

            shown = await client.get(f"{REQUESTS}/{rid}", headers=KEYED)
            assert shown.status_code == 200
            return {"id": rid, "cards": (mia_card, max_card), "shown": shown.json()}

        result = serve(web_app(w), story)

    rid = result["id"]
    mia_card, max_card = result["cards"]
    # the decision is stored: Mia, on Slack
    request = w.request(rid)
    assert (request.status, request.decided_at) == ("approved", NOW)
    shown = result["shown"]
    assert (shown["status"], shown["decided_by"]) == (
        "approved",
        {"code": "mia", "name": "Mia Manager"},
    )
    with read_session(w.engine) as s:
        rows = s.execute(
            select(Approval.decision, Approval.channel, Person.code).join(
                Person, Person.id == Approval.approver_id
            )
        ).all()
    assert [tuple(r) for r in rows] == [("approve", "slack", "mia")]

    # both cards now show the decision instead of their buttons
    [slack_edit] = w.slack.calls("chat.update")
    assert (slack_edit.params["channel"], slack_edit.params["ts"]) == (
        mia_card.channel,
        mia_card.ts,
    )
    now_mia = w.slack_card(MIA, ORDER)
    assert buttons_of(now_mia.blocks) == []
    assert "✓ Approved by Mia Manager" in texts(now_mia.blocks)
    [tg_edit] = w.tg.calls("editMessageText")
    assert int(tg_edit.params["message_id"]) == max_card.message_id
    now_max = w.tg.message(MAX_CHAT, max_card.message_id)
    assert "✓ Mia Manager 已批准" in now_max.plain and now_max.reply_markup is None
    assert w.slack.ephemerals == []

    # the requester is told
    [told] = w.slack_cards(RITA, ORDER)
    assert "Shipment approved: order SO-2026-1181" in texts(told.blocks)
    assert "approved by Mia Manager" in texts(told.blocks)

    # the ERP: two failures, then exactly one delivery — the same signed bytes each time
    assert [h.answered for h in erp.hits] == [500, 500, 200]
    assert all(signature_ok(h) for h in erp.hits)
    assert len({h.body for h in erp.hits}) == 1
    assert {h.headers["x-creditbot-idempotency-key"] for h in erp.hits} == {
        f"erp_callback:{rid}:approved"
    }
    body = json.loads(erp.hits[-1].body)
    assert {k: body[k] for k in ("event", "request_id", "order_ref", "status", "decided_by")} == {
        "event": "shipment_request.decided",
        "request_id": rid,
        "order_ref": ORDER,
        "status": "approved",
        "decided_by": "mia",
    }
    assert (body["amount"], body["currency"], body["customer_code"]) == ("30000.00", "CNY", "C001")
    row = erp_row(w)
    assert (row.status, row.attempts, row.platform_ref["status"]) == ("sent", 3, 200)

    assert w.audit() == [
        ("rita", "shipment.raise", "api"),
        ("creditbot", "shipment.notify", "api"),
        ("mia", "shipment.approve", "slack"),
        ("creditbot", "shipment.cards_updated", "slack"),
    ]
    assert w.audit_rows("shipment.cards_updated")[0].after == {
        "updated": 2,
        "failed": 0,
        "status": "approved",
    }


def test_a_blacklisted_customers_request_is_refused_with_no_card_and_called_back(
    world: World,
) -> None:
    w = world
    dispatcher = w.dispatcher(rng=FixedRandom(0.5))

    with Receiver() as erp:

        async def story(client: httpx.AsyncClient) -> dict[str, Any]:
            raised = await client.post(
                REQUESTS,
                headers=KEYED,
                json={
                    "customer_code": BLACKLISTED,
                    "order_ref": "SO-9",
                    "amount": "1000.00",
                    "currency": "CNY",
                    "requested_by": "rita",
                    "callback_url": erp.url,
                },
            )
            assert raised.status_code == 201, raised.text
            report = await dispatcher.drain()
            assert (report.sent, report.errors) == (1, [])  # the callback, nothing else
            w.clock.advance(hours=6)
            assert (await dispatcher.drain()).claimed == 0
            return raised.json()

        request = serve(web_app(w), story)

    assert (request["status"], request["reasons"], request["approvals"]) == (
        "refused",
        ["blacklisted"],
        [],
    )
    # no card anywhere
    assert w.outbox("approval_card") == []
    assert w.slack.calls("chat.postMessage") == []
    assert w.tg.calls("sendMessage") == []
    # the ERP is told, signed, once
    [hit] = erp.hits
    assert hit.answered == 200 and signature_ok(hit)
    body = json.loads(hit.body)
    assert (body["request_id"], body["status"], body["reasons"], body["decided_by"]) == (
        request["id"],
        "refused",
        ["blacklisted"],
        None,
    )
    assert hit.headers["x-creditbot-idempotency-key"] == f"erp_callback:{request['id']}:refused"
    assert w.audit() == [("rita", "shipment.raise", "api")]
