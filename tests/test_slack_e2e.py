"""Slack end to end: the scan queues a reminder, the real dispatcher posts it through a real
``slack_sdk.WebClient`` to the fake Slack Web API (tests/fakes/slack_api.py), and the buttons
of the message the fake stored are clicked: signed requests into the ASGI app (bot.http →
bot.slack_app), which acts on the database (SQLite and PostgreSQL) and answers on the fake.

Settings come from a TOML file as in production (``[outbox] channels = ["slack"]``, ``[slack]``
secrets, ``api_base_url`` at the fake). The dispatcher and the fake share a FakeClock; Bolt's
request verification reads the real clock, so requests are signed with ``time.time()``. Bolt
answers first and runs listeners in its executor; the tests wait for that work (``drain``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import Engine, func, select
from starlette.testclient import TestClient

from bot.http import create_app
from bot.slack_app import build_slack_app
from bot.transports.slack import SlackTransport, make_web_client
from credit.calendar import BusinessCalendar
from credit.settings import Settings, load_settings
from credit.store.db import read_session, write_session
from credit.store.escalation import plan_scan, run_scan
from credit.store.models import (
    AuditLog,
    ChatInteraction,
    Customer,
    Invoice,
    InvoiceAck,
    OutboxMessage,
    Person,
    PromiseToPay,
    Region,
)
from jobs.clock import FakeClock
from jobs.dispatch import Dispatcher
from tests.fakes.slack_api import FakeSlackAPI, StoredMessage
from tests.support.slack_requests import TrackingExecutor, block_actions_payload, slack_signature

SECRET = "9e2b7c41d05f4a38b6e1c7d2a9f03b58"
AS_OF = date(2026, 11, 25)  # a Wednesday, a working day in CN
NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai: the send window is open
NUMBER = "INV-2026-000123"  # 30 days overdue: enters overdue_1m today (rep + regional manager)
SECOND = "INV-2026-000124"  # 13 days overdue: overdue, at a cadence point today (rep)
REP, MANAGER, ADMINS, NOBODY = "UREP1", "UMGR1", ("UADM1", "UADM2"), "UNOBODY"
REP_DM = FakeSlackAPI.dm_for(REP)


# --- the ledger and the settings ----------------------------------------------------------------


def build_ledger(engine: Engine) -> None:
    with write_session(engine) as s:
        north = Region(code="N", name="North")
        s.add(north)
        s.flush()
        manager = Person(
            code="mgr1", name="Mia Manager", role="regional_manager", region_id=north.id,
            slack_user_id=MANAGER,
        )  # fmt: skip
        s.add(manager)
        s.flush()
        rep = Person(
            code="rep1", name="Rita Rep", role="rep", region_id=north.id, manager_id=manager.id,
            slack_user_id=REP,
        )  # fmt: skip
        admins = [
            Person(code=f"adm{i}", name=f"Admin {i}", role="admin", slack_user_id=uid)
            for i, uid in enumerate(ADMINS, 1)
        ]
        s.add_all([rep, *admins])
        s.flush()
        customer = Customer(code="C001", name="Acme Pumps", region_id=north.id, rep_id=rep.id)
        s.add(customer)
        s.flush()
        for number, days, amount in ((NUMBER, 30, "12500.00"), (SECOND, 13, "3400.00")):
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


def write_config(path: Path, api_base_url: str, token: str) -> Settings:
    path.write_text(
        "[outbox]\n"
        'channels = ["slack"]\n'
        "\n"
        "[slack]\n"
        f'bot_token = "{token}"\n'
        f'signing_secret = "{SECRET}"\n'
        f'api_base_url = "{api_base_url}"\n',
        encoding="utf-8",
    )
    return load_settings(path)


def signed_headers(body: str, ts: str, secret: str = SECRET) -> dict[str, str]:
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        **slack_signature(body, ts, secret),
    }


# --- the harness --------------------------------------------------------------------------------


class E2E:
    def __init__(self, engine: Engine, slack: FakeSlackAPI, settings: Settings, clock) -> None:
        self.engine, self.slack, self.settings, self.clock = engine, slack, settings, clock
        self.calendar = BusinessCalendar(settings.calendar.holiday_country)
        self.executor = TrackingExecutor()
        self._seq = itertools.count(1)
        self._http: TestClient | None = None

    # --- scan and dispatch ----------------------------------------------------------------------

    def scan_and_dispatch(self) -> Any:
        result = run_scan(self.engine, self.settings, self.calendar, AS_OF, NOW)
        assert result.skipped is None
        client = make_web_client(
            self.settings.slack.bot_token.get_secret_value(), self.settings.slack.api_base_url
        )
        dispatcher = Dispatcher(
            self.engine, self.settings, {"slack": SlackTransport(client)}, self.clock
        )
        asyncio.run(dispatcher.drain())
        return result

    def reminder_row(self, slack_user: str) -> OutboxMessage:
        with read_session(self.engine) as s:
            return s.execute(
                select(OutboxMessage)
                .join(Person, Person.id == OutboxMessage.recipient_id)
                .where(Person.slack_user_id == slack_user, OutboxMessage.kind == "reminder")
            ).scalar_one()

    # --- the HTTP app -----------------------------------------------------------------------

    @property
    def http(self) -> TestClient:
        if self._http is None:
            app = build_slack_app(
                self.engine, self.settings, clock=self.clock, listener_executor=self.executor
            )  # its WebClient comes from [slack]: bot_token + api_base_url (the fake)
            self._http = TestClient(create_app(app), raise_server_exceptions=False)
            self._http.__enter__()
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.__exit__(None, None, None)
        self.executor.shutdown(wait=True)

    def post_signed(self, payload: dict, *, secret: str = SECRET) -> tuple[str, dict[str, str]]:
        """The request Slack would send: (body, headers), signed now."""
        body = urlencode({"payload": json.dumps(payload)})
        return body, signed_headers(body, str(int(time.time())), secret)

    def deliver(self, body: str, headers: dict[str, str]) -> Any:
        resp = self.http.post("/slack/events", content=body.encode(), headers=headers)
        self.executor.drain()
        return resp

    def send(self, payload: dict, *, secret: str = SECRET) -> Any:
        return self.deliver(*self.post_signed(payload, secret=secret))

    # --- payloads built from what the fake stored ---------------------------------------------

    def posted(self) -> StoredMessage:
        [message] = self.slack.messages[REP_DM]
        return message

    def button(self, name: str, invoice: str = NUMBER) -> dict[str, Any]:
        message = self.posted()
        for block in message.blocks:
            for element in block.get("elements", []):
                action = str(element.get("action_id", ""))
                value = str(element.get("value", ""))
                if action.split(":")[0] == name and value.split("|")[0] == invoice:
                    return {**element, "block_id": block["block_id"]}
        raise AssertionError(f"no {name} button for {invoice} in the posted message")

    def click(self, name: str, user: str = REP, invoice: str = NUMBER) -> dict[str, Any]:
        message, button, n = self.posted(), self.button(name, invoice), next(self._seq)
        return block_actions_payload(
            user=user,
            channel=message.channel,
            ts=message.ts,
            text=message.text,
            blocks=message.blocks,
            button=button,
            n=n,
        )

    def submission(self, view_id: str, values: dict[str, dict], user: str = REP) -> dict:
        return {
            "type": "view_submission",
            "team": {"id": "T0000FAKE", "domain": "fake"},
            "user": {"id": user, "username": user.lower(), "team_id": "T0000FAKE"},
            "api_app_id": "A0000FAKE",
            "token": "legacy-verification-token",
            "trigger_id": f"2000.{next(self._seq)}.trigger",
            "view": {
                **self.slack.views[view_id],
                "team_id": "T0000FAKE",
                "state": {"values": values},
                "hash": "1700000000.abcdef",
            },
            "response_urls": [],
            "is_enterprise_install": False,
        }

    # --- what the database and the fake saw ----------------------------------------------------

    def count(self, model: Any, *where: Any) -> int:
        with read_session(self.engine) as s:
            return s.execute(select(func.count()).select_from(model).where(*where)).scalar_one()

    def audit(self) -> list[tuple[str, str, str | None]]:
        with read_session(self.engine) as s:
            rows = s.execute(select(AuditLog).order_by(AuditLog.id)).scalars().all()
            return [(r.actor, r.action, r.entity_id) for r in rows]

    def ok_calls(self, method: str) -> list[dict[str, Any]]:
        return [r.params for r in self.slack.calls(method) if r.error is None]

    def listed_days(self, invoice: str, days: range) -> dict[str, set[date]]:
        """Per recipient code, the days of ``days`` (offsets from AS_OF) on which the scan's
        plan lists ``invoice`` (``window_days=1``: each day's own cadence points)."""
        out: dict[str, set[date]] = {}
        with read_session(self.engine) as s:
            for offset in days:
                day = AS_OF + timedelta(days=offset)
                for entry in plan_scan(s, self.settings, day, window_days=1).as_json():
                    if any(i["number"] == invoice for i in entry["invoices"]):
                        out.setdefault(entry["recipient"], set()).add(day)
        return out


@pytest.fixture
def e2e(engine: Engine, tmp_path: Path) -> Iterator[E2E]:
    build_ledger(engine)
    clock = FakeClock(NOW)
    with FakeSlackAPI(now=lambda: clock.now().timestamp()) as slack:
        settings = write_config(tmp_path / "config.toml", slack.url, slack.token)
        harness = E2E(engine, slack, settings, clock)
        try:
            yield harness
        finally:
            harness.close()


@pytest.fixture
def posted(e2e: E2E) -> E2E:
    """The day's scan has run and the dispatcher has posted the reminders."""
    e2e.scan_and_dispatch()
    return e2e


def open_promise_modal(e2e: E2E) -> str:
    resp = e2e.send(e2e.click("promise"))
    assert resp.status_code == 200
    [opened] = e2e.ok_calls("views.open")
    [(view_id, view)] = e2e.slack.views.items()
    assert view["callback_id"] == opened["view"]["callback_id"] == "creditbot_promise"
    assert json.loads(view["private_metadata"])["invoice"] == NUMBER
    return view_id


def promise_values(promised: date) -> dict[str, dict]:
    return {
        "date": {"date": {"type": "datepicker", "selected_date": promised.isoformat()}},
        "amount": {"amount": {"type": "plain_text_input", "value": "12,500.00"}},
        "note": {"note": {"type": "plain_text_input", "value": "CFO, by phone"}},
    }


def texts(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


# --- 1. scan → dispatcher → the rep's DM ----------------------------------------------------------


def test_the_scan_posts_one_reminder_with_buttons_to_the_reps_dm(e2e):
    result = e2e.scan_and_dispatch()

    assert result.queued == 2  # the rep and the region's manager
    message = e2e.posted()  # exactly one message in the rep's DM
    assert NUMBER in texts(message.blocks) and SECOND in texts(message.blocks)
    [post] = [c for c in e2e.ok_calls("chat.postMessage") if c["channel"] == REP]
    assert post["channel"] == REP  # posted to the user id: Slack picks the DM
    # the overdue_1m section carries the four buttons on its most overdue invoice
    for name in ("ack", "promise", "dispute", "snooze"):
        assert e2e.button(name)["value"] == f"{NUMBER}|overdue_1m"
        assert e2e.button(name, SECOND)["value"] == f"{SECOND}|overdue"
    row = e2e.reminder_row(REP)
    assert row.status == "sent"
    assert row.platform_ref == {"channel": REP_DM, "ts": message.ts}
    assert e2e.reminder_row(MANAGER).status == "sent"
    assert len(e2e.slack.messages[FakeSlackAPI.dm_for(MANAGER)]) == 1


# --- 2. the Promise-to-pay button → modal → promise, message updated, invoice silenced -----------


def test_promise_to_pay_from_the_posted_reminder_silences_the_invoice(posted):
    e2e = posted
    message = e2e.posted()
    ahead = range(1, 21)
    before = e2e.listed_days(NUMBER, ahead)
    second_before = e2e.listed_days(SECOND, ahead)
    assert before["rep1"]  # without a promise the rep hears of it again on its cadence

    view_id = open_promise_modal(e2e)
    assert e2e.count(PromiseToPay) == 0  # opening the modal records nothing yet

    promised = AS_OF + timedelta(days=7)
    submission = e2e.submission(view_id, promise_values(promised))
    resp = e2e.send(submission)
    assert resp.status_code == 200

    with read_session(e2e.engine) as s:
        promise, number = s.execute(
            select(PromiseToPay, Invoice.number).join(
                Invoice, Invoice.id == PromiseToPay.invoice_id
            )
        ).one()
        assert number == NUMBER
        assert (promise.promised_date, promise.amount, promise.status) == (
            promised,
            Decimal("12500.00"),
            "open",
        )
    assert e2e.audit() == [("rep1", "promise", NUMBER)]

    # the clicked message was updated in place, on the channel/ts the dispatcher recorded
    [update] = e2e.ok_calls("chat.update")
    assert (update["channel"], update["ts"]) == (REP_DM, message.ts)
    assert e2e.reminder_row(REP).platform_ref == {"channel": REP_DM, "ts": message.ts}
    stored = e2e.posted()
    assert len(stored.edits) == 1
    assert f"✓ {NUMBER}" in texts(stored.blocks) and "recorded by Rita Rep" in texts(stored.blocks)
    assert not any(
        str(e.get("value", "")).startswith(f"{NUMBER}|")
        for b in stored.blocks
        for e in b.get("elements", [])
    )  # the promised invoice's buttons are gone …
    assert e2e.button("ack", SECOND)  # … the other section's are not

    # silenced for everyone until the promised date + grace, then back on its cadence
    grace = e2e.settings.reminders.promise_grace_days
    until = promised + timedelta(days=grace)
    after = e2e.listed_days(NUMBER, ahead)
    for recipient, days in before.items():
        assert any(d <= until for d in days), recipient  # the promise has something to silence
        assert after.get(recipient, set()) == {d for d in days if d > until}, recipient
    assert after["rep1"]  # not silenced for ever
    assert e2e.listed_days(SECOND, ahead) == second_before  # the other invoice is untouched

    # the submission replayed: nothing more
    assert e2e.send(submission).status_code == 200
    assert e2e.count(PromiseToPay) == 1
    assert len(e2e.audit()) == 1
    assert len(e2e.ok_calls("chat.update")) == 1


# --- 3. forged, replayed and unmapped clicks -----------------------------------------------------


def test_a_forged_signature_on_the_click_is_refused_and_changes_nothing(posted):
    e2e = posted
    click = e2e.click("promise")

    resp = e2e.send(click, secret="not-the-signing-secret")

    assert resp.status_code == 401
    assert e2e.slack.calls("views.open") == []
    assert e2e.count(ChatInteraction) == 0
    assert e2e.audit() == []
    assert e2e.slack.ephemerals == [] and e2e.slack.calls("chat.update") == []
    # the same click, signed properly, does work: the 401 was the signature
    assert e2e.send(click).status_code == 200
    assert len(e2e.ok_calls("views.open")) == 1


def test_a_replayed_click_changes_nothing_the_second_time(posted):
    e2e = posted
    body, headers = e2e.post_signed(e2e.click("promise"))

    assert e2e.deliver(body, headers).status_code == 200
    assert e2e.deliver(body, headers).status_code == 200  # the very same request again

    assert len(e2e.slack.calls("views.open")) == 1  # no second modal
    assert e2e.count(ChatInteraction) == 1

    body, headers = e2e.post_signed(e2e.click("ack"))
    e2e.deliver(body, headers)
    e2e.deliver(body, headers)

    assert e2e.count(InvoiceAck) == 1
    assert e2e.audit() == [("rep1", "ack", NUMBER)]
    assert len(e2e.ok_calls("chat.update")) == 1
    assert len(e2e.posted().edits) == 1
    assert e2e.count(ChatInteraction) == 2


def test_a_click_by_an_unmapped_slack_user_is_refused_ephemerally_and_audited(posted):
    e2e = posted
    blocks = e2e.posted().blocks

    assert e2e.send(e2e.click("ack", user=NOBODY)).status_code == 200

    [note] = e2e.slack.ephemerals
    assert (note["channel"], note["user"]) == (REP_DM, NOBODY)
    assert "not linked" in note["text"]
    assert e2e.audit() == [(f"slack:{NOBODY}", "slack.refused", NUMBER)]
    assert e2e.count(InvoiceAck) == 0
    assert e2e.slack.calls("chat.update") == []
    assert e2e.posted().blocks == blocks and e2e.posted().edits == []


# --- 4. Slack refuses the send --------------------------------------------------------------------


def test_channel_not_found_fails_the_row_marks_the_rep_unreachable_and_alerts_admins(e2e):
    e2e.slack.script(REP, "channel_not_found")

    e2e.scan_and_dispatch()

    row = e2e.reminder_row(REP)
    assert (row.status, row.last_error) == ("failed", "channel_not_found")
    assert row.platform_ref is None
    assert REP_DM not in e2e.slack.messages
    with read_session(e2e.engine) as s:
        unreachable = dict(s.execute(select(Person.code, Person.unreachable_reason)).all())
        alerts = s.execute(
            select(OutboxMessage, Person.code)
            .join(Person, Person.id == OutboxMessage.recipient_id)
            .where(OutboxMessage.kind == "admin_alert")
            .order_by(Person.code)
        ).all()
    assert unreachable["rep1"] == "channel_not_found"
    assert unreachable["mgr1"] is None
    assert [code for _, code in alerts] == ["adm1", "adm2"]
    for alert, _ in alerts:
        assert alert.payload["message_id"] == row.id
        assert alert.payload["reason"] == "channel_not_found"
        assert alert.status == "sent"  # the same drain told the admins on Slack
    for admin in ADMINS:
        [told] = e2e.slack.messages[FakeSlackAPI.dm_for(admin)]
        assert "channel_not_found" in told.text
    assert e2e.reminder_row(MANAGER).status == "sent"  # the manager's reminder still went out
