"""The Telegram app end to end: a real PTB ``Application`` (bot.telegram_app) processes updates
built by the fake Telegram Bot API (tests/fakes/telegram_api.py), talks to that fake over real
HTTP, and acts on a real database (SQLite and PostgreSQL).

Reminders are sent as the outbox transport sends them: Telegram HTML through a real
``telegram.Bot`` at the fake, each button's ``callback_data`` minted by ``DbTokenMinter``.
The fake's flood limits and the tokens' expiry read the same FakeClock; a test moves it (a
person takes more than a second to answer, so each step moves it by one). No async plugin:
each test runs its coroutine with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, select, text
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.ext import Application

from bot.telegram_app import _h, build_telegram_application
from credit.settings import Settings, TelegramSettings
from credit.store.db import read_session, write_session
from credit.store.models import (
    AuditLog,
    CallbackToken,
    ChatInteraction,
    Customer,
    Invoice,
    InvoiceAck,
    InvoiceSnooze,
    Person,
    PromiseToPay,
    Region,
    ShipmentRequest,
    TelegramConversation,
)
from credit.store.telegram import DbTokenMinter
from jobs.clock import FakeClock
from tests.fakes.telegram_api import FakeTelegramAPI, StoredMessage

AS_OF = date(2026, 11, 25)  # a Wednesday
NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
NUMBER = "INV-2026-000123"  # 30 days overdue: overdue_1m
SECOND = "INV-2026-000124"  # 13 days overdue: overdue
SOUTH_INVOICE = "INV-2026-000900"
REP_CHAT, OTHER_CHAT, MANAGER_CHAT = 5001, 5002, 5003
DESK_GROUP = -100200300  # a group chat linked to the credit desk
STRANGER = 6666  # a Telegram user linked to nobody
WEBHOOK_SECRET = "tg_Webhook-secret_0123456789"
DONE_ACK = f"✓ {NUMBER} acknowledged by Rita Rep"


@pytest.fixture(autouse=True)
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """PTB 22 warns about int ``retry_after`` unless opted in to ``timedelta`` values."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


# --- the ledger ---------------------------------------------------------------------------------


def build_ledger(engine: Engine) -> None:
    with write_session(engine) as s:
        north, south = Region(code="N", name="North"), Region(code="S", name="South")
        s.add_all([north, south])
        s.flush()
        manager = Person(
            code="mgr1", name="Mia Manager", role="regional_manager", region_id=north.id,
            telegram_chat_id=MANAGER_CHAT,
        )  # fmt: skip
        s.add(manager)
        s.flush()
        rep = Person(
            code="rep1", name="Rita Rep", role="rep", region_id=north.id, manager_id=manager.id,
            telegram_chat_id=REP_CHAT,
        )  # fmt: skip
        other = Person(
            code="rep2", name="Sam South", role="rep", region_id=south.id,
            telegram_chat_id=OTHER_CHAT,
        )  # fmt: skip
        desk = Person(
            code="desk", name="Credit Desk", role="credit_manager", telegram_chat_id=DESK_GROUP
        )
        newbie = Person(code="rep3", name="Lily Link", role="rep", region_id=north.id)
        s.add_all([rep, other, desk, newbie])
        s.flush()
        acme = Customer(code="C001", name="Acme Pumps & Co", region_id=north.id, rep_id=rep.id)
        southco = Customer(code="C002", name="South Valves", region_id=south.id, rep_id=other.id)
        s.add_all([acme, southco])
        s.flush()
        for number, customer, days, amount in (
            (NUMBER, acme, 30, "12500.00"),
            (SECOND, acme, 13, "3400.00"),
            (SOUTH_INVOICE, southco, 45, "800.00"),
        ):
            s.add(
                Invoice(
                    number=number,
                    customer_id=customer.id,
                    issue_date=AS_OF - timedelta(days=days + 30),
                    due_date=AS_OF - timedelta(days=days),
                    amount=Decimal(amount),
                    open_amount=Decimal(amount),
                    currency="CNY",
                )
            )


def make_settings(fake: FakeTelegramAPI, **telegram: Any) -> Settings:
    return Settings(
        telegram=TelegramSettings(
            bot_token=SecretStr(fake.token),
            api_base_url=fake.base_url,
            webhook_secret=SecretStr(WEBHOOK_SECRET),
            **telegram,
        )
    )


# --- the harness --------------------------------------------------------------------------------


class Harness:
    def __init__(
        self, engine: Engine, fake: FakeTelegramAPI, clock: FakeClock, settings: Settings
    ) -> None:
        self.engine, self.fake, self.clock, self.settings = engine, fake, clock, settings
        self.minter = DbTokenMinter(engine, clock, settings.telegram.callback_ttl_days)
        self.app: Application = build_telegram_application(settings, engine, clock)

    def run(self, body: Callable[[Harness], Awaitable[Any]]) -> Any:
        """Run ``body`` with the application initialized (as the webhook's start-up does)."""

        async def main() -> Any:
            async with self.app:
                return await body(self)

        return asyncio.run(main())

    # --- what Telegram sends us -------------------------------------------------------------------

    async def process(self, update: dict[str, Any]) -> None:
        await self.app.process_update(Update.de_json(update, self.app.bot))

    async def say(self, chat: int, words: str, user: int | None = None) -> None:
        """A person writes in a chat (a second later than before: the flood limit)."""
        self.clock.advance(seconds=1)
        await self.process(self.fake.make_message_update(chat, words, user_id=user))

    def press_update(
        self, message: StoredMessage, action: str, user: int | None = None, row: int = 0
    ) -> dict[str, Any]:
        data = self.button(message, action, row)
        return self.fake.make_callback_update(message.chat_id, message.message_id, data, user)

    async def press(
        self, message: StoredMessage, action: str, user: int | None = None, row: int = 0
    ) -> None:
        """A person presses a button (a second later than before: the flood limit)."""
        self.clock.advance(seconds=1)
        await self.process(self.press_update(message, action, user, row))

    @staticmethod
    def button(message: StoredMessage, action: str, row: int = 0) -> str:
        """The callback data of the button for ``action`` (``row``: 0 for the first invoice)."""
        markup = message.reply_markup or {}
        buttons = [b for r in markup.get("inline_keyboard", []) for b in r]
        found = [b for b in buttons if b["text"].startswith(LABELS[action])]
        return str(found[row]["callback_data"])

    # --- what we send: a reminder, as the outbox transport does -------------------------------

    async def reminder(
        self,
        chat: int = REP_CHAT,
        person: str | None = "rep1",
        numbers: tuple[str, ...] = (NUMBER,),
        mint_chat: int | None = None,
        padding: str = "",
    ) -> StoredMessage:
        person_id = self.person_id(person) if person else None
        rows = []
        lines = []
        for number in numbers:
            tier = "overdue_1m" if number == NUMBER else "overdue"
            value = f"{number}|{tier}"

            def b(action: str, number: str = number, value: str = value) -> InlineKeyboardButton:
                data = self.minter.mint(
                    action=action, value=value, chat_id=mint_chat or chat, person_id=person_id
                )
                label = LABELS[action] + (f" · {number}" if action == "ack" else "")
                return InlineKeyboardButton(label, callback_data=data)

            rows += [[b("ack"), b("promise")], [b("dispute"), b("snooze")]]
            lines.append(f"{number} · Acme Pumps &amp; Co · CN¥12,500.00 · <i>overdue</i>")
        html = "<b>Receivables to chase — 25 Nov 2026</b>\n" + "\n".join(lines) + padding
        self.clock.advance(seconds=1)
        async with self.fake.bot() as bot:
            sent = await bot.send_message(
                chat, html, parse_mode=ParseMode.HTML, reply_markup=InlineKeyboardMarkup(rows)
            )
        return copy.deepcopy(self.fake.message(chat, sent.message_id))  # as it was sent

    # --- what the database and the fake saw ------------------------------------------------------

    def person_id(self, code: str) -> int:
        with read_session(self.engine) as s:
            return s.execute(select(Person.id).where(Person.code == code)).scalar_one()

    def count(self, model: Any, *where: Any) -> int:
        with read_session(self.engine) as s:
            return s.execute(select(func.count()).select_from(model).where(*where)).scalar_one()

    def audit(self) -> list[tuple[str, str, str | None, str]]:
        with read_session(self.engine) as s:
            rows = s.execute(select(AuditLog).order_by(AuditLog.id)).scalars().all()
            return [(r.actor, r.action, r.entity_id, r.channel) for r in rows]

    def answers(self) -> list[tuple[str | None, bool]]:
        return [(a.text, a.show_alert) for a in self.fake.callback_answers]

    def texts(self, chat: int) -> list[str]:
        return [m.plain for m in self.fake.messages(chat)]

    def unchanged(self) -> None:
        assert self.count(InvoiceAck) == 0
        assert self.count(PromiseToPay) == 0
        assert self.count(InvoiceSnooze) == 0
        with read_session(self.engine) as s:
            assert not any(s.execute(select(Invoice.disputed)).scalars())


LABELS = {"ack": "Acknowledge", "promise": "Promise", "dispute": "Dispute", "snooze": "Snooze"}


@contextmanager
def telegram_harness(engine: Engine, **telegram: Any) -> Iterator[Harness]:
    build_ledger(engine)
    clock = FakeClock(NOW)
    with FakeTelegramAPI(now=lambda: clock.now().timestamp()) as fake:
        yield Harness(engine, fake, clock, make_settings(fake, **telegram))


@pytest.fixture
def tg(engine: Engine) -> Iterator[Harness]:
    with telegram_harness(engine) as harness:
        yield harness


# --- Acknowledge and Snooze ---------------------------------------------------------------------


def test_acknowledge_acts_answers_and_edits_the_reminder(tg: Harness) -> None:
    async def body(tg: Harness) -> StoredMessage:
        message = await tg.reminder()
        await tg.press(message, "ack")
        return message

    message = tg.run(body)

    with read_session(tg.engine) as s:
        ack = s.execute(select(InvoiceAck)).scalar_one()
        assert (ack.tier, ack.channel, ack.person_id) == (
            "overdue_1m",
            "telegram",
            tg.person_id("rep1"),
        )
        token = s.execute(select(CallbackToken).where(CallbackToken.used_at.is_not(None))).one()[0]
        assert (token.action, token.used_by, token.used_via) == ("ack", ack.person_id, "ack")
    assert tg.audit() == [("rep1", "ack", NUMBER, "telegram")]
    assert tg.answers() == [("Done", False)]
    edited = tg.fake.message(REP_CHAT, message.message_id)
    assert edited.reply_markup is None  # the only invoice's buttons are gone
    assert edited.plain == f"{message.plain}\n\n{DONE_ACK}"
    # the reminder's formatting survived the edit (text_html → the same entities)
    assert edited.entities[: len(message.entities)] == message.entities
    assert tg.texts(REP_CHAT) == [edited.plain]  # no other message was sent


def test_only_the_acted_on_invoices_buttons_go(tg: Harness) -> None:
    async def body(tg: Harness) -> StoredMessage:
        message = await tg.reminder(numbers=(NUMBER, SECOND))
        await tg.press(message, "ack", row=0)
        return message

    message = tg.run(body)
    edited = tg.fake.message(REP_CHAT, message.message_id)
    assert edited.plain.endswith(DONE_ACK)
    remaining = [b["text"] for row in edited.reply_markup["inline_keyboard"] for b in row]
    assert remaining == [f"Acknowledge · {SECOND}", "Promise", "Dispute", "Snooze"]


def test_a_double_press_acts_once_and_says_who_did_it(tg: Harness) -> None:
    async def body(tg: Harness) -> None:
        message = await tg.reminder()
        await tg.press(message, "ack")
        # the second press carries the keyboard as the client still shows it
        await tg.process(
            tg.fake.make_callback_update(REP_CHAT, message.message_id, tg.button(message, "ack"))
        )

    tg.run(body)
    assert tg.count(InvoiceAck) == 1
    assert tg.audit() == [("rep1", "ack", NUMBER, "telegram")]
    assert tg.answers() == [("Done", False), ("Already done by Rita Rep", True)]
    assert len(tg.fake.calls("editMessageText")) == 1


def test_two_presses_at_once_act_once(tg: Harness) -> None:
    async def body(tg: Harness) -> None:
        message = await tg.reminder(chat=DESK_GROUP, person="desk")
        first = tg.press_update(message, "ack", user=REP_CHAT)
        second = tg.press_update(message, "ack", user=MANAGER_CHAT)
        await asyncio.gather(tg.process(first), tg.process(second))

    tg.run(body)
    assert tg.count(InvoiceAck) == 1
    [(actor, action, number, channel)] = tg.audit()
    assert (action, number, channel) == ("ack", NUMBER, "telegram")
    winner = {"rep1": "Rita Rep", "mgr1": "Mia Manager"}[actor]
    assert sorted(tg.answers()) == [("Already done by " + winner, True), ("Done", False)]
    assert len(tg.fake.calls("editMessageText")) == 1
    assert tg.fake.messages(DESK_GROUP)[0].plain.endswith(f"acknowledged by {winner}")


def test_snooze_pauses_reminders_for_three_days(tg: Harness) -> None:
    async def body(tg: Harness) -> StoredMessage:
        message = await tg.reminder()
        await tg.press(message, "snooze")
        return message

    message = tg.run(body)
    with read_session(tg.engine) as s:
        assert s.execute(select(InvoiceSnooze.until)).scalar_one() == AS_OF + timedelta(days=3)
    assert tg.audit() == [("rep1", "snooze", NUMBER, "telegram")]
    edited = tg.fake.message(REP_CHAT, message.message_id)
    assert edited.plain.endswith(f"✓ {NUMBER} snoozed until Nov 28, 2026 by Rita Rep")
    assert edited.reply_markup is None


def test_a_reminder_too_long_to_grow_loses_its_buttons_and_gets_a_reply(tg: Harness) -> None:
    async def body(tg: Harness) -> StoredMessage:
        message = await tg.reminder(padding="\n" + "x" * (4096 - 130))
        assert len(message.plain) > 4096 - len(DONE_ACK) - 2
        await tg.press(message, "ack")
        return message

    message = tg.run(body)
    assert tg.count(InvoiceAck) == 1
    [failed] = tg.fake.calls("editMessageText")
    assert failed.description == "Bad Request: message is too long"
    edited = tg.fake.message(REP_CHAT, message.message_id)
    assert (edited.plain, edited.reply_markup) == (message.plain, None)
    assert tg.texts(REP_CHAT)[-1] == DONE_ACK


def test_end_to_end_scan_dispatch_and_acknowledge(tg: Harness) -> None:
    """The scan queues the reminders, the dispatcher sends them with the real Telegram
    transport (buttons minted by ``DbTokenMinter``), and Rita acknowledges from her chat."""
    from bot.transports.telegram import TelegramTransport
    from credit.calendar import BusinessCalendar
    from credit.settings import OutboxSettings
    from credit.store.escalation import run_scan
    from jobs.dispatch import Dispatcher

    settings = Settings(outbox=OutboxSettings(channels=["telegram"]), telegram=tg.settings.telegram)
    calendar = BusinessCalendar(settings.calendar.holiday_country)
    assert run_scan(tg.engine, settings, calendar, AS_OF, NOW).skipped is None
    transport = TelegramTransport(tg.fake.bot(), minter=tg.minter, clock=tg.clock)
    report = asyncio.run(Dispatcher(tg.engine, settings, {"telegram": transport}, tg.clock).drain())
    assert report.errors == []
    [reminder] = tg.fake.messages(REP_CHAT)
    sent = copy.deepcopy(reminder)
    buttons = [b for row in sent.reply_markup["inline_keyboard"] for b in row]
    [ack] = [b for b in buttons if b["text"] == f"Acknowledge · {NUMBER}"]

    async def body(tg: Harness) -> None:
        tg.clock.advance(seconds=1)
        update = tg.fake.make_callback_update(REP_CHAT, sent.message_id, ack["callback_data"])
        await tg.process(update)

    tg.run(body)
    with read_session(tg.engine) as s:
        assert s.execute(select(InvoiceAck.tier, InvoiceAck.channel)).one() == (
            "overdue_1m",
            "telegram",
        )
    assert tg.answers() == [("Done", False)]
    edited = tg.fake.message(REP_CHAT, sent.message_id)
    assert edited.plain == f"{sent.plain}\n\n{DONE_ACK}"
    assert edited.entities[: len(sent.entities)] == sent.entities  # the formatting survived
    left = [b["text"] for row in edited.reply_markup["inline_keyboard"] for b in row]
    assert len(left) == len(buttons) - 4 and not any(NUMBER in label for label in left)


# --- refusals -----------------------------------------------------------------------------------


def test_a_token_minted_for_another_chat_is_refused(tg: Harness) -> None:
    async def body(tg: Harness) -> None:
        # the same button data, shown in Sam's chat: it was minted for Rita's
        message = await tg.reminder(chat=OTHER_CHAT, person="rep2", mint_chat=REP_CHAT)
        await tg.press(message, "ack")

    tg.run(body)
    tg.unchanged()
    assert tg.answers() == [("This button does not belong to this chat.", True)]
    assert tg.audit() == [("rep2", "telegram.refused", NUMBER, "telegram")]
    assert tg.fake.calls("editMessageText") == []


def test_an_expired_button_is_refused(tg: Harness) -> None:
    async def body(tg: Harness) -> None:
        message = await tg.reminder()
        tg.clock.advance(days=tg.settings.telegram.callback_ttl_days, seconds=1)
        await tg.press(message, "ack")

    tg.run(body)
    tg.unchanged()
    assert tg.answers() == [("This button has expired. Use the buttons of a newer reminder.", True)]
    assert tg.audit() == [("rep1", "telegram.refused", NUMBER, "telegram")]
    with read_session(tg.engine) as s:
        entry = s.execute(select(AuditLog)).scalar_one()
        assert entry.after == {"reason": "button expired", "action": "ack"}


def test_forged_callback_data_is_refused(tg: Harness) -> None:
    async def body(tg: Harness) -> None:
        message = await tg.reminder()
        forged = f"ack:{NUMBER}|overdue_1m"  # what a naive bot would put in callback_data
        await tg.process(tg.fake.make_callback_update(REP_CHAT, message.message_id, forged))

    tg.run(body)
    tg.unchanged()
    assert tg.answers() == [
        ("This button is not valid. Use the buttons of a current reminder.", True)
    ]
    assert tg.audit() == [("rep1", "telegram.refused", None, "telegram")]


def test_a_presser_linked_to_nobody_is_refused_and_audited(tg: Harness) -> None:
    async def body(tg: Harness) -> None:
        message = await tg.reminder(chat=DESK_GROUP, person="desk")
        await tg.press(message, "ack", user=STRANGER)

    tg.run(body)
    tg.unchanged()
    [(text_, alert)] = tg.answers()
    assert alert and "not linked to a CreditBot person" in text_
    assert tg.audit() == [(f"telegram:{STRANGER}", "telegram.refused", NUMBER, "telegram")]


def test_a_rep_of_another_region_is_refused_and_the_button_stays_usable(tg: Harness) -> None:
    async def body(tg: Harness) -> StoredMessage:
        message = await tg.reminder(chat=DESK_GROUP, person="desk")
        await tg.press(message, "ack", user=OTHER_CHAT)  # Sam (South) may not act on C001
        await tg.press(message, "ack", user=REP_CHAT)
        return message

    tg.run(body)
    assert tg.answers() == [("Not done: rep2 may not act on customer C001", True), ("Done", False)]
    assert tg.audit() == [
        ("rep2", "ack.refused", NUMBER, "telegram"),
        ("rep1", "ack", NUMBER, "telegram"),
    ]
    assert tg.count(InvoiceAck) == 1


# --- Promise to pay and Dispute: a question in the chat ----------------------------------------


def test_promise_to_pay_asks_for_a_date_until_it_gets_a_good_one(tg: Harness) -> None:
    promised = AS_OF + timedelta(days=5)

    async def body(tg: Harness) -> StoredMessage:
        message = await tg.reminder()
        await tg.press(message, "promise")
        await tg.say(REP_CHAT, "next Tuesday")
        await tg.say(REP_CHAT, (AS_OF - timedelta(days=1)).isoformat())
        await tg.say(REP_CHAT, (AS_OF + timedelta(days=400)).isoformat())  # over a year
        assert tg.count(TelegramConversation) == 1  # still waiting
        await tg.say(REP_CHAT, promised.isoformat().replace("-", "/"))
        return message

    message = tg.run(body)

    ask = f"{NUMBER}: reply with the promised payment date (YYYY-MM-DD), or /cancel"
    done = f"✓ {NUMBER}: promise to pay on Nov 30, 2026 recorded by Rita Rep"
    messages = tg.texts(REP_CHAT)
    assert messages[1:] == [
        ask,
        "That is not a date: write it as YYYY-MM-DD.\n" + ask,
        "Nov 24, 2026 is in the past.\n" + ask,
        "Dec 30, 2027 is more than 366 days ahead.\n" + ask,
        done,  # the confirmation
    ]
    assert tg.answers() == [(None, False)]
    with read_session(tg.engine) as s:
        promise = s.execute(select(PromiseToPay)).scalar_one()
        assert (promise.promised_date, promise.amount, promise.status) == (
            promised,
            Decimal("12500.00"),
            "open",
        )
    assert tg.audit() == [("rep1", "promise", NUMBER, "telegram")]
    assert tg.count(TelegramConversation) == 0
    edited = tg.fake.message(REP_CHAT, message.message_id)  # the original reminder
    assert edited.plain == f"{message.plain}\n\n{done}"
    assert edited.reply_markup is None


def test_a_used_promise_button_says_who_used_it(tg: Harness) -> None:
    async def body(tg: Harness) -> None:
        message = await tg.reminder()
        await tg.press(message, "promise")
        await tg.say(REP_CHAT, (AS_OF + timedelta(days=2)).isoformat())
        await tg.process(
            tg.fake.make_callback_update(
                REP_CHAT, message.message_id, tg.button(message, "promise")
            )
        )

    tg.run(body)
    assert tg.answers()[-1] == ("Already done by Rita Rep", True)
    assert tg.count(PromiseToPay) == 1


def test_a_promise_question_waits_while_another_button_is_used(tg: Harness) -> None:
    """Acknowledging the second invoice meanwhile is kept when the promise edits the message."""

    async def body(tg: Harness) -> StoredMessage:
        message = await tg.reminder(numbers=(NUMBER, SECOND))
        await tg.press(message, "promise", row=0)
        await tg.press(tg.fake.message(REP_CHAT, message.message_id), "ack", row=1)
        await tg.say(REP_CHAT, (AS_OF + timedelta(days=3)).isoformat())
        return message

    message = tg.run(body)
    edited = tg.fake.message(REP_CHAT, message.message_id)
    assert edited.plain == (
        f"{message.plain}\n\n✓ {SECOND} acknowledged by Rita Rep"
        f"\n\n✓ {NUMBER}: promise to pay on Nov 28, 2026 recorded by Rita Rep"
    )
    assert edited.reply_markup is None  # both invoices' buttons are gone
    assert tg.count(PromiseToPay) == 1 and tg.count(InvoiceAck) == 1


def test_dispute_asks_for_the_reason_and_marks_the_invoice(tg: Harness) -> None:
    async def body(tg: Harness) -> StoredMessage:
        message = await tg.reminder()
        await tg.press(message, "dispute")
        await tg.say(REP_CHAT, "wrong quantity <3 pallets>")
        return message

    message = tg.run(body)
    with read_session(tg.engine) as s:
        invoice = s.execute(select(Invoice).where(Invoice.number == NUMBER)).scalar_one()
        assert (invoice.disputed, invoice.dispute_reason) == (True, "wrong quantity <3 pallets>")
    assert tg.audit() == [("rep1", "dispute", NUMBER, "telegram")]
    done = f"✓ {NUMBER} marked disputed by Rita Rep: wrong quantity <3 pallets>"
    assert tg.fake.message(REP_CHAT, message.message_id).plain.endswith(done)
    assert tg.texts(REP_CHAT)[1:] == [
        f"{NUMBER}: reply with the reason for the dispute, or /cancel",
        done,
    ]


def test_cancel_drops_the_question(tg: Harness) -> None:
    async def body(tg: Harness) -> None:
        message = await tg.reminder()
        await tg.press(message, "promise")
        await tg.say(REP_CHAT, "/cancel")
        await tg.say(REP_CHAT, (AS_OF + timedelta(days=2)).isoformat())  # no question now
        await tg.say(REP_CHAT, "/cancel")

    tg.run(body)
    tg.unchanged()
    assert tg.texts(REP_CHAT)[2:] == [
        "Cancelled. Nothing was recorded.",
        "Commands: /ar — my open receivables by tier; /customer CODE — a customer's credit "
        "file; /approvals — my pending approvals; /request CUSTOMER AMOUNT ORDER — raise a "
        "shipment request.",
        "There is nothing to cancel.",
    ]


def test_a_question_expires(tg: Harness) -> None:
    async def body(tg: Harness) -> None:
        message = await tg.reminder()
        await tg.press(message, "promise")
        tg.clock.advance(hours=2)
        await tg.say(REP_CHAT, (AS_OF + timedelta(days=2)).isoformat())

    tg.run(body)
    tg.unchanged()
    assert tg.texts(REP_CHAT)[-1] == (
        "That question has expired; press the button on the reminder again."
    )
    assert tg.count(TelegramConversation) == 0


def test_a_refused_promise_is_audited_and_leaves_the_button_usable(tg: Harness) -> None:
    async def body(tg: Harness) -> None:
        message = await tg.reminder(chat=DESK_GROUP, person="desk")
        await tg.press(message, "promise", user=OTHER_CHAT)
        await tg.say(DESK_GROUP, (AS_OF + timedelta(days=2)).isoformat(), user=OTHER_CHAT)

    tg.run(body)
    tg.unchanged()
    assert tg.texts(DESK_GROUP)[-1] == "Not done: rep2 may not act on customer C001"
    assert tg.audit() == [("rep2", "promise.refused", NUMBER, "telegram")]
    assert tg.count(TelegramConversation) == 0
    assert tg.count(CallbackToken, CallbackToken.used_at.is_not(None)) == 0


# --- commands -----------------------------------------------------------------------------------


def test_ar_lists_my_receivables_by_tier(tg: Harness) -> None:
    tg.run(lambda tg: tg.say(REP_CHAT, "/ar"))
    [answer] = tg.fake.messages(REP_CHAT)
    assert answer.parse_mode == "HTML"
    lines = answer.plain.splitlines()
    assert lines[:4] == [
        "CreditBot — Rita Rep",
        "Scope: your customers · as of Nov 25, 2026",
        "",
        "My open receivables by tier",
    ]
    # every tier is listed, with its count and total (in the rep's scope only)
    assert "1 month overdue: warn of supply stop, get a repayment plan" in lines
    assert "1 invoice · CN¥12,500.00" in lines
    assert "1 invoice · CN¥3,400.00" in lines
    assert lines.count("0 invoices · —") == 3
    assert f"• {NUMBER} · Acme Pumps & Co (C001) · CN¥12,500.00 · 30 days overdue" in lines
    assert SOUTH_INVOICE not in answer.plain
    assert "<b>1 month overdue" in answer.text and "&amp; Co" in answer.text


def test_ar_in_chinese_for_a_chinese_speaking_rep(tg: Harness) -> None:
    with write_session(tg.engine) as s:
        rep = s.execute(select(Person).where(Person.code == "rep1")).scalar_one()
        rep.locale = "zh_CN"
        s.add(rep)
    tg.run(lambda tg: tg.say(REP_CHAT, "/ar"))
    [answer] = tg.fake.messages(REP_CHAT)
    assert "我的未收应收账款（按阶段）" in answer.plain
    assert "逾期 30 天" in answer.plain


def test_customer_shows_a_credit_file_to_those_who_may_see_it(tg: Harness) -> None:
    async def body(tg: Harness) -> None:
        await tg.say(REP_CHAT, "/customer C001")
        await tg.say(REP_CHAT, "/customer C002")
        await tg.say(REP_CHAT, "/customer")
        await tg.say(REP_CHAT, "/customer C999")

    tg.run(body)
    shown, refused, usage, unknown = tg.texts(REP_CHAT)
    assert shown.startswith("Credit file: Acme Pumps & Co (C001)\nRating: C\n")
    assert "Exposure (open receivables): CN¥15,900.00" in shown
    assert "Credit hold: No" in shown
    assert refused == "Not done: rep1 may not see customer C002"
    assert "South Valves" not in refused
    assert usage.startswith("Usage: /customer CODE")
    assert unknown == "No customer with code or name C999."
    assert tg.audit() == [("rep1", "telegram.refused", "C002", "telegram")]


def test_approvals_lists_pending_shipment_requests(tg: Harness) -> None:
    with write_session(tg.engine) as s:
        acme = s.execute(select(Customer).where(Customer.code == "C001")).scalar_one()
        s.add(
            ShipmentRequest(
                customer_id=acme.id, order_ref="SO-77 <rush>", amount=Decimal("900.00"),
                currency="CNY", created_at=NOW,
            )
        )  # fmt: skip

    async def body(tg: Harness) -> None:
        await tg.say(REP_CHAT, "/approvals")
        await tg.say(OTHER_CHAT, "/approvals")

    tg.run(body)
    assert tg.texts(REP_CHAT) == [
        "My pending approvals\n1 shipment request pending\n"
        "• SO-77 <rush> · Acme Pumps & Co (C001) · CN¥900.00"
    ]
    assert tg.texts(OTHER_CHAT) == ["My pending approvals\nNo shipment requests pending."]


def test_an_unlinked_chat_gets_one_refusal_and_no_data(tg: Harness) -> None:
    async def body(tg: Harness) -> None:
        await tg.say(STRANGER, "/ar")
        await tg.say(STRANGER, "hello?")

    tg.run(body)
    refusal = "This chat is not linked to CreditBot; ask your administrator for a link code."
    assert tg.texts(STRANGER) == [refusal, refusal]  # one answer each, nothing else
    assert tg.fake.calls("sendMessage")[0].params["text"] == refusal


def test_a_chinese_telegram_user_is_refused_in_chinese(tg: Harness) -> None:
    async def body(tg: Harness) -> None:
        tg.clock.advance(seconds=1)
        await tg.process(tg.fake.make_message_update(STRANGER, "/ar", language_code="zh-hans"))

    tg.run(body)
    assert tg.texts(STRANGER) == ["此聊天未关联 CreditBot；请向管理员索取关联码。"]


def test_talk_in_a_linked_group_is_not_answered_but_commands_are(tg: Harness) -> None:
    async def body(tg: Harness) -> None:
        await tg.say(DESK_GROUP, "lunch at noon?", user=REP_CHAT)
        await tg.say(DESK_GROUP, "/approvals", user=REP_CHAT)

    tg.run(body)
    assert tg.texts(DESK_GROUP) == ["My pending approvals\nNo shipment requests pending."]


def test_a_repeated_update_is_processed_once(tg: Harness) -> None:
    update = tg.fake.make_message_update(REP_CHAT, "/approvals")

    async def body(tg: Harness) -> None:
        await tg.process(update)
        tg.clock.advance(seconds=2)
        await tg.process(update)

    tg.run(body)
    assert len(tg.texts(REP_CHAT)) == 1
    assert tg.count(ChatInteraction, ChatInteraction.platform == "telegram") == 1


# --- failures -----------------------------------------------------------------------------------


def test_a_failing_handler_is_logged_and_the_user_gets_no_traceback(
    tg: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(tg: Harness) -> None:
        message = await tg.reminder()
        with write_session(tg.engine) as s:  # the database breaks under the bot's feet
            s.execute(text("DROP TABLE telegram_callback_token"))
            s.execute(text("DROP TABLE telegram_conversation"))
        await tg.press(message, "ack")
        await tg.say(REP_CHAT, "2026-11-30")

    with caplog.at_level(logging.ERROR, logger="bot.telegram_app"):
        tg.run(body)
    sorry = "Sorry, something went wrong. Please try again later."
    assert tg.answers() == [(sorry, False)]
    assert tg.texts(REP_CHAT)[-1] == sorry
    assert all("Traceback" not in m and "Error" not in m for m in tg.texts(REP_CHAT))
    failures = [r.getMessage() for r in caplog.records]
    assert len(failures) == 2  # SQLite: OperationalError; PostgreSQL: ProgrammingError
    assert all(f.startswith("telegram: handling update failed: ") for f in failures)


def test_html_escape() -> None:
    assert _h("a < b & c > d") == "a &lt; b &amp; c &gt; d"
