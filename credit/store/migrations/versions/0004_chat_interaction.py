"""chat interactions processed once (Slack button presses and modal submissions)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 21:15:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import credit.store.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chat_interaction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("interaction_key", sa.String(length=255), nullable=False),
        sa.Column("received_at", credit.store.types.UTCDateTime(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("platform", "interaction_key", name="uq_chat_interaction_key"),
    )


def downgrade() -> None:
    op.drop_table("chat_interaction")
