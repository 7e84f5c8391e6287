"""Telegram: link codes, button tokens and pending conversations

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import credit.store.types

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telegram_link_code",
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("created_at", credit.store.types.UTCDateTime(), nullable=False),
        sa.Column("expires_at", credit.store.types.UTCDateTime(), nullable=False),
        sa.Column("used_at", credit.store.types.UTCDateTime(), nullable=True),
        sa.Column("chat_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["person_id"], ["person.id"]),
        sa.PrimaryKeyConstraint("code"),
    )
    op.create_index(
        op.f("ix_telegram_link_code_person_id"), "telegram_link_code", ["person_id"], unique=False
    )
    op.create_table(
        "telegram_callback_token",
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=True),
        sa.Column("created_at", credit.store.types.UTCDateTime(), nullable=False),
        sa.Column("expires_at", credit.store.types.UTCDateTime(), nullable=False),
        sa.Column("used_at", credit.store.types.UTCDateTime(), nullable=True),
        sa.Column("used_by", sa.Integer(), nullable=True),
        sa.Column("used_via", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["person_id"], ["person.id"]),
        sa.ForeignKeyConstraint(["used_by"], ["person.id"]),
        sa.PrimaryKeyConstraint("token"),
    )
    op.create_index(
        op.f("ix_telegram_callback_token_expires_at"),
        "telegram_callback_token",
        ["expires_at"],
        unique=False,
    )
    op.create_table(
        "telegram_conversation",
        sa.Column("chat_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("message_html", sa.String(), nullable=True),
        sa.Column("keyboard", sa.JSON(), nullable=True),
        sa.Column("created_at", credit.store.types.UTCDateTime(), nullable=False),
        sa.Column("expires_at", credit.store.types.UTCDateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('promise', 'dispute')", name="ck_telegram_conversation_kind"),
        sa.ForeignKeyConstraint(["person_id"], ["person.id"]),
        sa.PrimaryKeyConstraint("chat_id"),
    )


def downgrade() -> None:
    op.drop_table("telegram_conversation")
    op.drop_index(
        op.f("ix_telegram_callback_token_expires_at"), table_name="telegram_callback_token"
    )
    op.drop_table("telegram_callback_token")
    op.drop_index(op.f("ix_telegram_link_code_person_id"), table_name="telegram_link_code")
    op.drop_table("telegram_link_code")
