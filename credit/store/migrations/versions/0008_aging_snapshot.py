"""daily aging snapshots for the digests (history of open receivables per bucket)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import credit.store.types

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

COMPANY_ROWS = "region_id IS NULL"


def upgrade() -> None:
    op.create_table(
        "aging_snapshot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("region_id", sa.Integer(), nullable=True),
        sa.Column("bucket", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount", credit.store.types.MoneyAmount(), nullable=False),
        sa.Column("invoices", sa.Integer(), nullable=False),
        sa.Column("taken_at", credit.store.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["region_id"], ["region.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "business_date", "region_id", "bucket", "currency", name="uq_aging_snapshot_region"
        ),
    )
    op.create_index(
        "uq_aging_snapshot_company",
        "aging_snapshot",
        ["business_date", "bucket", "currency"],
        unique=True,
        postgresql_where=sa.text(COMPANY_ROWS),
        sqlite_where=sa.text(COMPANY_ROWS),
    )


def downgrade() -> None:
    op.drop_index("uq_aging_snapshot_company", table_name="aging_snapshot")
    op.drop_table("aging_snapshot")
