"""What people do about a reminder: acknowledge, promise to pay, dispute, snooze.

Each is a session-taking service function used by the CLI and the chat apps alike. Every
call is checked (the person may act on that customer) and audited, refusals included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from credit.aging import TierTable, days_past_due
from credit.money import check_currency
from credit.permissions import Actor, CustomerScope, may_act_on
from credit.store.models import (
    AuditLog,
    Customer,
    Invoice,
    InvoiceAck,
    InvoiceSnooze,
    Person,
    PromiseToPay,
)
from credit.store.types import utcnow

# how far ahead a promised payment date may be (from any channel)
PROMISE_MAX_DAYS = 366


class ActionError(ValueError):
    """The action cannot be done as asked (unknown invoice, bad date, …)."""


class NotAllowed(PermissionError):
    """The person may not act on this customer.

    The caller's transaction is rolled back, so the refusal is audited in a transaction of
    its own: ``record_refusal(engine, exc)``."""

    def __init__(
        self,
        message: str,
        *,
        actor: str,
        action: str,
        invoice: str,
        customer: str | None,
        channel: str,
        at: datetime | None,
    ) -> None:
        super().__init__(message)
        self.actor, self.action, self.invoice = actor, action, invoice
        self.customer, self.channel, self.at = customer, channel, at


def refusal_entry(exc: NotAllowed) -> AuditLog:
    """The audit entry for a refused action (for a caller that commits it in its own session)."""
    return AuditLog(
        actor=exc.actor,
        action=f"{exc.action}.refused",
        entity="invoice",
        entity_id=exc.invoice,
        channel=exc.channel,
        at=exc.at or utcnow(),
        after={"reason": str(exc), "customer": exc.customer},
    )


def record_refusal(engine: Any, exc: NotAllowed) -> None:
    """Append the audit entry for a refused action (its own committed transaction)."""
    from credit.store.db import write_session

    with write_session(engine) as session:
        session.add(refusal_entry(exc))


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: str
    invoice: str
    customer: str
    by: str
    detail: str
    changed: bool = True


def _load(
    session: Session,
    action: str,
    invoice_number: str,
    person_code: str,
    channel: str,
    now: datetime,
) -> tuple[Invoice, Customer, Person]:
    """The invoice, its customer and the acting person — who must be allowed to act on it."""
    invoice = session.execute(
        select(Invoice).where(Invoice.number == invoice_number)
    ).scalar_one_or_none()
    if invoice is None:
        raise ActionError(f"no invoice {invoice_number!r}")
    customer = session.get(Customer, invoice.customer_id)
    assert customer is not None  # foreign key
    person = session.execute(select(Person).where(Person.code == person_code)).scalar_one_or_none()
    refusal = {
        "actor": person_code,
        "action": action,
        "invoice": invoice.number,
        "customer": customer.code,
        "channel": channel,
        "at": now,
    }
    if person is None:
        raise NotAllowed(f"unknown person {person_code!r}", **refusal)
    actor = Actor(person.id, person.role, person.region_id, person.active)
    if not may_act_on(actor, CustomerScope(customer.rep_id, customer.region_id)):
        raise NotAllowed(f"{person.code} may not act on customer {customer.code}", **refusal)
    return invoice, customer, person


def _audit(
    session: Session,
    person: Person,
    action: str,
    invoice: Invoice,
    channel: str,
    now: datetime,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Append the audit entry of an action on an invoice."""
    session.add(
        AuditLog(
            actor=person.code,
            action=action,
            entity="invoice",
            entity_id=invoice.number,
            channel=channel,
            at=now,
            before=before,
            after=after,
        )
    )


def acknowledge(
    session: Session,
    invoice_number: str,
    person_code: str,
    *,
    tiers: TierTable,
    as_of: date,
    now: datetime,
    channel: str = "cli",
) -> ActionResult:
    """Acknowledge the reminder for the invoice's current tier (idempotent)."""
    invoice, customer, person = _load(session, "ack", invoice_number, person_code, channel, now)
    tier = tiers.tier_of(invoice.due_date, as_of)
    tier_name = tier.name if tier else "none"
    existing = session.execute(
        select(InvoiceAck).where(InvoiceAck.invoice_id == invoice.id, InvoiceAck.tier == tier_name)
    ).scalar_one_or_none()
    if existing is not None:
        return ActionResult(
            "ack",
            invoice.number,
            customer.code,
            person.code,
            f"already acknowledged in {tier_name}",
            changed=False,
        )
    session.add(
        InvoiceAck(
            invoice_id=invoice.id,
            tier=tier_name,
            person_id=person.id,
            channel=channel,
            acknowledged_at=now,
        )
    )
    _audit(
        session,
        person,
        "ack",
        invoice,
        channel,
        now,
        after={"tier": tier_name},
    )
    return ActionResult(
        "ack", invoice.number, customer.code, person.code, f"acknowledged ({tier_name})"
    )


def promise_to_pay(
    session: Session,
    invoice_number: str,
    person_code: str,
    *,
    promised_date: date,
    amount: Decimal | None,
    today: date,
    now: datetime,
    note: str | None = None,
    currency: str | None = None,
    channel: str = "cli",
) -> ActionResult:
    """Record the customer's promise to pay (by a date, an amount — default: all that is open).

    An open promise silences the invoice's reminders until the promised date plus grace.
    A newer promise replaces an open one (the old one is marked cancelled)."""
    invoice, customer, person = _load(session, "promise", invoice_number, person_code, channel, now)
    if invoice.open_amount <= 0:
        raise ActionError(f"invoice {invoice.number} is paid; nothing to promise")
    if promised_date < today:
        raise ActionError(f"the promised date {promised_date} is in the past")
    if promised_date > today + timedelta(days=PROMISE_MAX_DAYS):
        raise ActionError("the promised date is more than a year away")
    amount = invoice.open_amount if amount is None else amount
    if amount <= 0 or amount > invoice.open_amount:
        raise ActionError(
            f"the promised amount must be between 0.01 and the open "
            f"{invoice.open_amount} {invoice.currency}"
        )
    if currency is not None and check_currency(currency) != invoice.currency:
        raise ActionError(f"invoice {invoice.number} is in {invoice.currency}, not {currency}")
    replaced = (
        session.execute(
            select(PromiseToPay).where(
                PromiseToPay.invoice_id == invoice.id, PromiseToPay.status == "open"
            )
        )
        .scalars()
        .all()
    )
    for old in replaced:
        old.status = "cancelled"
        session.add(old)
    promise = PromiseToPay(
        invoice_id=invoice.id,
        promised_date=promised_date,
        amount=amount,
        currency=invoice.currency,
        note=note,
        recorded_by_id=person.id,
        created_at=now,
    )
    session.add(promise)
    session.flush()
    _audit(
        session,
        person,
        "promise",
        invoice,
        channel,
        now,
        before={"replaced": [p.id for p in replaced]} if replaced else None,
        after={
            "promise_id": promise.id,
            "date": promised_date.isoformat(),
            "amount": str(amount),
            "currency": invoice.currency,
            "note": note,
        },
    )
    return ActionResult(
        "promise",
        invoice.number,
        customer.code,
        person.code,
        f"promised {amount} {invoice.currency} by {promised_date}",
    )


def dispute(
    session: Session,
    invoice_number: str,
    person_code: str,
    *,
    reason: str,
    now: datetime,
    channel: str = "cli",
) -> ActionResult:
    """Mark the invoice disputed: its reminders go to the credit desk instead of the rep."""
    reason = (reason or "").strip()
    if not reason:
        raise ActionError("a dispute needs a reason")
    invoice, customer, person = _load(session, "dispute", invoice_number, person_code, channel, now)
    before = {"disputed": invoice.disputed, "reason": invoice.dispute_reason}
    invoice.disputed, invoice.dispute_reason = True, reason[:1000]
    session.add(invoice)
    _audit(
        session,
        person,
        "dispute",
        invoice,
        channel,
        now,
        before=before,
        after={"disputed": True, "reason": invoice.dispute_reason},
    )
    return ActionResult(
        "dispute",
        invoice.number,
        customer.code,
        person.code,
        f"disputed: {invoice.dispute_reason}",
        changed=not before["disputed"],
    )


def snooze(
    session: Session,
    invoice_number: str,
    person_code: str,
    *,
    until: date,
    today: date,
    now: datetime,
    channel: str = "cli",
    max_days: int = 14,
) -> ActionResult:
    """Pause the invoice's reminders until ``until`` (at most ``max_days`` ahead)."""
    invoice, customer, person = _load(session, "snooze", invoice_number, person_code, channel, now)
    if until <= today or (until - today).days > max_days:
        raise ActionError(f"snooze until a date 1 to {max_days} days ahead")
    row = session.execute(
        select(InvoiceSnooze).where(InvoiceSnooze.invoice_id == invoice.id)
    ).scalar_one_or_none()
    before = {"until": row.until.isoformat()} if row else None
    if row is None:
        row = InvoiceSnooze(invoice_id=invoice.id, until=until, person_id=person.id, created_at=now)
    row.until, row.person_id = until, person.id
    session.add(row)
    _audit(
        session,
        person,
        "snooze",
        invoice,
        channel,
        now,
        before=before,
        after={
            "until": until.isoformat(),
            "days_past_due": days_past_due(invoice.due_date, today),
        },
    )
    return ActionResult(
        "snooze", invoice.number, customer.code, person.code, f"snoozed until {until}"
    )
