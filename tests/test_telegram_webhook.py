"""The Telegram webhook over real HTTP: the ASGI app (bot.http) served by uvicorn on 127.0.0.1,
requests as Telegram sends them (``X-Telegram-Bot-Api-Secret-Token``, a JSON update), the PTB
application (bot.telegram_app) answering through the fake Telegram Bot API — on SQLite and
PostgreSQL.

uvicorn runs in the test's own event loop (``Server.serve`` as a task), so its lifespan —
which initializes the PTB application (``getMe``) — and the requests share one loop, and no
thread has to be waited for.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from starlette.applications import Starlette

from bot.http import create_app, register_webhook
from bot.telegram_app import build_telegram_application
from credit.store.db import read_session, write_session
from credit.store.models import ChatInteraction, Person
from credit.store.telegram import create_link_code
from tests.support.asgi import serve
from tests.test_telegram_app import REP_CHAT, STRANGER, WEBHOOK_SECRET, Harness, telegram_harness

HEADER = "X-Telegram-Bot-Api-Secret-Token"
WEBHOOK_URL = "https://creditbot.example.com/telegram/webhook"
NEW_CHAT = 7100


@pytest.fixture(autouse=True)
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
def tg(engine: Engine) -> Iterator[Harness]:
    with telegram_harness(engine, webhook_url=WEBHOOK_URL) as harness:
        yield harness


def webhook_app(tg: Harness) -> Starlette:
    telegram_app = build_telegram_application(tg.settings, tg.engine, tg.clock)
    return create_app(telegram_app=telegram_app, telegram_secret=WEBHOOK_SECRET)


def seen(tg: Harness) -> int:
    with read_session(tg.engine) as s:
        return s.execute(
            select(func.count())
            .select_from(ChatInteraction)
            .where(ChatInteraction.platform == "telegram")
        ).scalar_one()


def test_an_update_with_the_secret_is_processed(tg: Harness) -> None:
    update = tg.fake.make_message_update(REP_CHAT, "/approvals")

    async def body(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/telegram/webhook", json=update, headers={HEADER: WEBHOOK_SECRET})

    resp = serve(webhook_app(tg), body)
    assert (resp.status_code, resp.json()) == (200, {"ok": True})
    assert tg.texts(REP_CHAT) == ["My pending approvals\nNo shipment requests pending."]
    assert [c.status for c in tg.fake.calls("getMe")] == [200]  # initialized at start-up
    assert seen(tg) == 1


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({HEADER: ""}, id="empty"),
        pytest.param({HEADER: "not-the-secret"}, id="wrong"),
        pytest.param({HEADER: WEBHOOK_SECRET + "x"}, id="longer"),
        pytest.param({HEADER: WEBHOOK_SECRET.encode() + b"\xff"}, id="not-ascii"),
    ],
)
def test_a_missing_or_wrong_secret_is_refused_and_nothing_is_processed(
    tg: Harness, headers: dict[str, Any]
) -> None:
    update = tg.fake.make_message_update(REP_CHAT, "/approvals")

    async def body(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await client.post("/telegram/webhook", json=update, headers=headers),
            # the secret is checked before the body is even read
            await client.post("/telegram/webhook", content=b"{not json", headers=headers),
        ]

    for resp in serve(webhook_app(tg), body):
        assert resp.status_code == 403
    assert tg.texts(REP_CHAT) == []
    assert seen(tg) == 0


def test_the_same_update_twice_is_processed_once(tg: Harness) -> None:
    update = tg.fake.make_message_update(REP_CHAT, "/approvals")

    async def body(client: httpx.AsyncClient) -> list[int]:
        statuses = []
        for _ in range(2):  # Telegram delivers again when it did not see our answer
            tg.clock.advance(seconds=2)
            resp = await client.post(
                "/telegram/webhook", json=update, headers={HEADER: WEBHOOK_SECRET}
            )
            statuses.append(resp.status_code)
        return statuses

    assert serve(webhook_app(tg), body) == [200, 200]
    assert len(tg.texts(REP_CHAT)) == 1
    assert seen(tg) == 1


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b"{}", id="no-update-id"),
        pytest.param(b'{"update_id": "7"}', id="string-id"),
        pytest.param(b'{"update_id": true}', id="bool-id"),
        pytest.param(b'{"update_id": 7, "message": {"chat": 1}}', id="bad-message"),
    ],
)
def test_a_malformed_body_is_refused_with_400(tg: Harness, content: bytes) -> None:
    async def body(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(
            "/telegram/webhook",
            content=content,
            headers={HEADER: WEBHOOK_SECRET, "Content-Type": "application/json"},
        )

    resp = serve(webhook_app(tg), body)
    assert resp.status_code == 400
    assert resp.json()["ok"] is False
    assert seen(tg) == 0


def test_an_unlinked_chat_through_the_webhook_gets_the_refusal_only(tg: Harness) -> None:
    update = tg.fake.make_message_update(STRANGER, "/ar")

    async def body(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(
            "/telegram/webhook", content=json.dumps(update), headers={HEADER: WEBHOOK_SECRET}
        )

    assert serve(webhook_app(tg), body).status_code == 200
    assert tg.texts(STRANGER) == [
        "This chat is not linked to CreditBot; ask your administrator for a link code."
    ]


def test_healthz_is_still_served(tg: Harness) -> None:
    async def body(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get("/healthz")

    resp = serve(webhook_app(tg), body)
    assert (resp.status_code, resp.json()) == (200, {"status": "ok"})


def test_the_webhook_needs_a_secret(tg: Harness) -> None:
    telegram_app = build_telegram_application(tg.settings, tg.engine, tg.clock)
    with pytest.raises(ValueError, match="needs a secret"):
        create_app(telegram_app=telegram_app, telegram_secret="")


def test_register_webhook_sets_the_url_and_the_secret(tg: Harness) -> None:
    async def main() -> bool:
        async with tg.fake.bot() as bot:
            return await register_webhook(bot, tg.settings)

    assert asyncio.run(main()) is True
    assert tg.fake.webhook["url"] == WEBHOOK_URL
    assert tg.fake.webhook["secret_token"] == WEBHOOK_SECRET
    [call] = tg.fake.calls("setWebhook")
    assert set(call.params["allowed_updates"]) == {"message", "callback_query"}


def test_a_link_through_the_webhook(tg: Harness) -> None:
    """``/start CODE`` arrives as Telegram would post it and links the chat."""
    ttl = timedelta(minutes=tg.settings.telegram.link_code_ttl_minutes)
    with write_session(tg.engine) as s:
        person = s.execute(select(Person).where(Person.code == "rep3")).scalar_one()
        code = create_link_code(s, person, tg.clock.now(), ttl)
    update = tg.fake.make_message_update(NEW_CHAT, f"/start {code}")

    async def body(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/telegram/webhook", json=update, headers={HEADER: WEBHOOK_SECRET})

    assert serve(webhook_app(tg), body).status_code == 200
    with read_session(tg.engine) as s:
        linked = select(Person.telegram_chat_id).where(Person.code == "rep3")
        assert s.execute(linked).scalar_one() == NEW_CHAT
    assert tg.texts(NEW_CHAT)[0].startswith("Welcome, Lily Link!")


def test_the_whole_story_link_remind_promise_over_the_webhook(tg: Harness) -> None:
    """Rita's chat is linked with a one-time code; the scan and the dispatcher (with the
    transport ``creditbot run`` builds) send her reminder; she presses *Promise to pay* and
    answers the date — every update posted to the webhook as Telegram would. The promise is
    stored and the reminder edited to say so."""
    from bot.cli import _transports
    from credit.calendar import BusinessCalendar
    from credit.settings import OutboxSettings, Settings
    from credit.store.escalation import run_scan
    from credit.store.models import PromiseToPay
    from jobs.dispatch import Dispatcher
    from tests.test_telegram_app import AS_OF, NOW

    settings = Settings(outbox=OutboxSettings(channels=["telegram"]), telegram=tg.settings.telegram)
    ttl = timedelta(minutes=settings.telegram.link_code_ttl_minutes)
    with write_session(tg.engine) as s:  # Rita starts unlinked
        rita = s.execute(select(Person).where(Person.code == "rep1")).scalar_one()
        rita.telegram_chat_id = None
        s.add(rita)
        code = create_link_code(s, rita, tg.clock.now(), ttl)
    transports = _transports(settings, engine=tg.engine, clock=tg.clock)
    webhook = webhook_app(tg)

    async def post(client: httpx.AsyncClient, update: dict[str, Any]) -> None:
        resp = await client.post("/telegram/webhook", json=update, headers={HEADER: WEBHOOK_SECRET})
        assert (resp.status_code, resp.json()) == (200, {"ok": True})

    async def story(client: httpx.AsyncClient) -> Any:
        await post(client, tg.fake.make_message_update(NEW_CHAT, f"/start {code}"))
        assert run_scan(tg.engine, settings, BusinessCalendar("CN"), AS_OF, NOW).queued
        report = await Dispatcher(tg.engine, settings, transports, tg.clock).drain()
        assert report.errors == [] and report.sent >= 1
        reminder = next(m for m in tg.fake.messages(NEW_CHAT) if m.reply_markup)
        promise = Harness.button(reminder, "promise")  # the first row: the oldest invoice
        tg.clock.advance(seconds=5)
        pressed = tg.fake.make_callback_update(NEW_CHAT, reminder.message_id, promise)
        await post(client, pressed)
        await post(client, tg.fake.make_message_update(NEW_CHAT, "2026-12-04"))
        return reminder

    reminder = serve(webhook, story)
    with read_session(tg.engine) as s:
        kept = s.execute(select(PromiseToPay.promised_date, PromiseToPay.status)).all()
    assert [(d.isoformat(), st) for d, st in kept] == [("2026-12-04", "open")]
    edited = tg.fake.message(NEW_CHAT, reminder.message_id)
    assert edited.plain.startswith(reminder.plain)
    assert "promise to pay on Dec 4, 2026 recorded by Rita Rep" in edited.plain
    texts = tg.texts(NEW_CHAT)
    assert texts[0].startswith("Welcome, Rita Rep")
    assert any("reply with the promised payment date" in t for t in texts)
