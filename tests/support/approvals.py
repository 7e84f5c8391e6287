"""What the shipment-approval tests share: a ledger with a customer over its limit, approvers
on Slack and on Telegram, and a harness that raises a request, dispatches its cards with the
real transports to the fake Slack and fake Telegram, clicks (signed Slack requests into the
ASGI app) and presses (Telegram updates into the PTB application).

Time: one FakeClock for the database, the dispatcher, the fakes' rate limits and the apps;
Bolt checks request signatures against the real clock, so requests are signed with
``time.time()``. Bolt answers first and runs listeners in a tracked executor; ``deliver``
waits for that work (no sleeping).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from pydantic import SecretStr
from sqlalchemy import Engine, func, select
from starlette.testclient import TestClient
from telegram import Update
from telegram.ext import Application

from bot.http import create_app
from bot.slack_app import build_slack_app
from bot.telegram_app import build_telegram_application
from bot.transports.erp import ErpTransport
from bot.transports.slack import SlackTransport, make_web_client
from bot.transports.telegram import TelegramTransport
from credit.settings import (
    ApiSettings,
    OutboxSettings,
    Settings,
    SlackSettings,
    TelegramSettings,
)
from credit.store.approval_notices import notify_approvers
from credit.store.approvals import raise_request
from credit.store.db import read_session, write_session
from credit.store.models import (
    AuditLog,
    Customer,
    Invoice,
    OutboxMessage,
    Person,
    Region,
    ShipmentRequest,
)
from credit.store.telegram import DbTokenMinter
from jobs.clock import FakeClock
from jobs.dispatch import Dispatcher
from tests.fakes.slack_api import FakeSlackAPI
from tests.fakes.slack_api import StoredMessage as SlackMessage
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.fakes.telegram_api import StoredMessage as TelegramMessage
from tests.support.slack_requests import TrackingExecutor, block_actions_payload, slack_signature

SECRET = "3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e"
WEBHOOK_SECRET = "tg_Approvals-secret_0123456789"
AS_OF = date(2026, 11, 25)  # a Wednesday, a working day in CN
NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
# Slack users and Telegram chats
MIA, NORA, OLAF, SAM, RITA, CARL = "UMGR1", "UMGR3", "UMGR9", "UMGRS", "UREP1", "UDESK"
NOBODY = "UNOBODY"
MAX_CHAT, EVE_CHAT = 7002, 7009
ORDER = "SO-1001"
# add_customers: more of Rita's North customers, to raise requests for
CLEAN, BLACKLISTED = "C002", "C003"


def build_ledger(engine: Engine, *, nora: bool = False) -> None:
    """North: Mia (Slack) and Max (Telegram, Chinese) manage it, Olaf did (inactive), Rita is
    the rep; Sam manages South; Carl is the credit desk (Slack), Eve the executive (Telegram).
    Acme Pumps & Co (North, Rita's) has a CN¥100,000.00 limit and CN¥80,000.00 open, of which
    CN¥20,000.00 is 40 days overdue. ``nora``: a second North manager on Slack."""
    with write_session(engine) as s:
        north, south = Region(code="N", name="North"), Region(code="S", name="South")
        s.add_all([north, south])
        s.flush()
        people = [
            Person(code="mia", name="Mia Manager", role="regional_manager", region_id=north.id,
                   slack_user_id=MIA),
            Person(code="max", name="Max Wang", role="regional_manager", region_id=north.id,
                   telegram_chat_id=MAX_CHAT, locale="zh_CN"),
            Person(code="olaf", name="Olaf Old", role="regional_manager", region_id=north.id,
                   slack_user_id=OLAF, active=False),
            Person(code="sam", name="Sam South", role="regional_manager", region_id=south.id,
                   slack_user_id=SAM),
            Person(code="carl", name="Carl Credit", role="credit_manager", slack_user_id=CARL),
            Person(code="eve", name="Eve Exec", role="executive", telegram_chat_id=EVE_CHAT),
        ]  # fmt: skip
        if nora:
            people.append(
                Person(code="nora", name="Nora North", role="regional_manager",
                       region_id=north.id, slack_user_id=NORA)
            )  # fmt: skip
        s.add_all(people)
        s.flush()
        rita = Person(code="rita", name="Rita Rep", role="rep", region_id=north.id,
                      manager_id=people[0].id, slack_user_id=RITA)  # fmt: skip
        s.add(rita)
        s.flush()
        acme = Customer(
            code="C001",
            name="Acme Pumps & Co",
            region_id=north.id,
            rep_id=rita.id,
            rating="C",
            credit_limit=Decimal("100000.00"),
        )
        s.add(acme)
        s.flush()
        for number, due, amount in (
            ("INV-1", AS_OF + timedelta(days=10), "60000.00"),
            ("INV-2", AS_OF - timedelta(days=40), "20000.00"),
        ):
            s.add(
                Invoice(
                    number=number,
                    customer_id=acme.id,
                    issue_date=due - timedelta(days=30),
                    due_date=due,
                    amount=Decimal(amount),
                    open_amount=Decimal(amount),
                    currency="CNY",
                )
            )


def add_customers(engine: Engine) -> None:
    """Two more of Rita's North customers (after ``build_ledger``): Birch Valves (C002),
    rating B, a US$50,000.00 limit and nothing open; Coal & Coke Ltd (C003), blacklisted."""
    with write_session(engine) as s:
        rita = s.execute(select(Person).where(Person.code == "rita")).scalar_one()
        s.add_all(
            [
                Customer(code=CLEAN, name="Birch Valves", region_id=rita.region_id,
                         rep_id=rita.id, rating="B", credit_limit=Decimal("50000.00"),
                         currency="USD"),
                Customer(code=BLACKLISTED, name="Coal & Coke Ltd", region_id=rita.region_id,
                         rep_id=rita.id, rating="C", credit_limit=Decimal("100000.00"),
                         blacklisted=True),
            ]
        )  # fmt: skip


def make_settings(
    slack: FakeSlackAPI | None, tg: FakeTelegramAPI | None, api: ApiSettings | None = None
) -> Settings:
    kw: dict[str, Any] = {"outbox": OutboxSettings(channels=["slack", "telegram"])}
    if api is not None:
        kw["api"] = api
    if slack is not None:
        kw["slack"] = SlackSettings(
            bot_token=SecretStr(slack.token),
            signing_secret=SecretStr(SECRET),
            api_base_url=slack.url,
        )
    if tg is not None:
        kw["telegram"] = TelegramSettings(
            bot_token=SecretStr(tg.token),
            api_base_url=tg.base_url,
            webhook_secret=SecretStr(WEBHOOK_SECRET),
        )
    return Settings(**kw)


def raise_and_notify(
    engine: Engine,
    settings: Settings,
    now: datetime,
    *,
    order: str = ORDER,
    amount: str = "30000.00",
    by: str | None = "rita",
) -> int:
    """Raise a shipment request and queue its cards (as the ERP API's transaction would)."""
    with write_session(engine) as s:
        result = raise_request(
            s,
            settings,
            customer_code="C001",
            order_ref=order,
            amount=amount,
            currency="CNY",
            requested_by_code=by,
            now=now,
        )
        assert result.status == "pending", result
        notify_approvers(s, settings, result.request_id, now)
        return result.request_id


class BigExecutor(TrackingExecutor):
    """Bolt's listener executor with room for many presses at once."""

    def __init__(self) -> None:
        ThreadPoolExecutor.__init__(self, max_workers=24)
        self.futures = []


class World:
    """The database, both fakes, the settings and the apps, on one FakeClock."""

    def __init__(
        self,
        engine: Engine,
        slack: FakeSlackAPI,
        tg: FakeTelegramAPI,
        clock: FakeClock,
        *,
        api: ApiSettings | None = None,
    ) -> None:
        self.engine, self.slack, self.tg, self.clock = engine, slack, tg, clock
        self.settings = make_settings(slack, tg, api)
        self.minter = DbTokenMinter(engine, clock, self.settings.telegram.callback_ttl_days)
        self.executor = BigExecutor()
        self._seq = itertools.count(1)
        self._http: TestClient | None = None
        self._app: Application | None = None

    # --- requests, dispatch ------------------------------------------------------------------

    def raise_request(self, **kw: Any) -> int:
        return raise_and_notify(self.engine, self.settings, self.clock.now(), **kw)

    def transports(self) -> dict[str, Any]:
        client = make_web_client(self.slack.token, self.slack.url)
        bot = self.tg.bot()
        return {
            "slack": SlackTransport(client),
            "telegram": TelegramTransport(bot, minter=self.minter, clock=self.clock),
        }

    def dispatch(self) -> Any:
        dispatcher = Dispatcher(
            self.engine,
            self.settings,
            self.transports(),
            self.clock,
            respect_send_windows=False,
        )
        report = asyncio.run(dispatcher.drain())
        assert report.errors == [], report.errors
        return report

    def dispatcher(self, **kw: Any) -> Dispatcher:
        """The dispatcher as ``creditbot run`` has it: Slack, Telegram and the ERP callbacks
        (``[api] callback_secret``), on the world's clock."""
        transports = {
            **self.transports(),
            "erp": ErpTransport.from_settings(self.settings, clock=self.clock),
        }
        return Dispatcher(
            self.engine, self.settings, transports, self.clock, respect_send_windows=False, **kw
        )

    def slack_cards(self, user: str, order: str = ORDER) -> list[SlackMessage]:
        """The messages about ``order`` in ``user``'s Slack DM."""
        return [
            m
            for m in self.slack.messages.get(FakeSlackAPI.dm_for(user), [])
            if order in json.dumps(m.blocks, ensure_ascii=False)
        ]

    def slack_card(self, user: str, order: str = ORDER) -> SlackMessage:
        """The one card about ``order`` in ``user``'s Slack DM."""
        found = self.slack_cards(user, order)
        assert len(found) == 1, f"{len(found)} cards about {order} in {user}'s DM"
        return found[0]

    def telegram_card(self, chat: int, order: str = ORDER) -> TelegramMessage:
        found = [m for m in self.tg.messages(chat) if order in m.plain]
        assert found, f"no card about {order} in chat {chat}"
        return found[0]

    # --- what the database saw ------------------------------------------------------------------

    def request(self, request_id: int) -> ShipmentRequest:
        with read_session(self.engine) as s:
            row = s.get(ShipmentRequest, request_id)
            assert row is not None
            return row

    def count(self, model: Any, *where: Any) -> int:
        with read_session(self.engine) as s:
            return s.execute(select(func.count()).select_from(model).where(*where)).scalar_one()

    def audit(self, prefix: str = "shipment.") -> list[tuple[str, str, str]]:
        with read_session(self.engine) as s:
            rows = s.execute(
                select(AuditLog).where(AuditLog.action.like(f"{prefix}%")).order_by(AuditLog.id)
            ).scalars()
            return [(r.actor, r.action, r.channel) for r in rows]

    def audit_rows(self, action: str) -> list[AuditLog]:
        with read_session(self.engine) as s:
            return list(
                s.execute(
                    select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)
                ).scalars()
            )

    def outbox(self, kind: str) -> list[tuple[str, OutboxMessage]]:
        """(recipient code, row) of the outbox rows of ``kind``, by recipient code."""
        with read_session(self.engine) as s:
            rows = s.execute(
                select(Person.code, OutboxMessage)
                .join(Person, Person.id == OutboxMessage.recipient_id)
                .where(OutboxMessage.kind == kind)
                .order_by(Person.code, OutboxMessage.id)
            ).all()
            return [(code, row) for code, row in rows]

    # --- Slack ---------------------------------------------------------------------------------

    @property
    def http(self) -> TestClient:
        if self._http is None:
            app = build_slack_app(
                self.engine, self.settings, clock=self.clock, listener_executor=self.executor
            )
            self._http = TestClient(create_app(app), raise_server_exceptions=False)
            self._http.__enter__()
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.__exit__(None, None, None)
        self.executor.shutdown(wait=True)

    def signed(self, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        body = urlencode({"payload": json.dumps(payload)})
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            **slack_signature(body, str(int(time.time())), SECRET),
        }
        return body.encode(), headers

    def post(self, payload: dict[str, Any]) -> Any:
        """POST a signed interaction; the HTTP answer (Bolt's ack), without waiting for the
        listener."""
        body, headers = self.signed(payload)
        return self.http.post("/slack/events", content=body, headers=headers)

    def send(self, payload: dict[str, Any]) -> Any:
        resp = self.post(payload)
        self.executor.drain()
        return resp

    def click(self, message: SlackMessage, action: str, user: str) -> dict[str, Any]:
        """A ``block_actions`` payload: ``user`` presses ``action`` on the stored ``message``."""
        button = next(
            {**e, "block_id": b["block_id"]}
            for b in message.blocks
            for e in b.get("elements", [])
            if str(e.get("action_id", "")).split(":")[0] == action
        )
        return block_actions_payload(
            user=user,
            channel=message.channel,
            ts=message.ts,
            text=message.text,
            blocks=message.blocks,
            button=button,
            n=next(self._seq),
            trigger="3000",
        )

    def open_reject_modal(self, message: SlackMessage, user: str) -> str:
        """Press Reject; the id of the modal it opened."""
        before = set(self.slack.views)
        resp = self.send(self.click(message, "reject", user))
        assert resp.status_code == 200
        [view_id] = set(self.slack.views) - before
        return view_id

    def submission(self, view_id: str, reason: str, user: str) -> dict[str, Any]:
        return {
            "type": "view_submission",
            "team": {"id": "T0000FAKE", "domain": "fake"},
            "user": {"id": user, "username": user.lower(), "team_id": "T0000FAKE"},
            "api_app_id": "A0000FAKE",
            "token": "legacy-verification-token",
            "trigger_id": f"4000.{next(self._seq)}.trigger",
            "view": {
                **self.slack.views[view_id],
                "team_id": "T0000FAKE",
                "state": {
                    "values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}
                },
                "hash": "1700000000.abcdef",
            },
            "response_urls": [],
            "is_enterprise_install": False,
        }

    def slash_command(self, user: str, text: str, command: str = "/credit") -> str:
        """``user`` types ``command text`` in their DM with the app; the response_url it
        answers at (``self.slack.responded(url)``)."""
        url = self.slack.response_url()
        body = urlencode(
            {
                "token": "legacy-verification-token",
                "team_id": "T0000FAKE",
                "team_domain": "fake",
                "channel_id": FakeSlackAPI.dm_for(user),
                "channel_name": "directmessage",
                "user_id": user,
                "user_name": user.lower(),
                "command": command,
                "text": text,
                "api_app_id": "A0000FAKE",
                "response_url": url,
                "trigger_id": f"3000.{next(self._seq)}.trigger",
            }
        )
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            **slack_signature(body, str(int(time.time())), SECRET),
        }
        resp = self.http.post("/slack/events", content=body.encode(), headers=headers)
        assert resp.status_code == 200, resp.text
        self.executor.drain()
        return url

    def ephemerals(self, user: str) -> list[str]:
        return [e["text"] for e in self.slack.ephemerals if e["user"] == user]

    # --- Telegram ------------------------------------------------------------------------------

    @property
    def app(self) -> Application:
        if self._app is None:
            self._app = build_telegram_application(self.settings, self.engine, self.clock)
        return self._app

    def run(self, body: Callable[[World], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            async with self.app:
                return await body(self)

        return asyncio.run(main())

    async def process(self, update: dict[str, Any]) -> None:
        await self.app.process_update(Update.de_json(update, self.app.bot))

    @staticmethod
    def tg_button(message: TelegramMessage, label: str) -> str:
        rows = (message.reply_markup or {}).get("inline_keyboard", [])
        buttons = [b for row in rows for b in row]
        [found] = [b for b in buttons if b["text"] == label]
        return str(found["callback_data"])

    def press_update(
        self, message: TelegramMessage, label: str, user: int | None = None
    ) -> dict[str, Any]:
        data = self.tg_button(message, label)
        return self.tg.make_callback_update(message.chat_id, message.message_id, data, user)

    async def say(self, chat: int, words: str) -> None:
        self.clock.advance(seconds=1)
        await self.process(self.tg.make_message_update(chat, words))

    def answers(self) -> list[tuple[str | None, bool]]:
        return [(a.text, a.show_alert) for a in self.tg.callback_answers]


def snapshot(message: Any) -> Any:
    return copy.deepcopy(message)


def texts(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def buttons_of(blocks: list[dict[str, Any]]) -> list[str]:
    return [
        str(e.get("action_id", "")).split(":")[0]
        for b in blocks
        if b.get("type") == "actions"
        for e in b.get("elements", [])
    ]


@contextlib.contextmanager
def open_world(engine: Engine, *, api: ApiSettings | None = None) -> Iterator[World]:
    """Both fakes on one FakeClock at ``NOW``, and the World over them and ``engine`` (whose
    ledger the caller builds)."""
    clock = FakeClock(NOW)
    now = lambda: clock.now().timestamp()  # noqa: E731
    with FakeSlackAPI(now=now) as slack, FakeTelegramAPI(now=now) as tg:
        w = World(engine, slack, tg, clock, api=api)
        try:
            yield w
        finally:
            w.close()


def make_world(engine: Engine, *, nora: bool = False) -> Iterator[World]:
    """The approvals ledger (``nora``: with Nora), then ``open_world`` (a generator, for
    fixtures and ``for w in make_world(...)``)."""
    build_ledger(engine, nora=nora)
    with open_world(engine) as w:
        yield w
