"""scan state, acknowledgements, snoozes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 19:40:35.042724
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import credit.store.types

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scan_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("started_at", credit.store.types.UTCDateTime(), nullable=False),
        sa.Column("finished_at", credit.store.types.UTCDateTime(), nullable=True),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("invoices", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("business_date"),
    )
    op.create_table(
        "invoice_ack",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("acknowledged_at", credit.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoice.id"],
        ),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["person.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("invoice_id", "tier", name="uq_invoice_ack_tier"),
    )
    with op.batch_alter_table("invoice_ack", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_invoice_ack_invoice_id"), ["invoice_id"], unique=False)

    op.create_table(
        "invoice_snooze",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("until", sa.Date(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("created_at", credit.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoice.id"],
        ),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["person.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("invoice_id"),
    )
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.add_column(sa.Column("credit_hold_source", sa.String(length=16), nullable=True))

    with op.batch_alter_table("promise_to_pay", schema=None) as batch_op:
        batch_op.add_column(sa.Column("broken_on", sa.Date(), nullable=True))
        batch_op.create_index(batch_op.f("ix_promise_to_pay_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("promise_to_pay", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_promise_to_pay_status"))
        batch_op.drop_column("broken_on")

    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.drop_column("credit_hold_source")

    op.drop_table("invoice_snooze")
    with op.batch_alter_table("invoice_ack", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invoice_ack_invoice_id"))

    op.drop_table("invoice_ack")
    op.drop_table("scan_run")
