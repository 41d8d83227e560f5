"""Long-term memories: what a character keeps of a person once turns leave the history window,
per conversation scope (character, platform, channel, person), and how far each conversation's
history has been condensed (``memory_marks``).

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from storage.tables: a migration must not change when the models do.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_NOW = sa.text("CURRENT_TIMESTAMP")


def upgrade() -> None:
    op.create_table(
        "memories",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("character_id", sa.Integer, nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("channel_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("seq_from", sa.BigInteger, nullable=False),
        sa.Column("seq_to", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.ForeignKeyConstraint(
            ["character_id"], ["characters.id"], name="fk_memories_character_id_characters", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_memories"),
        sa.CheckConstraint("kind IN ('fact', 'event', 'relationship')", name="ck_memories_kind"),
    )
    op.create_index("ix_memories_conversation", "memories", ["character_id", "platform", "channel_id", "user_id", "id"])
    op.create_index("ix_memories_platform_user_id", "memories", ["platform", "user_id"])
    op.create_table(
        "memory_marks",
        sa.Column("character_id", sa.Integer, nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("channel_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("through_seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_NOW),
        sa.ForeignKeyConstraint(
            ["character_id"], ["characters.id"], name="fk_memory_marks_character_id_characters", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("character_id", "platform", "channel_id", "user_id", name="pk_memory_marks"),
    )
    op.create_index("ix_memory_marks_platform_user_id", "memory_marks", ["platform", "user_id"])


def downgrade() -> None:
    op.drop_index("ix_memory_marks_platform_user_id", table_name="memory_marks")
    op.drop_table("memory_marks")
    op.drop_index("ix_memories_platform_user_id", table_name="memories")
    op.drop_index("ix_memories_conversation", table_name="memories")
    op.drop_table("memories")
