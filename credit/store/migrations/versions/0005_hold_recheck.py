"""customers to re-examine for lifting a credit hold, kept by triggers on invoice

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 22:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from credit.store.db import install_hold_recheck

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hold_recheck",
        sa.Column("customer_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("customer_id"),
    )
    install_hold_recheck(op.get_bind())
    # holds the scan put on before this revision: look at each once
    op.execute(
        "INSERT INTO hold_recheck (customer_id) SELECT id FROM customer "
        "WHERE credit_hold AND credit_hold_source = 'scan'"
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS invoice_hold_recheck_update ON invoice")
        op.execute("DROP TRIGGER IF EXISTS invoice_hold_recheck_delete ON invoice")
        op.execute("DROP FUNCTION IF EXISTS invoice_hold_recheck()")
    else:
        op.execute("DROP TRIGGER IF EXISTS invoice_hold_recheck_update")
        op.execute("DROP TRIGGER IF EXISTS invoice_hold_recheck_delete")
    op.drop_table("hold_recheck")
