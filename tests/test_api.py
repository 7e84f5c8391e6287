"""The ERP API over real HTTP: ``bot.http.create_app(api=bot.api.api_routes(...))`` served by
uvicorn on 127.0.0.1 in the test's own event loop, called with httpx — on SQLite and
PostgreSQL. The API's clock is a FakeClock (timestamps for HMAC and the requests' times).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from bot.api import api_routes, openapi_document
from bot.cli import app as cli
from bot.http import create_app
from credit.settings import ApiSettings, Settings
from credit.store.db import read_session
from credit.store.models import (
    AuditLog,
    Customer,
    HoldRecheck,
    Invoice,
    OutboxMessage,
    Payment,
    Person,
    ShipmentRequest,
)
from jobs.clock import FakeClock
from tests.support.asgi import serve
from tests.test_approvals_store import AS_OF, CALLBACK_SECRET, NOW, build_ledger

API_KEY = "k3y-for-the-erp-7f1c9a2b4d"
OTHER_KEY = "second-erp-key-0c4e2b7d91"
HMAC_SECRET = "hmac-secret-for-the-erp-5b8d"
URL = "/api/v1/shipment-requests"
GOOD = {"customer_code": "GOOD", "order_ref": "SO-1", "amount": "125000.00", "currency": "CNY"}


def api_settings(**api: Any) -> Settings:
    api.setdefault("api_keys", [SecretStr(OTHER_KEY), SecretStr(API_KEY)])
    return Settings(api=ApiSettings(callback_secret=SecretStr(CALLBACK_SECRET), **api))


class Erp:
    """The ledger, the served app, and an ERP client for it."""

    def __init__(self, engine: Engine, **api: Any) -> None:
        self.engine = engine
        self.people = build_ledger(engine)
        self.clock = FakeClock(NOW)
        self.settings = api_settings(**api)
        self.app = create_app(api=api_routes(engine, self.settings, self.clock))

    def call(self, *requests: tuple[str, str, dict[str, Any]]) -> list[httpx.Response]:
        """Send ``(method, path, httpx kwargs)`` in order; the responses."""

        async def body(client: httpx.AsyncClient) -> list[httpx.Response]:
            return [await client.request(m, path, **kw) for m, path, kw in requests]

        return serve(self.app, body)

    def one(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.call((method, path, kw))[0]

    def count(self, model: Any) -> int:
        with read_session(self.engine) as s:
            return s.execute(select(func.count()).select_from(model)).scalar_one()


def keyed(payload: Any, key: str = API_KEY) -> dict[str, Any]:
    return {"json": payload, "headers": {"X-API-Key": key}}


def signed(payload: Any, stamp: int, secret: str = HMAC_SECRET) -> dict[str, Any]:
    raw = json.dumps(payload).encode()
    mac = hmac.new(secret.encode(), str(stamp).encode() + b"." + raw, hashlib.sha256).hexdigest()
    return {
        "content": raw,
        "headers": {
            "X-Timestamp": str(stamp),
            "X-Signature": f"sha256={mac}",
            "Content-Type": "application/json",
        },
    }


@pytest.fixture
def erp(engine: Engine) -> Erp:
    return Erp(engine)


# --- raising and reading requests ---------------------------------------------------------------


def test_a_request_with_a_valid_key_is_checked_and_answered_201(erp: Erp) -> None:
    resp = erp.one("POST", URL, **keyed({**GOOD, "requested_by": "rep1"}))
    assert resp.status_code == 201, resp.text
    data = resp.json()
    assert resp.headers["location"] == f"{URL}/{data['id']}"
    assert {k: data[k] for k in ("customer_code", "order_ref", "amount", "currency")} == GOOD
    assert (data["status"], data["reasons"], data["exposure"], data["excess"]) == (
        "approved",
        ["within_policy"],
        "225000.00",
        "0.00",
    )
    assert data["requested_by"] == {"code": "rep1", "name": "Rita Rep"}
    assert data["created_at"] == "2026-11-25T02:00:00Z"
    with read_session(erp.engine) as s:
        audit = s.execute(select(AuditLog).where(AuditLog.action == "shipment.raise")).scalar_one()
    assert (audit.actor, audit.channel, audit.entity_id) == ("rep1", "api", str(data["id"]))


def test_a_pending_request_lists_its_approvals_and_get_shows_it(erp: Erp) -> None:
    over = {**GOOD, "customer_code": "OVER", "amount": 40000}  # a JSON number is fine too
    created, shown, missing, huge = erp.call(
        ("POST", URL, keyed(over)),
        ("GET", f"{URL}/1", {"headers": {"X-API-Key": API_KEY}}),
        ("GET", f"{URL}/999", {"headers": {"X-API-Key": API_KEY}}),
        ("GET", f"{URL}/99999999999999", {"headers": {"X-API-Key": API_KEY}}),
    )
    assert created.status_code == 201 and created.json()["id"] == 1
    assert shown.status_code == 200
    data = shown.json()
    assert (data["status"], data["reasons"], data["excess"], data["amount"]) == (
        "pending",
        ["over_limit"],
        "30000.00",
        "40000.00",
    )
    assert data["approvals"] == [
        {
            "level": 0,
            "role": "regional_manager",
            "decision": None,
            "approver": None,
            "reason": None,
            "channel": None,
            "decided_at": None,
        }
    ]
    assert data["expires_at"] == "2026-11-28T02:00:00Z"
    assert (missing.status_code, missing.json()) == (404, {"detail": "no shipment request 999"})
    assert huge.status_code == 404


def test_a_pending_request_sends_its_cards_at_once_and_only_to_its_approvers(erp: Erp) -> None:
    """The approvers' cards are queued with the request (same transaction), not at the next
    follow-up run: the North customer's 30,000 excess is the North manager's to decide."""
    over = {**GOOD, "customer_code": "OVER", "amount": "40000.00", "order_ref": "SO-9"}
    within = {**GOOD, "order_ref": "SO-10", "amount": "10.00"}
    assert [r.status_code for r in erp.call(("POST", URL, keyed(over)))] == [201]
    assert [r.status_code for r in erp.call(("POST", URL, keyed(within)))] == [201]
    with read_session(erp.engine) as s:
        cards = s.execute(
            select(Person.code, OutboxMessage.idempotency_key)
            .join(Person, Person.id == OutboxMessage.recipient_id)
            .where(OutboxMessage.kind == "approval_card")
        ).all()
    assert [code for code, _ in cards] == ["rmn"]
    assert cards[0][1].startswith("approval_card:1:0:")


def test_the_same_order_again_is_idempotent_and_another_amount_conflicts(erp: Erp) -> None:
    first, again, other = erp.call(
        ("POST", URL, keyed(GOOD)),
        ("POST", URL, keyed({**GOOD, "amount": "125000"})),  # the same amount, written differently
        ("POST", URL, keyed({**GOOD, "amount": "125000.01"})),
    )
    assert first.status_code == 201
    assert again.status_code == 200 and again.json() == first.json()
    assert other.status_code == 409
    assert "125000.00" in other.json()["detail"]
    assert other.json()["existing"] == first.json()
    assert erp.count(ShipmentRequest) == 1


def test_the_same_order_posted_five_times_at_once_is_raised_once(erp: Erp) -> None:
    async def body(client: httpx.AsyncClient) -> list[httpx.Response]:
        over = {**GOOD, "customer_code": "OVER", "amount": "40000.00"}
        return list(await asyncio.gather(*(client.post(URL, **keyed(over)) for _ in range(5))))

    responses = serve(erp.app, body)
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert erp.count(ShipmentRequest) == 1
    with read_session(erp.engine) as s:
        raised = s.execute(
            select(func.count()).select_from(AuditLog).where(AuditLog.action == "shipment.raise")
        ).scalar_one()
    assert raised == 1


def test_an_unknown_customer_is_404_and_a_foreign_currency_422(erp: Erp) -> None:
    unknown, foreign = erp.call(
        ("POST", URL, keyed({**GOOD, "customer_code": "NOPE"})),
        ("POST", URL, keyed({**GOOD, "currency": "USD"})),
    )
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "no customer 'NOPE'"})
    assert foreign.status_code == 422
    (problem,) = foreign.json()["detail"]
    assert problem["loc"] == ["body", "currency"]
    assert "not the currency of customer GOOD (CNY)" in problem["msg"]
    assert erp.count(ShipmentRequest) == 0


@pytest.mark.parametrize(
    ("payload", "loc", "kind"),
    [
        ({**GOOD, "amount": "12,5"}, ["body", "amount"], "decimal_parsing"),
        ({**GOOD, "amount": "1.001"}, ["body", "amount"], "decimal_max_places"),
        ({**GOOD, "amount": "-5"}, ["body", "amount"], "greater_than"),
        ({**GOOD, "amount": "NaN"}, ["body", "amount"], "finite_number"),
        ({**GOOD, "currency": "cny"}, ["body", "currency"], "string_pattern_mismatch"),
        (
            {k: v for k, v in GOOD.items() if k != "customer_code"},
            ["body", "customer_code"],
            "missing",
        ),
        ({**GOOD, "callback_url": "not a url"}, ["body", "callback_url"], "url_parsing"),
        ({**GOOD, "colour": "red"}, ["body", "colour"], "extra_forbidden"),
        ({**GOOD, "order_ref": ""}, ["body", "order_ref"], "string_too_short"),
        ([GOOD], ["body"], "model_type"),
    ],
)
def test_an_invalid_body_is_422_naming_the_field(
    erp: Erp, payload: Any, loc: list[Any], kind: str
) -> None:
    resp = erp.one("POST", URL, **keyed(payload))
    assert resp.status_code == 422, resp.text
    problems = resp.json()["detail"]
    assert [(p["loc"], p["type"]) for p in problems] == [(loc, kind)]
    assert problems[0]["msg"]
    assert erp.count(ShipmentRequest) == 0


def test_a_body_that_is_not_json_is_422(erp: Erp) -> None:
    broken, empty = erp.call(
        ("POST", URL, {"content": b"{nope", "headers": {"X-API-Key": API_KEY}}),
        ("POST", URL, {"content": b"", "headers": {"X-API-Key": API_KEY}}),
    )
    assert broken.status_code == 422 and broken.json()["detail"][0]["type"] == "json_invalid"
    assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == ["body"]


# --- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing X-API-Key header"),
        ({"X-API-Key": ""}, "missing X-API-Key header"),
        ({"X-API-Key": "wrong"}, "invalid API key"),
        ({"X-API-Key": API_KEY + "x"}, "invalid API key"),
        ({"X-API-Key": API_KEY.upper()}, "invalid API key"),
    ],
)
def test_a_missing_or_wrong_key_is_401_and_nothing_happens(
    erp: Erp, headers: dict[str, str], detail: str
) -> None:
    post, get = erp.call(
        ("POST", URL, {"json": GOOD, "headers": headers}),
        ("GET", f"{URL}/1", {"headers": headers}),
    )
    assert (post.status_code, post.json()) == (401, {"detail": detail})
    assert get.status_code == 401
    assert erp.count(ShipmentRequest) == 0


def test_every_configured_key_is_accepted(erp: Erp) -> None:
    assert erp.one("POST", URL, **keyed(GOOD, OTHER_KEY)).status_code == 201


def test_no_keys_configured_refuses_everyone(engine: Engine) -> None:
    erp = Erp(engine, api_keys=[])
    assert erp.one("POST", URL, **keyed(GOOD)).status_code == 401


def test_hmac_a_good_signature_is_accepted_a_bad_or_stale_one_refused(engine: Engine) -> None:
    erp = Erp(engine, auth="hmac", hmac_secret=SecretStr(HMAC_SECRET))
    now = int(NOW.timestamp())
    tampered = signed(GOOD, now)
    tampered["content"] = tampered["content"].replace(b"125000.00", b"925000.00")
    no_prefix = signed(GOOD, now)
    no_prefix["headers"]["X-Signature"] = no_prefix["headers"]["X-Signature"].removeprefix(
        "sha256="
    )
    responses = erp.call(
        ("POST", URL, signed({**GOOD, "order_ref": "SO-edge"}, now - 300)),  # at the edge
        ("POST", URL, signed(GOOD, now)),
        ("POST", URL, signed({**GOOD, "order_ref": "SO-2"}, now, "another-secret")),
        ("POST", URL, tampered),
        ("POST", URL, no_prefix),
        ("POST", URL, signed({**GOOD, "order_ref": "SO-3"}, now - 301)),  # too old
        ("POST", URL, signed({**GOOD, "order_ref": "SO-4"}, now + 301)),  # from the future
        ("POST", URL, {**signed(GOOD, now), "headers": {"X-Timestamp": str(now)}}),
        ("POST", URL, keyed({**GOOD, "order_ref": "SO-5"})),  # an API key is not enough here
    )
    statuses = [r.status_code for r in responses]
    assert statuses == [201, 201, 401, 401, 401, 401, 401, 401, 401]
    assert responses[5].json() == {"detail": "X-Timestamp is more than 300 seconds from our clock"}
    assert responses[2].json() == {"detail": "invalid signature"}
    stamp = str(now)  # a GET signs its empty body
    mac = hmac.new(HMAC_SECRET.encode(), stamp.encode() + b".", hashlib.sha256).hexdigest()
    got = erp.one("GET", f"{URL}/1", headers={"X-Timestamp": stamp, "X-Signature": f"sha256={mac}"})
    assert got.status_code == 200 and got.json()["order_ref"] == "SO-edge"
    erp.clock.advance(seconds=3600)  # our clock moved on: the same signed request is stale
    assert erp.one("POST", URL, **signed(GOOD, now)).status_code == 401
    assert erp.count(ShipmentRequest) == 2


def test_a_non_numeric_timestamp_is_refused(engine: Engine) -> None:
    erp = Erp(engine, auth="hmac", hmac_secret=SecretStr(HMAC_SECRET))
    request = signed(GOOD, int(NOW.timestamp()))
    request["headers"]["X-Timestamp"] = "1e9"
    resp = erp.one("POST", URL, **request)
    assert (resp.status_code, resp.json()) == (401, {"detail": "X-Timestamp must be Unix seconds"})


def test_a_body_over_the_limit_is_413(erp: Erp) -> None:
    resp = erp.one("POST", URL, content=b"x" * 1_000_001, headers={"X-API-Key": API_KEY})
    assert resp.status_code == 413


# --- ledger pushes -------------------------------------------------------------------------------


def test_invoices_push_creates_and_updates_the_ledger(erp: Erp) -> None:
    invoice = {
        "number": "INV-9",
        "customer": "GOOD",
        "issue_date": "2026-11-01",
        "due_date": "2026-12-01",
        "amount": "5000.00",
    }
    created, again, updated = erp.call(
        ("POST", "/api/v1/invoices", keyed({"invoices": [invoice]})),
        ("POST", "/api/v1/invoices", keyed({"invoices": [invoice]})),
        (
            "POST",
            "/api/v1/invoices",
            keyed({"invoices": [{**invoice, "open_amount": "1200.50", "disputed": True}]}),
        ),
    )
    assert created.json() == {
        "kind": "invoices",
        "rows": 1,
        "created": 1,
        "updated": 0,
        "unchanged": 0,
        "shipped": [],
    }
    assert (again.json()["unchanged"], updated.json()["updated"]) == (1, 1)
    with read_session(erp.engine) as s:
        row = s.execute(select(Invoice).where(Invoice.number == "INV-9")).scalar_one()
        assert (row.open_amount, row.disputed, row.currency) == (Decimal("1200.50"), True, "CNY")
    # a push without the dispute flag leaves it alone (as a file without the column does)
    erp.one("POST", "/api/v1/invoices", **keyed({"invoices": [{**invoice, "amount": "5100.00"}]}))
    with read_session(erp.engine) as s:
        row = s.execute(select(Invoice).where(Invoice.number == "INV-9")).scalar_one()
        assert (row.amount, row.open_amount, row.disputed) == (
            Decimal("5100.00"),
            Decimal("1300.50"),  # what was paid stays paid
            True,
        )
        actions = s.execute(
            select(AuditLog.action).where(AuditLog.action == "ledger.invoices")
        ).all()
    assert len(actions) == 4


def test_a_bad_invoice_push_is_422_per_row_and_writes_nothing(erp: Erp) -> None:
    good = {
        "number": "INV-1",
        "customer": "GOOD",
        "issue_date": "2026-11-01",
        "due_date": "2026-12-01",
        "amount": "10.00",
    }
    resp = erp.one(
        "POST",
        "/api/v1/invoices",
        **keyed(
            {
                "invoices": [
                    good,
                    {**good, "number": "INV-2", "customer": "NOPE"},
                    {**good, "number": "INV-3", "due_date": "2026-10-01"},
                    {**good, "number": "INV-4", "currency": "USD"},
                    good,
                ]
            }
        ),
    )
    assert resp.status_code == 422
    assert [(p["loc"], p["msg"]) for p in resp.json()["detail"]] == [
        (["body", "invoices", 1, "customer"], "unknown customer 'NOPE'"),
        (["body", "invoices", 2, "due_date"], "2026-10-01 is before the issue date 2026-11-01"),
        (["body", "invoices", 3, "currency"], "USD is not the currency of customer GOOD (CNY)"),
        (["body", "invoices", 4, "number"], "duplicate number 'INV-1' (also in row 0)"),
    ]
    with read_session(erp.engine) as s:
        numbers = s.execute(select(Invoice.number).where(Invoice.number.like("INV-%"))).all()
    assert numbers == []
    shape = erp.one("POST", "/api/v1/invoices", **keyed({"invoices": [{**good, "amount": 10.5}]}))
    assert shape.status_code == 200  # a JSON number is read exactly
    missing = erp.one("POST", "/api/v1/invoices", **keyed({"invoices": []}))
    assert missing.json()["detail"][0]["loc"] == ["body", "invoices"]


def test_a_payment_of_an_overdue_invoice_queues_the_hold_recheck(erp: Erp) -> None:
    payment = {
        "reference": "PAY-1",
        "customer": "LATE",
        "invoice": "LATE-1",
        "paid_on": AS_OF.isoformat(),
        "amount": "20000.00",
    }
    first, again, too_much = erp.call(
        ("POST", "/api/v1/payments", keyed({"payments": [payment]})),
        ("POST", "/api/v1/payments", keyed({"payments": [payment]})),
        (
            "POST",
            "/api/v1/payments",
            keyed({"payments": [{**payment, "reference": "PAY-2", "amount": "1.00"}]}),
        ),
    )
    assert (first.status_code, first.json()["created"]) == (200, 1)
    assert again.json()["unchanged"] == 1
    assert too_much.status_code == 422
    assert too_much.json()["detail"][0]["loc"] == ["body", "payments", 0, "amount"]
    with read_session(erp.engine) as s:
        late = s.execute(select(Customer).where(Customer.code == "LATE")).scalar_one()
        invoice = s.execute(select(Invoice).where(Invoice.number == "LATE-1")).scalar_one()
        rechecks = s.execute(select(HoldRecheck.customer_id)).scalars().all()
        payments = s.execute(select(func.count()).select_from(Payment)).scalar_one()
    assert invoice.open_amount == Decimal("0.00")
    assert rechecks == [late.id] and payments == 1


def test_an_invoice_billing_an_approved_order_marks_it_shipped(erp: Erp) -> None:
    raised = erp.one("POST", URL, **keyed(GOOD)).json()
    invoice = {
        "number": "INV-SO-1",
        "customer": "GOOD",
        "issue_date": "2026-11-25",
        "due_date": "2026-12-25",
        "amount": "125000.00",
        "order_ref": "SO-1",
    }
    pushed = erp.one("POST", "/api/v1/invoices", **keyed({"invoices": [invoice]}))
    assert pushed.json()["shipped"] == [raised["id"]]
    shown = erp.one("GET", f"{URL}/{raised['id']}", headers={"X-API-Key": API_KEY}).json()
    assert shown["shipped_at"] == "2026-11-25T02:00:00Z"


# --- the OpenAPI document ------------------------------------------------------------------------


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def test_creditbot_openapi_prints_the_document() -> None:
    result = CliRunner().invoke(cli, ["openapi"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/api/v1/shipment-requests",
        "/api/v1/shipment-requests/{request_id}",
        "/api/v1/invoices",
        "/api/v1/payments",
        "/api/v1/openapi.json",
    }
    post = doc["paths"]["/api/v1/shipment-requests"]["post"]
    assert set(post["responses"]) == {"200", "201", "401", "404", "409", "413", "422"}
    schemas = doc["components"]["schemas"]
    body = schemas["ShipmentRequestIn"]
    assert body["required"] == ["customer_code", "order_ref", "amount", "currency"]
    assert body["additionalProperties"] is False
    assert "shipmentRequestDecided" in doc["webhooks"]
    assert {"ApiKey", "HmacSignature"} <= set(doc["components"]["securitySchemes"])
    missing = {r for r in _refs(doc) if r.removeprefix("#/components/schemas/") not in schemas}
    assert missing == set()
    assert doc == openapi_document()


def test_the_document_is_served_without_credentials(erp: Erp) -> None:
    resp = erp.one("GET", "/api/v1/openapi.json")
    assert resp.status_code == 200 and resp.json() == openapi_document()


def test_the_decision_callback_schema_matches_what_is_sent(erp: Erp) -> None:
    from bot.api import ErpCallback
    from credit.store.outbox import list_messages

    erp.one("POST", URL, **keyed({**GOOD, "callback_url": "https://erp.example.test/cb"}))
    with read_session(erp.engine) as s:
        (message,) = list_messages(s)
    ErpCallback.model_validate(message.payload["body"])  # the documented shape
