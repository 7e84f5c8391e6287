"""Shipment approvals in the database (credit.store.approvals), on SQLite and PostgreSQL.

A small ledger: two regions, a rep, regional managers of each, the credit desk, an
executive; customers within policy, over their limit, overdue, blacklisted, on probation.
The authority matrix is the built-in one (regional manager up to 50,000 over the limit or
overdue, credit manager up to 200,000, executive without caps). Concurrent decisions run in
real threads, each with its own session, started together by a barrier.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, select, update

from bot.transports.erp import encode_body, sign, verify
from credit.settings import ApiSettings, ApprovalSettings, Settings
from credit.store import approvals
from credit.store.approvals import (
    ApprovalError,
    DecisionResult,
    DuplicateOrder,
    UnknownCustomer,
    UnknownRequest,
    credit_position,
    decide,
    expire_requests,
    get_request,
    raise_request,
)
from credit.store.db import read_session, write_session
from credit.store.models import (
    Approval,
    AuditLog,
    Customer,
    Invoice,
    OutboxMessage,
    Person,
    Region,
    ShipmentRequest,
)
from credit.store.views import actor_of, pending_approvals

T = TypeVar("T")

NOW = datetime(2026, 11, 25, 2, 0, tzinfo=UTC)  # Wednesday 10:00 in Shanghai
AS_OF = date(2026, 11, 25)
CALLBACK_SECRET = "erp-callback-secret-0123456789"
CALLBACK_URL = "http://erp.example.test/credit/decisions"

# customer code → (limit, open not yet due, open overdue, extra fields)
CUSTOMERS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "GOOD": ("1000000.00", "100000.00", "0", {}),
    "OVER": ("100000.00", "90000.00", "0", {}),
    "LATE": ("1000000.00", "0", "20000.00", {}),
    "BLACK": ("500000.00", "0", "0", {"blacklisted": True}),
    "NEWCO": ("500000.00", "0", "0", {"probation_until": date(2027, 3, 1)}),
    "SOUTHCO": ("100000.00", "90000.00", "0", {"region": "S"}),
}


def settings(**approval: Any) -> Settings:
    return Settings(
        approvals=ApprovalSettings(**approval),
        api=ApiSettings(callback_secret=SecretStr(CALLBACK_SECRET)),
    )


def build_ledger(engine: Engine) -> dict[str, int]:
    """People and customers; returns person code → id."""
    with write_session(engine) as s:
        north, south = Region(code="N", name="North"), Region(code="S", name="South")
        s.add_all([north, south])
        s.flush()
        people = [
            Person(code="rep1", name="Rita Rep", role="rep", region_id=north.id),
            Person(code="rep2", name="Sam South", role="rep", region_id=south.id),
            Person(code="rmn", name="Nina North", role="regional_manager", region_id=north.id),
            Person(code="rms", name="Simon South", role="regional_manager", region_id=south.id),
            Person(code="cm", name="Carl Credit", role="credit_manager"),
            Person(code="cm2", name="Cora Credit", role="credit_manager"),
            Person(code="cmx", name="Old Credit", role="credit_manager", active=False),
            Person(code="exec", name="Eve Exec", role="executive"),
            Person(code="fin", name="Finn Finance", role="finance"),
            Person(code="adm", name="Ada Admin", role="admin"),
        ]
        s.add_all(people)
        s.flush()
        ids = {p.code: p.id for p in people}
        for code, (limit, current, late, extra) in CUSTOMERS.items():
            extra = dict(extra)
            region = south if extra.pop("region", "N") == "S" else north
            customer = Customer(
                code=code,
                name=f"{code.title()} Ltd",
                region_id=region.id,
                rep_id=ids["rep2" if region is south else "rep1"],
                credit_limit=Decimal(limit),
                currency="CNY",
                **extra,
            )
            s.add(customer)
            s.flush()
            for n, (amount, due) in enumerate(
                ((current, AS_OF + timedelta(days=10)), (late, AS_OF - timedelta(days=40)))
            ):
                if Decimal(amount) > 0:
                    s.add(
                        Invoice(
                            number=f"{code}-{n}",
                            customer_id=customer.id,
                            issue_date=due - timedelta(days=30),
                            due_date=due,
                            amount=Decimal(amount),
                            open_amount=Decimal(amount),
                            currency="CNY",
                        )
                    )
        return ids  # type: ignore[return-value]


@dataclass
class Desk:
    """The ledger on one engine, and shortcuts to act on it."""

    engine: Engine
    people: dict[str, int]
    settings: Settings

    def raise_(self, customer: str, order: str, amount: str, **kw: Any) -> approvals.RequestResult:
        kw.setdefault("callback_url", CALLBACK_URL)
        kw.setdefault("now", NOW)
        with write_session(self.engine) as s:
            return raise_request(
                s,
                self.settings,
                customer_code=customer,
                order_ref=order,
                amount=Decimal(amount),
                currency=kw.pop("currency", "CNY"),
                **kw,
            )

    def decide(
        self, request_id: int, who: str, decision: str = "approve", **kw: Any
    ) -> DecisionResult:
        kw.setdefault("now", NOW + timedelta(hours=1))
        kw.setdefault("channel", "slack")
        if decision == "reject":
            kw.setdefault("reason", "customer pays late")
        with write_session(self.engine) as s:
            return decide(
                s,
                self.settings,
                request_id=request_id,
                approver_person_id=self.people[who],
                decision=decision,
                **kw,
            )

    def request(self, request_id: int) -> dict[str, Any]:
        with read_session(self.engine) as s:
            return get_request(s, request_id)

    def outbox(self, kind: str | None = None) -> list[OutboxMessage]:
        with read_session(self.engine) as s:
            stmt = select(OutboxMessage).order_by(OutboxMessage.id)
            if kind:
                stmt = stmt.where(OutboxMessage.kind == kind)
            return list(s.execute(stmt).scalars())

    def audit(self, request_id: int) -> list[tuple[str, str, str]]:
        with read_session(self.engine) as s:
            rows = s.execute(
                select(AuditLog.actor, AuditLog.action, AuditLog.channel)
                .where(AuditLog.entity == "shipment_request", AuditLog.entity_id == str(request_id))
                .order_by(AuditLog.id)
            ).all()
        return [tuple(r) for r in rows]  # type: ignore[misc]

    def audit_after(self, request_id: int, action: str) -> list[dict[str, Any]]:
        with read_session(self.engine) as s:
            return list(
                s.execute(
                    select(AuditLog.after)
                    .where(AuditLog.entity_id == str(request_id), AuditLog.action == action)
                    .order_by(AuditLog.id)
                ).scalars()
            )


@pytest.fixture
def desk(engine: Engine) -> Desk:
    return Desk(engine, build_ledger(engine), settings())


def together(calls: list[Callable[[], T]]) -> list[T]:
    """Run the calls in threads released at the same moment; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # surfaced below
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


# --- the credit position -------------------------------------------------------------------------


def test_credit_position_sums_open_overdue_and_approved_unshipped(desk: Desk) -> None:
    desk.raise_("GOOD", "SO-1", "50000.00")  # approved at once: reserves 50,000 of the limit
    with read_session(desk.engine) as s:
        customers = {c.code: c for c in s.execute(select(Customer)).scalars()}
        good = credit_position(s, customers["GOOD"], AS_OF)
        late = credit_position(s, customers["LATE"], AS_OF)
        newco = credit_position(s, customers["NEWCO"], AS_OF)
        newco_later = credit_position(s, customers["NEWCO"], date(2027, 3, 2))
    assert (good.open_receivables, good.overdue_beyond_terms, good.approved_unshipped) == (
        Decimal("100000.00"),
        Decimal("0.00"),
        Decimal("50000.00"),
    )
    assert (late.open_receivables, late.overdue_beyond_terms) == (
        Decimal("20000.00"),
        Decimal("20000.00"),
    )
    assert newco.on_probation and not newco_later.on_probation
    assert isinstance(good.open_receivables, Decimal)


def test_an_invoice_for_the_order_ends_its_reservation(desk: Desk) -> None:
    result = desk.raise_("GOOD", "SO-9", "50000.00")
    with write_session(desk.engine) as s:
        pushed = approvals.upsert_invoices(
            s,
            [
                {
                    "number": "GOOD-SO-9",
                    "customer": "GOOD",
                    "issue_date": AS_OF,
                    "due_date": AS_OF + timedelta(days=30),
                    "amount": Decimal("50000.00"),
                    "order_ref": "SO-9",
                }
            ],
            NOW,
        )
    assert (pushed.created, pushed.shipped) == (1, (result.request_id,))
    with read_session(desk.engine) as s:
        good = s.execute(select(Customer).where(Customer.code == "GOOD")).scalar_one()
        position = credit_position(s, good, AS_OF)
    # now an open invoice instead of an approved, unshipped request: counted once
    assert (position.open_receivables, position.approved_unshipped) == (
        Decimal("150000.00"),
        Decimal("0.00"),
    )
    assert desk.request(result.request_id)["shipped_at"] == NOW.isoformat()
    assert ("erp", "shipment.shipped", "api") in desk.audit(result.request_id)


# --- raising -------------------------------------------------------------------------------------


def test_within_policy_is_approved_at_once_with_its_reasons(desk: Desk) -> None:
    result = desk.raise_("GOOD", "SO-1", "125000.00", requested_by_code="rep1")
    assert (result.status, result.created, result.reasons, result.levels) == (
        "approved",
        True,
        ("within_policy",),
        (),
    )
    shown = desk.request(result.request_id)
    assert shown["status"] == "approved" and shown["approvals"] == []
    assert (shown["exposure"], shown["excess"], shown["credit_limit"]) == (
        "225000.00",
        "0.00",
        "1000000.00",
    )
    assert shown["decided_at"] == NOW.isoformat() and shown["expires_at"] is None
    assert desk.audit(result.request_id) == [("rep1", "shipment.raise", "api")]
    (callback,) = desk.outbox("erp_callback")
    assert (callback.channel, callback.idempotency_key, callback.recipient_id) == (
        "erp",
        f"erp_callback:{result.request_id}:approved",
        None,
    )
    assert callback.payload["body"]["status"] == "approved"
    assert desk.outbox("approval_decided") == []  # the answer was given at once


def test_without_a_callback_url_nothing_is_queued(desk: Desk) -> None:
    desk.raise_("GOOD", "SO-1", "1000.00", callback_url=None)
    assert desk.outbox() == []


def test_a_blacklisted_customer_is_refused_outright(desk: Desk) -> None:
    result = desk.raise_("BLACK", "SO-1", "10.00")
    assert result.status == "refused" and "blacklisted" in result.reasons
    with read_session(desk.engine) as s:
        assert s.execute(select(func.count()).select_from(Approval)).scalar_one() == 0
    (callback,) = desk.outbox("erp_callback")
    assert callback.idempotency_key == f"erp_callback:{result.request_id}:refused"
    assert callback.payload["body"]["reasons"] == list(result.reasons)
    # nobody can approve it
    assert desk.decide(result.request_id, "exec") == DecisionResult(
        result.request_id, False, "refused", decided_by_name=None, level=None
    )


@pytest.mark.parametrize(
    ("customer", "amount", "reasons", "levels", "roles"),
    [
        ("OVER", "40000.00", ("over_limit",), (0,), ["regional_manager"]),
        ("OVER", "160000.00", ("over_limit",), (1,), ["credit_manager"]),
        ("OVER", "400000.00", ("over_limit",), (2,), ["executive"]),
        ("LATE", "1000.00", ("over_term",), (0,), ["regional_manager"]),
        ("NEWCO", "1000.00", ("probation",), (0,), ["regional_manager"]),
    ],
)
def test_a_request_outside_policy_waits_for_the_level_that_covers_it(
    desk: Desk,
    customer: str,
    amount: str,
    reasons: tuple[str, ...],
    levels: tuple[int, ...],
    roles: list[str],
) -> None:
    result = desk.raise_(customer, "SO-1", amount)
    assert (result.status, result.reasons, result.levels) == ("pending", reasons, levels)
    shown = desk.request(result.request_id)
    assert [a["role"] for a in shown["approvals"]] == roles
    assert all(a["decision"] is None for a in shown["approvals"])
    assert shown["expires_at"] == (NOW + timedelta(hours=72)).isoformat()
    assert desk.outbox() == []  # nothing to tell anyone yet
    with read_session(desk.engine) as s:  # the App Home's view sees it
        cm = s.get(Person, desk.people["cm"])
        assert pending_approvals(s, actor_of(cm)).count == 1  # type: ignore[arg-type]


def test_a_chain_needs_every_level_up_to_the_deciding_one(engine: Engine) -> None:
    desk = Desk(engine, build_ledger(engine), settings(chain=True))
    result = desk.raise_("OVER", "SO-1", "160000.00")
    assert result.levels == (0, 1)
    first = desk.decide(result.request_id, "rmn")
    assert (first.won, first.status, first.level, first.final) == (True, "pending", 0, False)
    assert desk.outbox() == []
    final = desk.decide(result.request_id, "cm", now=NOW + timedelta(hours=2))
    assert (final.won, final.status, final.level, final.final) == (True, "approved", 1, True)
    second = desk.decide(result.request_id, "cm", now=NOW + timedelta(hours=3))
    assert (second.won, second.status, second.decided_by_name) == (False, "approved", "Carl Credit")


def test_a_chain_refuses_a_second_signature_by_the_same_person(engine: Engine) -> None:
    desk = Desk(engine, build_ledger(engine), settings(chain=True))
    result = desk.raise_("OVER", "SO-1", "160000.00")
    assert desk.decide(result.request_id, "cm").won  # level 0, by a higher authority
    again = desk.decide(result.request_id, "cm")
    assert (again.won, again.refusal, again.level, again.status) == (
        False,
        "second_signature",
        1,
        "pending",
    )
    final = desk.decide(result.request_id, "cm2")
    assert (final.won, final.status, final.final) == (True, "approved", True)
    shown = desk.request(result.request_id)
    assert [(a["level"], a["approver"]["code"]) for a in shown["approvals"]] == [
        (0, "cm"),
        (1, "cm2"),
    ]


def test_the_same_order_again_is_the_same_request_and_another_amount_conflicts(
    desk: Desk,
) -> None:
    first = desk.raise_("OVER", "SO-1", "40000.00")
    again = desk.raise_("OVER", "SO-1", "40000.00", now=NOW + timedelta(minutes=5))
    assert (again.request_id, again.created, again.status, again.levels) == (
        first.request_id,
        False,
        "pending",
        (0,),
    )
    with pytest.raises(DuplicateOrder) as info:
        desk.raise_("OVER", "SO-1", "41000.00")
    assert info.value.existing_id == first.request_id
    with read_session(desk.engine) as s:
        assert s.execute(select(func.count()).select_from(ShipmentRequest)).scalar_one() == 1
    assert desk.audit(first.request_id) == [("erp", "shipment.raise", "api")]


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"currency": "USD"}, "currency"),
        ({"currency": "usdx"}, "currency"),
        ({"requested_by_code": "nobody"}, "requested_by"),
        ({"callback_url": "ftp://erp/x"}, "callback_url"),
        ({"order_ref": "  "}, "order_ref"),
        ({"amount": "0"}, "amount"),
        ({"amount": "1.001"}, "amount"),
    ],
)
def test_bad_input_names_the_field(desk: Desk, kw: dict[str, Any], field: str) -> None:
    kw = dict(kw)  # the parameter is shared by the SQLite and PostgreSQL runs
    order = kw.pop("order_ref", "SO-1")
    amount = kw.pop("amount", "10.00")
    with pytest.raises(ApprovalError) as info:
        desk.raise_("GOOD", order, amount, **kw)
    assert info.value.field == field


def test_an_unknown_customer_is_a_lookup_error(desk: Desk) -> None:
    with pytest.raises(UnknownCustomer):
        desk.raise_("NOPE", "SO-1", "10.00")
    with pytest.raises(UnknownRequest), read_session(desk.engine) as s:
        get_request(s, 999)


# --- who may decide ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("customer", "amount", "who", "requester", "refusal"),
    [
        ("OVER", "40000.00", "rms", None, "other_region"),  # North customer, South manager
        ("OVER", "160000.00", "rmn", None, "above_authority"),  # needs a credit manager
        ("OVER", "40000.00", "cm", "cm", "own_request"),  # raised it herself
        ("OVER", "40000.00", "rep1", None, "own_request"),  # the customer's rep
        ("OVER", "40000.00", "fin", None, "not_an_approver"),
        ("OVER", "40000.00", "cmx", None, "inactive"),
    ],
)
def test_a_person_who_may_not_decide_is_refused_audited_and_nothing_changes(
    desk: Desk, customer: str, amount: str, who: str, requester: str | None, refusal: str
) -> None:
    result = desk.raise_(customer, "SO-1", amount, requested_by_code=requester)
    before = desk.request(result.request_id)
    outcome = desk.decide(result.request_id, who)
    assert (outcome.won, outcome.refusal, outcome.status) == (False, refusal, "pending")
    assert desk.request(result.request_id) == before
    assert desk.audit(result.request_id)[-1] == (who, "shipment.decide.refused", "slack")
    assert desk.audit_after(result.request_id, "shipment.decide.refused")[0]["refusal"] == refusal
    assert desk.outbox() == []


def test_a_rejection_needs_a_reason(desk: Desk) -> None:
    result = desk.raise_("OVER", "SO-1", "40000.00")
    with pytest.raises(ApprovalError) as info:
        desk.decide(result.request_id, "rmn", "reject", reason="  ")
    assert info.value.field == "reason"
    rejected = desk.decide(result.request_id, "rmn", "reject", reason="two invoices unpaid")
    assert (rejected.won, rejected.status, rejected.final) == (True, "rejected", True)
    body = desk.outbox("erp_callback")[0].payload["body"]
    assert (body["status"], body["reason"], body["decided_by"]) == (
        "rejected",
        "two invoices unpaid",
        "rmn",
    )


def test_an_approval_goes_back_to_the_erp_and_to_the_requester(desk: Desk) -> None:
    result = desk.raise_("OVER", "SO-1", "40000.00", requested_by_code="rep1")
    outcome = desk.decide(result.request_id, "rmn")
    assert (outcome.won, outcome.status, outcome.level, outcome.final) == (
        True,
        "approved",
        0,
        True,
    )
    shown = desk.request(result.request_id)
    assert shown["decided_by"] == {"code": "rmn", "name": "Nina North"}
    assert shown["version"] == 1
    (approval,) = shown["approvals"]
    assert (approval["decision"], approval["channel"], approval["approver"]["code"]) == (
        "approve",
        "slack",
        "rmn",
    )
    (callback,) = desk.outbox("erp_callback")
    body = callback.payload["body"]
    assert callback.payload["callback_url"] == CALLBACK_URL
    assert callback.idempotency_key == f"erp_callback:{result.request_id}:approved"
    assert body == {
        "event": "shipment_request.decided",
        "idempotency_key": callback.idempotency_key,
        "request_id": result.request_id,
        "customer_code": "OVER",
        "order_ref": "SO-1",
        "amount": "40000.00",
        "currency": "CNY",
        "status": "approved",
        "reasons": ["over_limit"],
        "decided_at": (NOW + timedelta(hours=1)).isoformat(),
        "decided_by": "rmn",
        "decided_by_name": "Nina North",
        "reason": None,
    }
    raw = encode_body(body)  # what the transport sends, and the ERP verifies
    assert verify(CALLBACK_SECRET, raw, sign(CALLBACK_SECRET, raw))
    assert not verify("another-secret", raw, sign(CALLBACK_SECRET, raw))
    (notice,) = desk.outbox("approval_decided")
    assert (notice.recipient_id, notice.channel) == (desk.people["rep1"], "console")
    assert notice.payload["decision"] == "approved"
    assert notice.payload["by"] == {"code": "rmn", "name": "Nina North"}
    assert desk.audit(result.request_id) == [
        ("rep1", "shipment.raise", "api"),
        ("rmn", "shipment.approve", "slack"),
    ]


def test_pressing_twice_decides_once_and_says_who(desk: Desk) -> None:
    result = desk.raise_("OVER", "SO-1", "40000.00")
    assert desk.decide(result.request_id, "rmn").won
    again = desk.decide(result.request_id, "rmn", "reject")
    assert (again.won, again.status, again.decided_by_name) == (False, "approved", "Nina North")
    late = desk.decide(result.request_id, "cm")
    assert (late.won, late.decided_by_name) == (False, "Nina North")
    assert len(desk.outbox("erp_callback")) == 1
    assert [a for _, a, _ in desk.audit(result.request_id)].count("shipment.decide.lost") == 2


def test_two_approvers_at_the_same_moment_one_wins_the_other_learns_who(desk: Desk) -> None:
    result = desk.raise_("OVER", "SO-1", "40000.00")
    rid = result.request_id
    outcomes = together(
        [lambda: desk.decide(rid, "rmn", "approve"), lambda: desk.decide(rid, "cm", "reject")]
    )
    winners = [o for o in outcomes if o.won]
    losers = [o for o in outcomes if not o.won]
    assert len(winners) == 1 and len(losers) == 1
    shown = desk.request(rid)
    assert shown["status"] == winners[0].status
    assert losers[0].status == shown["status"]
    assert losers[0].decided_by_name == shown["decided_by"]["name"]
    assert [a["decision"] for a in shown["approvals"]] == [
        "approve" if shown["status"] == "approved" else "reject"
    ]
    assert [m.idempotency_key for m in desk.outbox("erp_callback")] == [
        f"erp_callback:{rid}:{shown['status']}"
    ]


def test_ten_concurrent_decisions_make_exactly_one(desk: Desk) -> None:
    rid = desk.raise_("OVER", "SO-1", "40000.00").request_id
    who = (["rmn", "cm", "cm2", "exec"] * 3)[:10]  # some press twice; approve and reject mixed
    calls = [
        (lambda w=w, d=("approve" if i % 2 else "reject"): desk.decide(rid, w, d))
        for i, w in enumerate(who)
    ]
    outcomes = together(calls)
    assert sum(o.won for o in outcomes) == 1
    shown = desk.request(rid)
    winner = shown["decided_by"]["name"]
    assert shown["status"] in ("approved", "rejected") and shown["version"] == 1
    for o in outcomes:
        if not o.won:
            assert (o.status, o.decided_by_name, o.refusal) == (shown["status"], winner, None)
    assert sum(a["decision"] is not None for a in shown["approvals"]) == 1
    assert len(desk.outbox("erp_callback")) == 1
    actions = [a for _, a, _ in desk.audit(rid)]
    assert actions.count("shipment.decide.lost") == 9
    assert actions.count("shipment.approve") + actions.count("shipment.reject") == 1


# --- stale requests ------------------------------------------------------------------------------


def test_an_expired_request_is_refused_instead_of_decided(desk: Desk) -> None:
    rid = desk.raise_("OVER", "SO-1", "40000.00").request_id
    late = desk.decide(rid, "rmn", now=NOW + timedelta(hours=72, seconds=1))
    assert (late.won, late.refusal, late.status) == (False, "expired", "pending")
    assert desk.outbox() == []
    on_time = desk.decide(rid, "rmn", now=NOW + timedelta(hours=72))
    assert on_time.won


def test_a_changed_limit_since_the_request_refuses_the_decision(desk: Desk) -> None:
    rid = desk.raise_("OVER", "SO-1", "40000.00").request_id
    with write_session(desk.engine) as s:
        s.execute(
            update(Customer).where(Customer.code == "OVER").values(credit_limit=Decimal("60000.00"))
        )
    outcome = desk.decide(rid, "rmn")
    assert (outcome.won, outcome.refusal) == (False, "limit_changed")
    assert desk.request(rid)["status"] == "pending"


def test_expire_requests_lapses_pending_ones_once_and_tells_the_erp(desk: Desk) -> None:
    old = desk.raise_("OVER", "SO-1", "40000.00", requested_by_code="rep1").request_id
    newer = desk.raise_("LATE", "SO-2", "1000.00", now=NOW + timedelta(hours=10)).request_id
    decided = desk.raise_("OVER", "SO-3", "1.00").request_id
    desk.decide(decided, "rmn")
    moment = NOW + timedelta(hours=73)
    with write_session(desk.engine) as s:
        assert expire_requests(s, moment, desk.settings) == [old]
    with write_session(desk.engine) as s:
        assert expire_requests(s, moment, desk.settings) == []
    assert desk.request(old)["status"] == "expired"
    assert desk.request(newer)["status"] == "pending"
    assert [m.idempotency_key for m in desk.outbox("erp_callback")] == [
        f"erp_callback:{decided}:approved",
        f"erp_callback:{old}:expired",
    ]
    assert [m.payload["decision"] for m in desk.outbox("approval_decided")] == ["expired"]
    assert desk.audit(old)[-1] == ("scheduler", "shipment.expire", "scheduler")
    stale = desk.decide(old, "rmn", now=moment)
    assert (stale.won, stale.status, stale.decided_by_name) == (False, "expired", None)
