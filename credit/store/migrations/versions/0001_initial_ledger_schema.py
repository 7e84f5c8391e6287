"""initial ledger schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 19:36:08.276860
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import credit.store.types
from credit.store.db import install_audit_guard

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", credit.store.types.UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_action"), ["action"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_log_at"), ["at"], unique=False)

    op.create_table(
        "region",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code"),
    )
    op.create_table(
        "person",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("region_id", sa.Integer(), nullable=True),
        sa.Column("manager_id", sa.Integer(), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("slack_user_id", sa.String(length=32), nullable=True),
        sa.Column("telegram_chat_id", sa.BigInteger(), nullable=True),
        sa.Column("locale", sa.String(length=16), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("unreachable_reason", sa.String(length=500), nullable=True),
        sa.CheckConstraint(
            "role IN ('rep', 'regional_manager', 'credit_manager', 'finance', 'legal', 'executive', 'admin')",
            name="ck_person_role",
        ),
        sa.ForeignKeyConstraint(
            ["manager_id"],
            ["person.id"],
        ),
        sa.ForeignKeyConstraint(
            ["region_id"],
            ["region.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code"),
        sa.UniqueConstraint("slack_user_id"),
        sa.UniqueConstraint("telegram_chat_id"),
    )
    with op.batch_alter_table("person", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_person_region_id"), ["region_id"], unique=False)

    op.create_table(
        "customer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("region_id", sa.Integer(), nullable=False),
        sa.Column("rep_id", sa.Integer(), nullable=False),
        sa.Column("rating", sa.String(length=1), nullable=False),
        sa.Column("credit_limit", credit.store.types.MoneyAmount(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("payment_terms_days", sa.Integer(), nullable=False),
        sa.Column("credit_hold", sa.Boolean(), nullable=False),
        sa.Column("credit_hold_reason", sa.String(length=500), nullable=True),
        sa.Column("credit_hold_since", credit.store.types.UTCDateTime(), nullable=True),
        sa.Column("probation_until", sa.Date(), nullable=True),
        sa.Column("blacklisted", sa.Boolean(), nullable=False),
        sa.CheckConstraint("rating IN ('A', 'B', 'C', 'D', 'X', 'H')", name="ck_customer_rating"),
        sa.ForeignKeyConstraint(
            ["region_id"],
            ["region.id"],
        ),
        sa.ForeignKeyConstraint(
            ["rep_id"],
            ["person.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code"),
    )
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_customer_region_id"), ["region_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_customer_rep_id"), ["rep_id"], unique=False)

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("recipient_id", sa.Integer(), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", credit.store.types.UTCDateTime(), nullable=False),
        sa.Column("lease_until", credit.store.types.UTCDateTime(), nullable=True),
        sa.Column("platform_ref", sa.JSON(), nullable=True),
        sa.Column("last_error", sa.String(length=2000), nullable=True),
        sa.Column("created_at", credit.store.types.UTCDateTime(), nullable=False),
        sa.Column("sent_at", credit.store.types.UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'failed', 'dead')", name="ck_outbox_status"
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["person.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_outbox_recipient_id"), ["recipient_id"], unique=False)

    op.create_table(
        "invoice",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("issue_date", sa.Date(), nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        sa.Column("amount", credit.store.types.MoneyAmount(), nullable=False),
        sa.Column("open_amount", credit.store.types.MoneyAmount(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("disputed", sa.Boolean(), nullable=False),
        sa.Column("dispute_reason", sa.String(length=1000), nullable=True),
        sa.CheckConstraint("open_amount <= amount", name="ck_invoice_open_le_amount"),
        sa.CheckConstraint("open_amount >= 0", name="ck_invoice_open_nonnegative"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("number"),
    )
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_invoice_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index("ix_invoice_open_due", ["due_date", "customer_id"], unique=False)

    op.create_table(
        "shipment_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("order_ref", sa.String(length=100), nullable=False),
        sa.Column("amount", credit.store.types.MoneyAmount(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("requested_by_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("callback_url", sa.String(length=2000), nullable=True),
        sa.Column("created_at", credit.store.types.UTCDateTime(), nullable=False),
        sa.Column("decided_at", credit.store.types.UTCDateTime(), nullable=True),
        sa.Column("expires_at", credit.store.types.UTCDateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
        ),
        sa.ForeignKeyConstraint(
            ["requested_by_id"],
            ["person.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("customer_id", "order_ref", name="uq_shipment_order"),
    )
    with op.batch_alter_table("shipment_request", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_shipment_request_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_shipment_request_status"), ["status"], unique=False)

    op.create_table(
        "approval",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("approver_id", sa.Integer(), nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.String(length=1000), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("decided_at", credit.store.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["approver_id"],
            ["person.id"],
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["shipment_request.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id", "level", name="uq_approval_level"),
    )
    with op.batch_alter_table("approval", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_approval_request_id"), ["request_id"], unique=False)

    op.create_table(
        "payment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=True),
        sa.Column("paid_on", sa.Date(), nullable=False),
        sa.Column("amount", credit.store.types.MoneyAmount(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_payment_positive"),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoice.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reference"),
    )
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payment_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_payment_invoice_id"), ["invoice_id"], unique=False)

    op.create_table(
        "promise_to_pay",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("promised_date", sa.Date(), nullable=False),
        sa.Column("amount", credit.store.types.MoneyAmount(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("note", sa.String(length=1000), nullable=True),
        sa.Column("recorded_by_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", credit.store.types.UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('open', 'kept', 'broken', 'cancelled')", name="ck_ptp_status"
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoice.id"],
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by_id"],
            ["person.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("promise_to_pay", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_promise_to_pay_invoice_id"), ["invoice_id"], unique=False
        )
    # The audit log is append-only: the database refuses UPDATE and DELETE on it.
    install_audit_guard(op.get_bind())


def downgrade() -> None:
    with op.batch_alter_table("promise_to_pay", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_promise_to_pay_invoice_id"))

    op.drop_table("promise_to_pay")
    with op.batch_alter_table("payment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payment_invoice_id"))
        batch_op.drop_index(batch_op.f("ix_payment_customer_id"))

    op.drop_table("payment")
    with op.batch_alter_table("approval", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_approval_request_id"))

    op.drop_table("approval")
    with op.batch_alter_table("shipment_request", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shipment_request_status"))
        batch_op.drop_index(batch_op.f("ix_shipment_request_customer_id"))

    op.drop_table("shipment_request")
    with op.batch_alter_table("invoice", schema=None) as batch_op:
        batch_op.drop_index("ix_invoice_open_due")
        batch_op.drop_index(batch_op.f("ix_invoice_customer_id"))

    op.drop_table("invoice")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_recipient_id"))
        batch_op.drop_index("ix_outbox_due")

    op.drop_table("outbox")
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_rep_id"))
        batch_op.drop_index(batch_op.f("ix_customer_region_id"))

    op.drop_table("customer")
    with op.batch_alter_table("person", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_person_region_id"))

    op.drop_table("person")
    op.drop_table("region")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_at"))
        batch_op.drop_index(batch_op.f("ix_audit_log_action"))

    op.drop_table("audit_log")
