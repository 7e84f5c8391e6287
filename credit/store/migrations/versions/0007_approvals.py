"""Shipment approvals: the credit check kept with the request, who decided, when it shipped

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import credit.store.types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_MONEY = ("limit_at_raise", "exposure", "excess", "overdue")


def upgrade() -> None:
    with op.batch_alter_table("shipment_request", schema=None) as batch_op:
        for name in _MONEY:
            batch_op.add_column(sa.Column(name, credit.store.types.MoneyAmount(), nullable=True))
        batch_op.add_column(sa.Column("decided_by_id", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("shipped_at", credit.store.types.UTCDateTime(), nullable=True)
        )
        batch_op.create_foreign_key(
            "fk_shipment_request_decided_by_id_person", "person", ["decided_by_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("shipment_request", schema=None) as batch_op:
        batch_op.drop_constraint("fk_shipment_request_decided_by_id_person", type_="foreignkey")
        batch_op.drop_column("shipped_at")
        batch_op.drop_column("decided_by_id")
        for name in reversed(_MONEY):
            batch_op.drop_column(name)
