"""The receivables scan as set-based SQL: which open invoice is in which tier, for whom.

Tiers are chosen with due-date ranges (``Tier.due_date_range``), so the database does the
work with an index on ``invoice.due_date`` and no per-invoice Python loop decides anything.
Recipients follow each tier's ``notify`` roles: ``rep`` is the customer's rep,
``regional_manager`` the managers of the customer's region, every other role the company's
people with that role.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from sqlalchemy import ColumnElement, and_, case, literal, or_, select, union_all
from sqlalchemy.orm import aliased
from sqlmodel import Session

from credit.aging import TierTable
from credit.store.models import Customer, Invoice, Person

REGIONAL_ROLES = ("regional_manager",)


@dataclass(frozen=True, slots=True)
class ReminderLine:
    number: str
    customer: str
    customer_name: str
    open_amount: Decimal
    currency: str
    days: int
    due_date: date
    disputed: bool


@dataclass(slots=True)
class Reminder:
    """What one person is told about one tier on one day."""

    recipient: str
    recipient_name: str
    role: str
    tier: str
    locale: str
    lines: list[ReminderLine] = field(default_factory=list)

    def totals(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for line in self.lines:
            out[line.currency] = out.get(line.currency, Decimal("0.00")) + line.open_amount
        return out

    def as_json(self) -> dict[str, object]:
        return {
            "recipient": self.recipient,
            "recipient_name": self.recipient_name,
            "role": self.role,
            "tier": self.tier,
            "invoices": [
                {
                    "number": ln.number,
                    "customer": ln.customer,
                    "customer_name": ln.customer_name,
                    "open_amount": str(ln.open_amount),
                    "currency": ln.currency,
                    "days": ln.days,
                    "due_date": ln.due_date.isoformat(),
                    "disputed": ln.disputed,
                }
                for ln in self.lines
            ],
            "totals": {cur: str(amount) for cur, amount in self.totals().items()},
        }


def tier_case(tiers: TierTable, as_of: date) -> ColumnElement[str]:
    """``CASE`` giving each invoice's tier name on ``as_of`` (NULL when in none)."""
    whens = []
    for tier in tiers.tiers:
        earliest, latest = tier.due_date_range(as_of)
        cond = Invoice.due_date <= latest
        if earliest is not None:
            cond = and_(cond, Invoice.due_date >= earliest)
        whens.append((cond, literal(tier.name)))
    return case(*whens, else_=None)


def _in_any_tier(tiers: TierTable, as_of: date) -> ColumnElement[bool]:
    """The due-date window covered by the tiers (they are contiguous by validation)."""
    first, last = tiers.tiers[0], tiers.tiers[-1]
    _, latest = first.due_date_range(as_of)
    earliest, _ = last.due_date_range(as_of)
    cond = Invoice.due_date <= latest
    return cond if earliest is None else and_(cond, Invoice.due_date >= earliest)


def tiered_invoices(tiers: TierTable, as_of: date):  # type: ignore[no-untyped-def]
    """A subquery of open invoices in a tier: id, tier, customer, rep and region."""
    return (
        select(
            Invoice.id.label("invoice_id"),
            tier_case(tiers, as_of).label("tier"),
            Customer.rep_id.label("rep_id"),
            Customer.region_id.label("region_id"),
        )
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(Invoice.open_amount > 0, _in_any_tier(tiers, as_of))
        .subquery("tiered")
    )


def recipients_query(tiers: TierTable, as_of: date):  # type: ignore[no-untyped-def]
    """(invoice_id, tier, person_id, role) for every invoice and every person to tell."""
    t = tiered_invoices(tiers, as_of)
    roles = sorted({role for tier in tiers.tiers for role in tier.notify})
    parts = []
    for role in roles:
        tier_names = [tier.name for tier in tiers.tiers if role in tier.notify]
        if role == "rep":
            parts.append(
                select(
                    t.c.invoice_id,
                    t.c.tier,
                    t.c.rep_id.label("person_id"),
                    literal("rep").label("role"),
                ).where(t.c.tier.in_(tier_names))
            )
            continue
        p = aliased(Person)
        on = and_(p.role == role, p.active)
        if role in REGIONAL_ROLES:
            on = and_(on, p.region_id == t.c.region_id)
        parts.append(
            select(t.c.invoice_id, t.c.tier, p.id.label("person_id"), literal(role).label("role"))
            .join(p, on)
            .where(t.c.tier.in_(tier_names))
        )
    return union_all(*parts).subquery("recipients")


def reminders_for(session: Session, tiers: TierTable, as_of: date) -> list[Reminder]:
    """Every reminder the scan would send on ``as_of``: one per person and tier.

    Ordered by recipient code, then tier order; lines most overdue first.
    """
    r = recipients_query(tiers, as_of)
    stmt = (
        select(
            Person.code,
            Person.name,
            Person.locale,
            r.c.role,
            r.c.tier,
            Invoice.number,
            Customer.code,
            Customer.name,
            Invoice.open_amount,
            Invoice.currency,
            Invoice.due_date,
            Invoice.disputed,
        )
        .select_from(r)
        .join(Person, Person.id == r.c.person_id)
        .join(Invoice, Invoice.id == r.c.invoice_id)
        .join(Customer, Customer.id == Invoice.customer_id)
        .where(or_(Person.active, r.c.role == "rep"))
        .order_by(Person.code, r.c.tier, Invoice.due_date, Invoice.number)
    )
    order = {name: i for i, name in enumerate(tiers.names)}
    grouped: dict[tuple[str, str, str], Reminder] = {}
    for (
        code,
        name,
        locale,
        role,
        tier,
        number,
        ccode,
        cname,
        open_amount,
        currency,
        due,
        disputed,
    ) in session.execute(stmt):
        key = (code, role, tier)
        reminder = grouped.get(key)
        if reminder is None:
            reminder = grouped[key] = Reminder(code, name, role, tier, locale)
        reminder.lines.append(
            ReminderLine(
                number, ccode, cname, open_amount, currency, (as_of - due).days, due, disputed
            )
        )
    return sorted(grouped.values(), key=lambda rm: (rm.recipient, order[rm.tier], rm.role))
