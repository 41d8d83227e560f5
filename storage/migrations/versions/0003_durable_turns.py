"""Durable turns: a person's message is stored when it arrives, with a status saying whether it was answered.

The user row's unique (platform, channel_id, platform_message_id) is the record of a delivery, so a
redelivered message is recognised by the database; ``processed_events`` is no longer written.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        # NULL: a row from before this revision, or an assistant row; both count as answered.
        batch.add_column(sa.Column("status", sa.String(16), nullable=True))
        # The name the person had when they wrote: a message answered after a restart is still addressed to them.
        batch.add_column(sa.Column("display_name", sa.String(128), nullable=True))
    op.create_index(
        "uq_messages_delivery", "messages", ["platform", "channel_id", "platform_message_id"], unique=True
    )
    op.create_index(
        "ix_messages_pending", "messages", ["platform", "id"],
        postgresql_where=PENDING, sqlite_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_pending", "messages")
    op.drop_index("uq_messages_delivery", "messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("display_name")
        batch.drop_column("status")
