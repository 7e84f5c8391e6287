"""Read-only views of the ledger for one person: what the Slack App Home and ``/credit`` show.

Each function takes a session and returns plain dataclasses. Who sees what follows
``credit.permissions.may_view``, written as a SQL filter on the customer (``visible_to``): a
rep sees their customers, a regional manager their region, the company-wide desks
everything, an inactive person nothing. Totals are computed by the database (GROUP BY), per
currency: amounts in different currencies are never added together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, case, false, func, literal, select, true
from sqlmodel import Session

from credit.aging import Bucket, TierTable
from credit.permissions import COMPANY_WIDE_ROLES, Actor, CustomerScope, may_view
from credit.store.models import Customer, Invoice, Person, PromiseToPay, ShipmentRequest
from credit.store.sqlfuncs import days_since

MOST_OVERDUE = 5
PROMISE_HORIZON_DAYS = 7
PENDING_LISTED = 10


def actor_of(person: Person) -> Actor:
    assert person.id is not None
    return Actor(person.id, person.role, person.region_id, person.active)


def visible_to(actor: Actor) -> ColumnElement[bool]:
    """``may_view(actor, customer)`` as a filter on ``Customer`` (keep the two in step)."""
    if not actor.active:
        return false()
    if actor.role in COMPANY_WIDE_ROLES:
        return true()
    if actor.role == "regional_manager":
        return false() if actor.region_id is None else Customer.region_id == actor.region_id
    if actor.role == "rep":
        return Customer.rep_id == actor.id
    return false()


def person_by_slack_id(session: Session, slack_user: str) -> Person | None:
    return session.execute(
        select(Person).where(Person.slack_user_id == slack_user)
    ).scalar_one_or_none()


def _add(totals: dict[str, Decimal], currency: str, amount: Decimal | None) -> None:
    totals[currency] = totals.get(currency, Decimal("0.00")) + (amount or Decimal("0.00"))


def _grouped(inner: Any, key: str) -> Any:
    """``key, currency, count, sum(open_amount)`` of a subquery, grouped by key and currency
    (grouping a subquery's column, not a CASE with bound parameters, reads the same on both
    engines)."""
    col = inner.c[key]
    return select(col, inner.c.currency, func.count(), func.sum(inner.c.open_amount)).group_by(
        col, inner.c.currency
    )


# --- App Home: open receivables by tier --------------------------------------------------------


@dataclass(frozen=True)
class TierTotal:
    tier: str
    count: int = 0
    totals: dict[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True)
class OverdueLine:
    number: str
    customer_code: str
    customer_name: str
    due_date: date
    days: int
    open_amount: Decimal
    currency: str
    disputed: bool


@dataclass(frozen=True)
class Receivables:
    tiers: list[TierTotal]
    most_overdue: list[OverdueLine]


def _due_between(earliest: date | None, latest: date | None) -> ColumnElement[bool]:
    cond: ColumnElement[bool] = true()
    if latest is not None:
        cond = and_(cond, Invoice.due_date <= latest)
    if earliest is not None:
        cond = and_(cond, Invoice.due_date >= earliest)
    return cond


def _tier_case(tiers: TierTable, as_of: date) -> ColumnElement[int]:
    """The tier's position for an invoice (by due-date range, as the scan does), else NULL."""
    whens = [
        (_due_between(*tier.due_date_range(as_of)), literal(i))
        for i, tier in enumerate(tiers.tiers)
    ]
    return case(*whens, else_=None)


def receivables_by_tier(
    session: Session, actor: Actor, tiers: TierTable, as_of: date, *, most: int = MOST_OVERDUE
) -> Receivables:
    """Open invoices the actor may see, per tier (count, total per currency), and the
    ``most`` most overdue of them. Invoices not yet in any tier's window are left out."""
    tier_no = _tier_case(tiers, as_of).label("tier_no")
    scoped = and_(Invoice.open_amount > 0, visible_to(actor))
    inner = (
        select(tier_no, Invoice.currency, Invoice.open_amount)
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(scoped)
        .subquery()
    )
    rows = session.execute(_grouped(inner, "tier_no")).all()
    counts: dict[int, int] = {}
    totals: dict[int, dict[str, Decimal]] = {}
    for no, currency, n, total in rows:
        if no is None:
            continue
        counts[no] = counts.get(no, 0) + int(n)
        _add(totals.setdefault(no, {}), currency, total)
    per_tier = [
        TierTotal(t.name, counts.get(i, 0), totals.get(i, {})) for i, t in enumerate(tiers.tiers)
    ]
    days = days_since(Invoice.due_date, as_of)
    overdue = session.execute(
        select(
            Invoice.number,
            Customer.code,
            Customer.name,
            Invoice.due_date,
            days,
            Invoice.open_amount,
            Invoice.currency,
            Invoice.disputed,
        )
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(scoped, Invoice.due_date < as_of)
        .order_by(Invoice.due_date, Invoice.number)
        .limit(most)
    ).all()
    return Receivables(per_tier, [OverdueLine(*row) for row in overdue])


# --- App Home: promises due and pending approvals ------------------------------------------


@dataclass(frozen=True)
class PromiseDue:
    invoice: str
    customer_code: str
    customer_name: str
    promised_date: date
    amount: Decimal
    currency: str


def promises_due(
    session: Session, actor: Actor, as_of: date, *, days: int = PROMISE_HORIZON_DAYS
) -> list[PromiseDue]:
    """Open promises on invoices the actor may see, due from ``as_of`` to ``as_of + days``."""
    rows = session.execute(
        select(
            Invoice.number,
            Customer.code,
            Customer.name,
            PromiseToPay.promised_date,
            PromiseToPay.amount,
            PromiseToPay.currency,
        )
        .join(Invoice, Invoice.id == PromiseToPay.invoice_id)
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(
            PromiseToPay.status == "open",
            PromiseToPay.promised_date >= as_of,
            PromiseToPay.promised_date <= as_of + timedelta(days=days),
            visible_to(actor),
        )
        .order_by(PromiseToPay.promised_date, Invoice.number)
    ).all()
    return [PromiseDue(*row) for row in rows]


@dataclass(frozen=True)
class PendingRequest:
    order_ref: str
    customer_code: str
    customer_name: str
    amount: Decimal
    currency: str


@dataclass(frozen=True)
class PendingApprovals:
    count: int
    listed: list[PendingRequest]


def pending_approvals(
    session: Session, actor: Actor, *, listed: int = PENDING_LISTED
) -> PendingApprovals:
    """Shipment requests still ``pending`` for customers the actor may see."""
    where = and_(ShipmentRequest.status == "pending", visible_to(actor))
    joined = Customer.id == ShipmentRequest.customer_id
    count = session.execute(
        select(func.count()).select_from(ShipmentRequest).join(Customer, joined).where(where)
    ).scalar_one()
    rows = session.execute(
        select(
            ShipmentRequest.order_ref,
            Customer.code,
            Customer.name,
            ShipmentRequest.amount,
            ShipmentRequest.currency,
        )
        .join(Customer, joined)
        .where(where)
        .order_by(ShipmentRequest.created_at, ShipmentRequest.id)
        .limit(listed)
    ).all()
    return PendingApprovals(int(count), [PendingRequest(*row) for row in rows])


# --- /credit: one customer's credit file -------------------------------------------------------


def find_customers(session: Session, query: str) -> list[Customer]:
    """The customer with this code, else the customers with exactly this name (any case)."""
    query = query.strip()
    if not query:
        return []
    by_code = session.execute(select(Customer).where(Customer.code == query)).scalars().all()
    if by_code:
        return list(by_code)
    return list(
        session.execute(
            select(Customer)
            .where(func.lower(Customer.name) == query.lower())
            .order_by(Customer.code)
        ).scalars()
    )


def may_view_customer(actor: Actor, customer: Customer) -> bool:
    return may_view(actor, CustomerScope(customer.rep_id, customer.region_id))


@dataclass(frozen=True)
class CreditFile:
    code: str
    name: str
    rating: str
    credit_limit: Decimal
    currency: str
    exposure: dict[str, Decimal]
    open_invoices: int
    aging: list[tuple[str, dict[str, Decimal]]]  # bucket label → totals per currency
    credit_hold: bool
    credit_hold_reason: str | None
    blacklisted: bool
    probation_until: date | None
    on_probation: bool


def credit_file(
    session: Session, customer: Customer, as_of: date, buckets: Sequence[Bucket]
) -> CreditFile:
    """Rating, limit, exposure (open receivables) and aging by bucket of one customer."""
    whens = []
    for i, bucket in enumerate(buckets):
        latest = None if bucket.min_days is None else as_of - timedelta(days=bucket.min_days)
        earliest = None if bucket.max_days is None else as_of - timedelta(days=bucket.max_days)
        whens.append((_due_between(earliest, latest), literal(i)))
    bucket_no = case(*whens, else_=None).label("bucket_no")
    inner = (
        select(bucket_no, Invoice.currency, Invoice.open_amount)
        .where(Invoice.customer_id == customer.id, Invoice.open_amount > 0)
        .subquery()
    )
    rows = session.execute(_grouped(inner, "bucket_no")).all()
    exposure: dict[str, Decimal] = {}
    aging: list[dict[str, Decimal]] = [{} for _ in buckets]
    count = 0
    for no, currency, n, total in rows:
        count += int(n)
        _add(exposure, currency, total)
        if no is not None:  # make_buckets covers every day; None only for odd buckets
            _add(aging[no], currency, total)
    return CreditFile(
        code=customer.code,
        name=customer.name,
        rating=customer.rating,
        credit_limit=customer.credit_limit,
        currency=customer.currency,
        exposure=exposure,
        open_invoices=count,
        aging=[(b.label, totals) for b, totals in zip(buckets, aging, strict=True)],
        credit_hold=customer.credit_hold,
        credit_hold_reason=customer.credit_hold_reason,
        blacklisted=customer.blacklisted,
        probation_until=customer.probation_until,
        on_probation=customer.probation_until is not None and customer.probation_until >= as_of,
    )


__all__ = [
    "CreditFile",
    "OverdueLine",
    "PendingApprovals",
    "PendingRequest",
    "PromiseDue",
    "Receivables",
    "TierTotal",
    "actor_of",
    "credit_file",
    "find_customers",
    "may_view_customer",
    "pending_approvals",
    "person_by_slack_id",
    "promises_due",
    "receivables_by_tier",
    "visible_to",
]
