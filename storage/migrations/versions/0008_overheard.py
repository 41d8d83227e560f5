"""Overheard lines: a bound channel's messages that no character answers (trigger ``mention``) are
stored with status ``overheard``, as lines of the channel's scene only (out of every history, never
answered). Each channel keeps its newest few; ``ix_messages_overheard`` makes finding the oldest one
kept a read of those few index entries.

The status column is a free string (no constraint to change). Downgrading deletes the overheard
lines: an older personae would never read them, nor prune them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OVERHEARD = sa.text("status = 'overheard'")


def upgrade() -> None:
    op.create_index(
        "ix_messages_overheard", "messages", ["platform", "channel_id", "id"],
        postgresql_where=OVERHEARD, sqlite_where=OVERHEARD,
    )


def downgrade() -> None:
    op.drop_index("ix_messages_overheard", "messages")
    op.execute("DELETE FROM messages WHERE status = 'overheard'")
