"""Slack interactivity end to end: signed requests over HTTP into the ASGI app (bot.http), the
Bolt app (bot.slack_app) acting on a real database (SQLite and PostgreSQL), and its answers
going through a real WebClient to the fake Slack Web API (tests/fakes/slack_api.py).

Bolt answers Slack first and runs the listener afterwards in its ``listener_executor``
(``process_before_response=False``, as in production). The tests hand it a thread pool that
remembers what it was given and wait for that work to finish (``drain``): deterministic
without sleeping, and the production ordering (ack, then work) is what runs.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr
from slack_bolt.request import BoltRequest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from bot.http import create_app
from bot.messages import Button, Message, Section
from bot.slack_app import build_slack_app
from bot.slack_render import render_blocks
from credit.settings import Settings, SlackSettings
from credit.store.db import read_session, write_session
from credit.store.escalation import plan_scan
from credit.store.models import (
    AuditLog,
    ChatInteraction,
    Customer,
    Invoice,
    InvoiceAck,
    InvoiceSnooze,
    Person,
    PromiseToPay,
    Region,
)
from jobs.clock import FakeClock
from tests.fakes.slack_api import FakeSlackAPI
from tests.support.slack_requests import TrackingExecutor, block_actions_payload, slack_signature

SECRET = "5c1f0e7d9a3b4c2e8f6a1d0b7e9c3a5f"
AS_OF = date(2026, 11, 25)  # a Wednesday, a working day in CN
NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
NUMBER = "INV-2026-000123"
REP, OTHER_REP, MANAGER, NOBODY = "UREP1", "UREP2", "UMGR1", "UNOBODY"


# --- the ledger -------------------------------------------------------------------------------


def build_ledger(engine) -> None:
    with write_session(engine) as s:
        north, south = Region(code="N", name="North"), Region(code="S", name="South")
        s.add_all([north, south])
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
        other = Person(
            code="rep2", name="Sam South", role="rep", region_id=south.id, slack_user_id=OTHER_REP
        )
        s.add_all([rep, other])
        s.flush()
        customer = Customer(code="C001", name="Acme Pumps", region_id=north.id, rep_id=rep.id)
        s.add(customer)
        s.flush()
        s.add(
            Invoice(
                number=NUMBER,
                customer_id=customer.id,
                issue_date=AS_OF - timedelta(days=60),
                due_date=AS_OF - timedelta(days=30),  # enters overdue_1m today
                amount=Decimal("12500.00"),
                open_amount=Decimal("12500.00"),
                currency="CNY",
            )
        )


# --- fixtures -----------------------------------------------------------------------------------


class Harness:
    def __init__(self, engine, slack: FakeSlackAPI, http: TestClient, executor, settings) -> None:
        self.engine, self.slack, self.http = engine, slack, http
        self.executor, self.settings = executor, settings
        self._seq = itertools.count(1)
        self.dm = FakeSlackAPI.dm_for(REP)
        self.message = self._post_reminder()

    def _post_reminder(self) -> dict[str, Any]:
        """The reminder as the dispatcher posts it: our blocks, in the rep's DM."""
        value = f"{NUMBER}|overdue_1m"
        message = Message(
            title="Receivables to chase",
            summary="1 invoice needs your attention today",
            sections=[
                Section(
                    heading="1 month overdue",
                    lines=[f"{NUMBER} · Acme Pumps · CNY 12,500.00"],
                    buttons=[
                        Button("Acknowledge", "ack", value, "primary"),
                        Button("Promise to pay", "promise", value),
                        Button("Dispute", "dispute", value),
                        Button("Snooze", "snooze", value),
                    ],
                )
            ],
        )
        blocks, text = render_blocks(message)
        from bot.transports.slack import make_web_client

        client = make_web_client(self.slack.token, self.slack.url)
        resp = client.chat_postMessage(channel=REP, text=text, blocks=blocks)
        return {"channel": resp["channel"], "ts": resp["ts"], "text": text, "blocks": blocks}

    def button(self, name: str) -> dict[str, Any]:
        for block in self.message["blocks"]:
            for element in block.get("elements", []):
                if str(element.get("action_id", "")).split(":")[0] == name:
                    return {**element, "block_id": block["block_id"]}
        raise AssertionError(f"no {name} button")

    def click_payload(self, name: str, user: str = REP, action_ts: str | None = None) -> dict:
        return block_actions_payload(
            user=user,
            channel=self.message["channel"],
            ts=self.message["ts"],
            text=self.message["text"],
            blocks=self.message["blocks"],
            button=self.button(name),
            n=next(self._seq),
            action_ts=action_ts,
        )

    def submission_payload(self, view_id: str, values: dict[str, dict], user: str = REP) -> dict:
        view = self.slack.views[view_id]
        return {
            "type": "view_submission",
            "team": {"id": "T0000FAKE", "domain": "fake"},
            "user": {"id": user, "username": user.lower(), "team_id": "T0000FAKE"},
            "api_app_id": "A0000FAKE",
            "token": "legacy-verification-token",
            "trigger_id": f"2000.{next(self._seq)}.trigger",
            "view": {
                **view,
                "team_id": "T0000FAKE",
                "state": {"values": values},
                "hash": "1700000000.abcdef",
            },
            "response_urls": [],
            "is_enterprise_install": False,
        }

    def post(self, payload: dict | None = None, *, body: str | None = None, **headers: Any):
        raw = body if body is not None else urlencode({"payload": json.dumps(payload)})
        base = {"Content-Type": "application/x-www-form-urlencoded"}
        return self.http.post("/slack/events", content=raw.encode(), headers={**base, **headers})

    def send(self, payload: dict, *, ts: int | None = None, secret: str = SECRET):
        """A request signed as Slack signs it; waits for the listeners it started."""
        body = urlencode({"payload": json.dumps(payload)})
        stamp = str(int(time.time()) if ts is None else ts)
        resp = self.post(body=body, **signed_headers(body, stamp, secret))
        self.executor.drain()
        return resp

    # --- what the database and the fake saw ------------------------------------------------------

    def count(self, model, *where) -> int:
        with read_session(self.engine) as s:
            return s.execute(select(func.count()).select_from(model).where(*where)).scalar_one()

    def audit(self) -> list[tuple[str, str, str | None]]:
        with read_session(self.engine) as s:
            rows = s.execute(select(AuditLog).order_by(AuditLog.id)).scalars().all()
            return [(r.actor, r.action, r.entity_id) for r in rows]

    def updates(self) -> list[dict[str, Any]]:
        return [r.params for r in self.slack.calls("chat.update") if r.error is None]

    def unchanged(self) -> None:
        assert self.count(InvoiceAck) == 0
        assert self.count(PromiseToPay) == 0
        assert self.count(InvoiceSnooze) == 0
        assert self.updates() == []
        with read_session(self.engine) as s:
            assert s.execute(select(Invoice.disputed)).scalar_one() is False


def signed_headers(body: str, ts: str, secret: str = SECRET) -> dict[str, str]:
    return slack_signature(body, ts, secret)


@pytest.fixture
def harness(engine) -> Iterator[Harness]:
    build_ledger(engine)
    with FakeSlackAPI() as slack:
        settings = Settings(
            slack=SlackSettings(
                bot_token=SecretStr(slack.token),
                signing_secret=SecretStr(SECRET),
                api_base_url=slack.url,
            )
        )
        executor = TrackingExecutor()
        app = build_slack_app(
            engine, settings, clock=FakeClock(NOW), listener_executor=executor
        )  # the client comes from [slack]: bot_token + api_base_url (the fake)
        with TestClient(create_app(app), raise_server_exceptions=False) as http:
            yield Harness(engine, slack, http, executor, settings)
        executor.shutdown(wait=True)


def context_texts(blocks: list[dict[str, Any]]) -> list[str]:
    return [e["text"] for b in blocks if b["type"] == "context" for e in b["elements"]]


# --- acknowledge --------------------------------------------------------------------------------


def test_a_signed_acknowledge_click_acknowledges_and_updates_the_message(harness):
    resp = harness.send(harness.click_payload("ack"))

    assert resp.status_code == 200
    assert harness.executor.futures  # the listener ran after the answer, in Bolt's executor
    assert harness.count(InvoiceAck) == 1
    with read_session(harness.engine) as s:
        ack = s.execute(select(InvoiceAck)).scalar_one()
        assert (ack.tier, ack.channel) == ("overdue_1m", "slack")
    assert harness.audit() == [("rep1", "ack", NUMBER)]
    [update] = harness.updates()
    assert (update["channel"], update["ts"]) == (harness.message["channel"], harness.message["ts"])
    clicked = harness.button("ack")["block_id"]
    replaced = next(b for b in update["blocks"] if b["block_id"] == clicked)
    assert replaced["type"] == "context"
    assert context_texts([replaced]) == [f"✓ {NUMBER} acknowledged by Rita Rep"]
    assert not [b for b in update["blocks"] if b["type"] == "actions"]
    # the fake stored the edit on the message the dispatcher had posted
    [stored] = harness.slack.messages[harness.dm]
    assert stored.edits and stored.blocks == update["blocks"]


def test_a_replayed_request_and_a_double_click_record_one_acknowledgement(harness):
    payload = harness.click_payload("ack")
    assert harness.send(payload).status_code == 200
    assert harness.send(payload).status_code == 200  # the same signed request again
    # a real double click: a second press with its own action_ts
    harness.send(harness.click_payload("ack"))

    assert harness.count(InvoiceAck) == 1
    assert harness.audit() == [("rep1", "ack", NUMBER)]
    assert harness.count(ChatInteraction) == 2  # the replay was not stored again
    assert len(harness.updates()) == 2  # the replay did not update the message again


def test_an_unmapped_slack_user_is_refused_ephemerally_and_audited(harness):
    assert harness.send(harness.click_payload("ack", user=NOBODY)).status_code == 200

    harness.unchanged()
    [note] = harness.slack.ephemerals
    assert (note["channel"], note["user"]) == (harness.dm, NOBODY)
    assert "not linked" in note["text"]
    assert harness.audit() == [(f"slack:{NOBODY}", "slack.refused", NUMBER)]


def test_a_rep_of_another_region_is_refused(harness):
    harness.send(harness.click_payload("ack", user=OTHER_REP))

    harness.unchanged()
    [note] = harness.slack.ephemerals
    assert note["user"] == OTHER_REP
    assert note["text"].startswith("Not done: rep2 may not act on customer C001")
    assert harness.audit() == [("rep2", "ack.refused", NUMBER)]


def test_the_regions_manager_may_acknowledge(harness):
    harness.send(harness.click_payload("ack", user=MANAGER))
    assert harness.audit() == [("mgr1", "ack", NUMBER)]
    assert "acknowledged by Mia Manager" in str(harness.updates()[0]["blocks"])


def test_snooze_pauses_the_reminders_for_three_days(harness):
    harness.send(harness.click_payload("snooze"))
    with read_session(harness.engine) as s:
        assert s.execute(select(InvoiceSnooze.until)).scalar_one() == AS_OF + timedelta(days=3)
    assert harness.audit() == [("rep1", "snooze", NUMBER)]
    assert "snoozed until" in str(harness.updates()[0]["blocks"])


# --- request verification ------------------------------------------------------------------------


def test_a_forged_signature_is_refused_and_changes_nothing(harness):
    resp = harness.send(harness.click_payload("ack"), secret="not-the-signing-secret")

    assert resp.status_code == 401
    harness.unchanged()
    assert harness.audit() == []
    assert harness.count(ChatInteraction) == 0
    assert harness.slack.ephemerals == []


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Slack-Signature": "v0=abc"}, id="no-timestamp"),
        pytest.param({"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=a"}, id="word"),
        pytest.param({"X-Slack-Request-Timestamp": "1.5e9", "X-Slack-Signature": "v0=a"}, id="exp"),
        pytest.param(
            {
                "X-Slack-Request-Timestamp": "１７６４００００００".encode(),
                "X-Slack-Signature": "v0=a",
            },
            id="fullwidth-digits",
        ),
        pytest.param(
            {"X-Slack-Request-Timestamp": "9" * 5000, "X-Slack-Signature": "v0=a"}, id="huge"
        ),
        pytest.param({"X-Slack-Request-Timestamp": str(int(time.time()))}, id="no-signature"),
    ],
)
def test_missing_or_malformed_headers_are_refused_with_401(harness, headers):
    resp = harness.post(harness.click_payload("ack"), **headers)
    harness.executor.drain()
    assert resp.status_code == 401
    harness.unchanged()


def test_a_non_numeric_timestamp_would_make_bolt_answer_500(harness):
    """Why bot.http checks the timestamp: Bolt's verifier calls int() on it."""
    app = build_slack_app(
        harness.engine, harness.settings, clock=FakeClock(NOW), listener_executor=harness.executor
    )
    body = urlencode({"payload": json.dumps(harness.click_payload("ack"))})
    request = BoltRequest(
        body=body,
        headers={"x-slack-request-timestamp": "soon", "x-slack-signature": "v0=abc"},
    )
    assert app.dispatch(request).status == 500


def test_a_stale_timestamp_is_refused_by_bolt(harness):
    # Bolt's verifier reads the real clock (time.time): six minutes before it is stale
    stale = int(time.time()) - 360
    resp = harness.send(harness.click_payload("ack"), ts=stale)
    assert resp.status_code == 401
    harness.unchanged()
    # … and so is one from the future
    assert harness.send(harness.click_payload("ack"), ts=int(time.time()) + 360).status_code == 401


def test_an_unparseable_body_is_refused_with_401(harness):
    body = "payload=%7Bnot-json"
    resp = harness.post(body=body, **signed_headers(body, str(int(time.time()))))
    assert resp.status_code == 401
    resp = harness.http.post(
        "/slack/events",
        content=b"payload=\xff\xfe",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": str(int(time.time())),
            "X-Slack-Signature": "v0=abc",
        },
    )
    assert resp.status_code == 401


def test_healthz(harness):
    resp = harness.http.get("/healthz")
    assert (resp.status_code, resp.json()) == (200, {"status": "ok"})


# --- promise to pay and dispute: modals ---------------------------------------------------------


def opened_view(harness: Harness) -> str:
    [call] = [r for r in harness.slack.calls("views.open") if r.error is None]
    view_id = next(iter(harness.slack.views))
    assert harness.slack.views[view_id]["callback_id"] == call.params["view"]["callback_id"]
    return view_id


def planned(engine, settings) -> set[str]:
    with read_session(engine) as s:
        plan = plan_scan(s, settings, AS_OF, window_days=1)
    return {i["number"] for entry in plan.as_json() for i in entry["invoices"]}


def test_promise_to_pay_opens_a_modal_and_the_submission_silences_the_invoice(harness):
    assert planned(harness.engine, harness.settings) == {NUMBER}

    harness.send(harness.click_payload("promise"))
    view_id = opened_view(harness)
    assert harness.slack.views[view_id]["callback_id"] == "creditbot_promise"
    assert harness.count(PromiseToPay) == 0

    promised = AS_OF + timedelta(days=7)
    values = {
        "date": {"date": {"type": "datepicker", "selected_date": promised.isoformat()}},
        "amount": {"amount": {"type": "plain_text_input", "value": "10,000.00"}},
        "note": {"note": {"type": "plain_text_input", "value": "CFO, by phone"}},
    }
    submission = harness.submission_payload(view_id, values)
    resp = harness.send(submission)
    assert resp.status_code == 200
    assert resp.content in (b"", b"{}") or resp.json().get("response_action") is None

    with read_session(harness.engine) as s:
        promise = s.execute(select(PromiseToPay)).scalar_one()
        assert (promise.promised_date, promise.amount, promise.note) == (
            promised,
            Decimal("10000.00"),
            "CFO, by phone",
        )
    assert harness.audit() == [("rep1", "promise", NUMBER)]
    assert planned(harness.engine, harness.settings) == set()
    [update] = harness.updates()
    assert update["ts"] == harness.message["ts"]
    assert "recorded by Rita Rep" in str(update["blocks"])

    harness.send(submission)  # replayed: nothing more
    assert harness.count(PromiseToPay) == 1
    assert len(harness.audit()) == 1


def test_an_unreadable_promise_form_goes_back_to_the_modal_with_errors(harness):
    harness.send(harness.click_payload("promise"))
    view_id = opened_view(harness)
    values = {
        "date": {"date": {"type": "datepicker", "selected_date": None}},
        "amount": {"amount": {"type": "plain_text_input", "value": "ten thousand"}},
        "note": {"note": {"type": "plain_text_input", "value": None}},
    }
    resp = harness.send(harness.submission_payload(view_id, values))
    assert resp.status_code == 200
    assert resp.json()["response_action"] == "errors"
    assert set(resp.json()["errors"]) == {"date", "amount"}
    assert harness.count(PromiseToPay) == 0


def test_a_promise_in_the_past_is_answered_ephemerally_and_changes_nothing(harness):
    harness.send(harness.click_payload("promise"))
    view_id = opened_view(harness)
    past = (AS_OF - timedelta(days=1)).isoformat()
    values = {"date": {"date": {"type": "datepicker", "selected_date": past}}}
    harness.send(harness.submission_payload(view_id, values))
    harness.unchanged()
    [note] = harness.slack.ephemerals
    assert "in the past" in note["text"]


def test_a_double_click_on_promise_opens_one_modal(harness):
    payload = harness.click_payload("promise")
    harness.send(payload)
    harness.send(payload)
    assert len(harness.slack.calls("views.open")) == 1


def test_a_dispute_submission_marks_the_invoice_disputed(harness):
    harness.send(harness.click_payload("dispute"))
    view_id = opened_view(harness)
    assert harness.slack.views[view_id]["callback_id"] == "creditbot_dispute"

    values = {"reason": {"reason": {"type": "plain_text_input", "value": "wrong quantity"}}}
    harness.send(harness.submission_payload(view_id, values))

    with read_session(harness.engine) as s:
        invoice = s.execute(select(Invoice)).scalar_one()
        assert (invoice.disputed, invoice.dispute_reason) == (True, "wrong quantity")
    assert harness.audit() == [("rep1", "dispute", NUMBER)]
    [update] = harness.updates()
    assert "marked disputed by Rita Rep: wrong quantity" in str(update["blocks"])


def test_a_dispute_by_a_rep_of_another_region_is_refused(harness):
    harness.send(harness.click_payload("dispute", user=OTHER_REP))
    view_id = opened_view(harness)
    values = {"reason": {"reason": {"type": "plain_text_input", "value": "not ours"}}}
    harness.send(harness.submission_payload(view_id, values, user=OTHER_REP))
    harness.unchanged()
    assert harness.audit() == [("rep2", "dispute.refused", NUMBER)]
    assert harness.slack.ephemerals[0]["user"] == OTHER_REP
