"""partial index for credit-hold checks

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 20:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# written as each engine renders the scan's own filter, so the planner sees it applies
PG_WHERE = "open_amount > 0 AND NOT disputed"
SQLITE_WHERE = "open_amount > 0 AND disputed = 0"


def upgrade() -> None:
    op.create_index(
        "ix_invoice_customer_overdue",
        "invoice",
        ["customer_id", "due_date"],
        unique=False,
        postgresql_where=sa.text(PG_WHERE),
        sqlite_where=sa.text(SQLITE_WHERE),
    )


def downgrade() -> None:
    op.drop_index("ix_invoice_customer_overdue", table_name="invoice")
