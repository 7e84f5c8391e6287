"""The ledger schema (SQLModel). Money is Decimal + currency; dates are dates; times UTC.

Natural keys (region code, person code, customer code, invoice number, payment reference)
are unique so imports can upsert by them. ``audit_log`` is append-only: the database itself
refuses UPDATE and DELETE on it (see ``credit.store.db.install_audit_guard``).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, Column, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from credit.aging import ROLES
from credit.store.types import MoneyAmount, UTCDateTime, utcnow

_ROLE_CHECK = "role IN (" + ", ".join(f"'{r}'" for r in ROLES) + ")"
RATINGS = ("A", "B", "C", "D", "X", "H")
_RATING_CHECK = "rating IN (" + ", ".join(f"'{r}'" for r in RATINGS) + ")"


def money(**kw: Any) -> Any:
    return Field(sa_type=MoneyAmount, **kw)


def utc(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


class Region(SQLModel, table=True):
    __tablename__ = "region"
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=200)


class Person(SQLModel, table=True):
    __tablename__ = "person"
    __table_args__ = (CheckConstraint(_ROLE_CHECK, name="ck_person_role"),)
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=200)
    role: str = Field(max_length=32)
    region_id: int | None = Field(default=None, foreign_key="region.id", index=True)
    manager_id: int | None = Field(default=None, foreign_key="person.id")
    email: str | None = Field(default=None, max_length=320)
    slack_user_id: str | None = Field(default=None, max_length=32, unique=True)
    telegram_chat_id: int | None = Field(default=None, sa_type=BigInteger, unique=True)
    locale: str = Field(default="en", max_length=16)
    time_zone: str = Field(default="Asia/Shanghai", max_length=64)
    active: bool = True
    unreachable_reason: str | None = Field(default=None, max_length=500)


class Customer(SQLModel, table=True):
    __tablename__ = "customer"
    __table_args__ = (CheckConstraint(_RATING_CHECK, name="ck_customer_rating"),)
    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=300)
    region_id: int = Field(foreign_key="region.id", index=True)
    rep_id: int = Field(foreign_key="person.id", index=True)
    rating: str = Field(default="C", max_length=1)
    credit_limit: Decimal = money(default=Decimal("0.00"))
    currency: str = Field(default="CNY", max_length=3)
    payment_terms_days: int = 30
    credit_hold: bool = False
    credit_hold_reason: str | None = Field(default=None, max_length=500)
    credit_hold_since: datetime | None = utc(default=None)
    # "scan" when the aging scan put the hold on (and may lift it), "manual" otherwise
    credit_hold_source: str | None = Field(default=None, max_length=16)
    probation_until: date | None = None
    blacklisted: bool = False


class Invoice(SQLModel, table=True):
    __tablename__ = "invoice"
    __table_args__ = (
        CheckConstraint("open_amount >= 0", name="ck_invoice_open_nonnegative"),
        CheckConstraint("open_amount <= amount", name="ck_invoice_open_le_amount"),
        Index("ix_invoice_open_due", "due_date", "customer_id"),
        # credit-hold checks: "does this customer have an undisputed open invoice due before
        # X?" is one probe of this (partial) index, not a visit to every invoice it has
        Index(
            "ix_invoice_customer_overdue",
            "customer_id",
            "due_date",
            postgresql_where=text("open_amount > 0 AND NOT disputed"),
            sqlite_where=text("open_amount > 0 AND disputed = 0"),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(max_length=64, unique=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    issue_date: date
    due_date: date
    amount: Decimal = money()
    open_amount: Decimal = money()
    currency: str = Field(max_length=3)
    disputed: bool = False
    dispute_reason: str | None = Field(default=None, max_length=1000)


class Payment(SQLModel, table=True):
    __tablename__ = "payment"
    __table_args__ = (CheckConstraint("amount > 0", name="ck_payment_positive"),)
    id: int | None = Field(default=None, primary_key=True)
    reference: str = Field(max_length=64, unique=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    invoice_id: int | None = Field(default=None, foreign_key="invoice.id", index=True)
    paid_on: date
    amount: Decimal = money()
    currency: str = Field(max_length=3)


class PromiseToPay(SQLModel, table=True):
    __tablename__ = "promise_to_pay"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'kept', 'broken', 'cancelled')", name="ck_ptp_status"),
    )
    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    promised_date: date
    amount: Decimal = money()
    currency: str = Field(max_length=3)
    note: str | None = Field(default=None, max_length=1000)
    recorded_by_id: int | None = Field(default=None, foreign_key="person.id")
    status: str = Field(default="open", max_length=16, index=True)
    broken_on: date | None = None
    created_at: datetime = utc(default_factory=utcnow)


class ShipmentRequest(SQLModel, table=True):
    __tablename__ = "shipment_request"
    __table_args__ = (UniqueConstraint("customer_id", "order_ref", name="uq_shipment_order"),)
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    order_ref: str = Field(max_length=100)
    amount: Decimal = money()
    currency: str = Field(max_length=3)
    requested_by_id: int | None = Field(default=None, foreign_key="person.id")
    status: str = Field(default="pending", max_length=16, index=True)
    reasons: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    callback_url: str | None = Field(default=None, max_length=2000)
    created_at: datetime = utc(default_factory=utcnow)
    decided_at: datetime | None = utc(default=None)
    expires_at: datetime | None = utc(default=None)
    version: int = 0
    # the credit check when raised (credit.approval.CreditCheck), in the customer's currency,
    # and the limit it was checked against: a decision after the limit changed is refused
    limit_at_raise: Decimal | None = money(default=None)
    exposure: Decimal | None = money(default=None)
    excess: Decimal | None = money(default=None)
    overdue: Decimal | None = money(default=None)
    # who made the final decision (None: at once by policy, or expired)
    decided_by_id: int | None = Field(default=None, foreign_key="person.id")
    # an approved request counts against the limit until it is invoiced (shipped)
    shipped_at: datetime | None = utc(default=None)


class Approval(SQLModel, table=True):
    __tablename__ = "approval"
    __table_args__ = (UniqueConstraint("request_id", "level", name="uq_approval_level"),)
    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="shipment_request.id", index=True)
    level: int
    role: str = Field(max_length=32)
    approver_id: int | None = Field(default=None, foreign_key="person.id")
    decision: str | None = Field(default=None, max_length=16)
    reason: str | None = Field(default=None, max_length=1000)
    channel: str | None = Field(default=None, max_length=16)
    decided_at: datetime | None = utc(default=None)


class OutboxMessage(SQLModel, table=True):
    """A message to send. The row exists before the send; the key makes duplicates impossible."""

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'failed', 'dead')", name="ck_outbox_status"
        ),
        Index("ix_outbox_due", "status", "next_attempt_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=255, unique=True)
    recipient_id: int | None = Field(default=None, foreign_key="person.id", index=True)
    channel: str = Field(max_length=16)
    kind: str = Field(max_length=32)
    business_date: date | None = None
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = utc(default_factory=utcnow)
    lease_until: datetime | None = utc(default=None)
    platform_ref: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    last_error: str | None = Field(default=None, max_length=2000)
    created_at: datetime = utc(default_factory=utcnow)
    sent_at: datetime | None = utc(default=None)


class AuditLog(SQLModel, table=True):
    """Append-only record of every decision and state change: who, what, when, where."""

    __tablename__ = "audit_log"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = utc(default_factory=utcnow, index=True)
    actor: str = Field(max_length=100)
    action: str = Field(max_length=64, index=True)
    entity: str = Field(max_length=32)
    entity_id: str | None = Field(default=None, max_length=64)
    channel: str = Field(default="cli", max_length=16)
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    after: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class ScanRun(SQLModel, table=True):
    """One receivables scan per business date: the cadence window starts at the last one."""

    __tablename__ = "scan_run"
    id: int | None = Field(default=None, primary_key=True)
    business_date: date = Field(unique=True)
    started_at: datetime = utc(default_factory=utcnow)
    finished_at: datetime | None = utc(default=None)
    messages: int = 0
    invoices: int = 0


class InvoiceAck(SQLModel, table=True):
    """Somebody acknowledged an invoice's reminder in a tier (stops the manager escalation)."""

    __tablename__ = "invoice_ack"
    __table_args__ = (UniqueConstraint("invoice_id", "tier", name="uq_invoice_ack_tier"),)
    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoice.id", index=True)
    tier: str = Field(max_length=32)
    person_id: int = Field(foreign_key="person.id")
    channel: str = Field(default="cli", max_length=16)
    acknowledged_at: datetime = utc(default_factory=utcnow)


class InvoiceSnooze(SQLModel, table=True):
    """Reminders about an invoice paused until a date (by the rep, from chat or CLI)."""

    __tablename__ = "invoice_snooze"
    id: int | None = Field(default=None, primary_key=True)
    invoice_id: int = Field(foreign_key="invoice.id", unique=True)
    until: date
    person_id: int = Field(foreign_key="person.id")
    created_at: datetime = utc(default_factory=utcnow)


class HoldRecheck(SQLModel, table=True):
    """Customers whose invoices changed in a way that may let their credit hold be lifted.

    Triggers on ``invoice`` (see ``credit.store.db.install_hold_recheck``) add the customer
    when an invoice's open amount, dispute flag, due date or customer changes, or it is
    deleted: nothing else can clear an overdue item. ``lift_credit_holds`` checks only these
    customers and removes them, so a daily scan does not re-examine every customer on hold."""

    __tablename__ = "hold_recheck"
    customer_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})


class ChatInteraction(SQLModel, table=True):
    """A button press or form submission from a chat platform, stored once when processed.

    ``interaction_key`` names the delivery (Slack: ``action_ts`` + user + ``action_id`` for a
    click, the view id for a modal submission): a replayed or double-delivered interaction
    finds its key taken and changes nothing. ``detail`` keeps what a later step needs (the
    clicked message, for updating it when the modal it opened is submitted)."""

    __tablename__ = "chat_interaction"
    __table_args__ = (
        UniqueConstraint("platform", "interaction_key", name="uq_chat_interaction_key"),
    )
    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=16)
    interaction_key: str = Field(max_length=255)
    received_at: datetime = utc(default_factory=utcnow)
    detail: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class TelegramLinkCode(SQLModel, table=True):
    """A one-time code that links a Telegram chat to a person (``/start CODE``).

    Made by ``creditbot people link``; redeemed once, before ``expires_at``, in a private chat
    (``credit.store.telegram``): the chat becomes the person's ``telegram_chat_id``."""

    __tablename__ = "telegram_link_code"
    code: str = Field(primary_key=True, max_length=16)
    person_id: int = Field(foreign_key="person.id", index=True)
    created_at: datetime = utc(default_factory=utcnow)
    expires_at: datetime = utc()
    used_at: datetime | None = utc(default=None)
    chat_id: int | None = Field(default=None, sa_type=BigInteger)


class CallbackToken(SQLModel, table=True):
    """What a Telegram button does, behind an opaque ``token`` (its ``callback_data``).

    Telegram clients can forge ``callback_data``, so a button carries only this random token;
    the action and the value (``INVOICE|tier``) stay here, with the chat the message went to.
    A token is used once: ``used_at`` is set by a conditional UPDATE in the transaction that
    acts, and ``used_by``/``used_via`` answer the next press ("already done by …")."""

    __tablename__ = "telegram_callback_token"
    token: str = Field(primary_key=True, max_length=32)
    action: str = Field(max_length=32)
    value: str = Field(max_length=255)
    chat_id: int = Field(sa_type=BigInteger)
    person_id: int | None = Field(default=None, foreign_key="person.id")
    created_at: datetime = utc(default_factory=utcnow)
    expires_at: datetime = utc(index=True)
    used_at: datetime | None = utc(default=None)
    used_by: int | None = Field(default=None, foreign_key="person.id")
    used_via: str | None = Field(default=None, max_length=64)


class TelegramConversation(SQLModel, table=True):
    """A question the bot asked in a chat and waits to have answered (one per chat).

    Promise to pay asks for the date, Dispute for the reason: the answer is the chat's next
    plain text message. Kept in the database, not in the process, so any replica serving the
    webhook can take the answer and a restart loses nothing. ``message_id`` (in the same
    chat), ``message_html`` and ``keyboard`` are the reminder as it stood, to be edited once
    the answer is recorded."""

    __tablename__ = "telegram_conversation"
    __table_args__ = (
        CheckConstraint("kind IN ('promise', 'dispute')", name="ck_telegram_conversation_kind"),
    )
    chat_id: int = Field(
        sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    token: str = Field(max_length=32)
    kind: str = Field(max_length=16)
    person_id: int = Field(foreign_key="person.id")
    message_id: int
    message_html: str | None = None  # unbounded VARCHAR / TEXT
    keyboard: list[Any] | None = Field(default=None, sa_column=Column(JSON))
    created_at: datetime = utc(default_factory=utcnow)
    expires_at: datetime = utc()


class AgingSnapshot(SQLModel, table=True):
    """Open receivables per aging bucket and currency on a business date: the digests'
    history ("since the previous business day", the overdue trend), kept across restarts.

    One set of rows per date: per region (``region_id``) and for the whole company
    (``region_id`` NULL; always written, zeros included, so a date's snapshot exists even for
    an empty ledger). ``bucket`` is the bucket's key (``current``, ``1_30``, …, ``over_180``).
    The digest run writes it; running it again for a date replaces that date's rows
    (``credit.store.digest.write_snapshot``)."""

    __tablename__ = "aging_snapshot"
    __table_args__ = (
        UniqueConstraint(
            "business_date", "region_id", "bucket", "currency", name="uq_aging_snapshot_region"
        ),
        # NULLs are distinct in a unique constraint: the company rows need their own index
        Index(
            "uq_aging_snapshot_company",
            "business_date",
            "bucket",
            "currency",
            unique=True,
            postgresql_where=text("region_id IS NULL"),
            sqlite_where=text("region_id IS NULL"),
        ),
    )
    id: int | None = Field(default=None, primary_key=True)
    business_date: date
    region_id: int | None = Field(default=None, foreign_key="region.id")
    bucket: str = Field(max_length=32)
    currency: str = Field(max_length=3)
    amount: Decimal = money()
    invoices: int = 0
    taken_at: datetime = utc(default_factory=utcnow)
