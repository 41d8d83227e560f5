"""The initial schema: characters, bindings, relationship states and their audit, messages, events.

Revision ID: 0001
Revises:
Create Date: 2025-11-24
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from storage.tables: a migration must not change when the models do.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
AUDIT_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NOW = sa.text("CURRENT_TIMESTAMP")
EMOTIONS = ("happiness", "sadness", "disgust", "fear", "surprise", "anger")


def _timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=NOW)


def _character_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["character_id"], ["characters.id"], name=f"fk_{table}_character_id_characters", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "characters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("name_key", sa.Text(), nullable=False),
        sa.Column("card", sa.JSON(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_characters"),
        sa.UniqueConstraint("name_key", name="uq_characters_name_key"),
    )
    op.create_table(
        "bindings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("chat_id", sa.String(64), nullable=False),
        sa.Column("channel_id", sa.String(64), nullable=False),
        sa.Column("character_id", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("scene", sa.Text(), nullable=True),
        sa.Column("private", sa.Boolean(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_bindings"),
        sa.UniqueConstraint("platform", "channel_id", name="uq_bindings_platform_channel_id"),
        sa.CheckConstraint("trigger IN ('all', 'mention')", name="ck_bindings_trigger"),
        _character_fk("bindings"),
    )
    op.create_index("ix_bindings_character_id", "bindings", ["character_id"])
    op.create_table(
        "relationship_states",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("character_id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        *(sa.Column(name, sa.SmallInteger(), nullable=False) for name in EMOTIONS),
        sa.Column("intimacy", sa.SmallInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_relationship_states"),
        sa.UniqueConstraint(
            "character_id", "platform", "user_id", name="uq_relationship_states_character_id_platform_user_id"
        ),
        *(
            sa.CheckConstraint(f"{name} BETWEEN 0 AND 10", name=f"ck_relationship_states_{name}")
            for name in EMOTIONS + ("intimacy",)
        ),
        _character_fk("relationship_states"),
    )
    op.create_index("ix_relationship_states_platform_user_id", "relationship_states", ["platform", "user_id"])
    op.create_table(
        "state_changes",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("character_id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("before", AUDIT_JSON, nullable=False),
        sa.Column("after", AUDIT_JSON, nullable=False),
        sa.Column("appraiser", sa.String(64), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_state_changes"),
        _character_fk("state_changes"),
    )
    op.create_index(
        "ix_state_changes_person", "state_changes", ["character_id", "platform", "user_id", "id"]
    )
    op.create_index("ix_state_changes_platform_user_id", "state_changes", ["platform", "user_id"])
    op.create_table(
        "messages",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("character_id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("channel_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("platform_message_id", sa.String(128), nullable=True),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.CheckConstraint("role IN ('user', 'assistant')", name="ck_messages_role"),
        _character_fk("messages"),
    )
    op.create_index(
        "ix_messages_conversation", "messages", ["character_id", "platform", "channel_id", "user_id", "id"]
    )
    op.create_index("ix_messages_platform_user_id", "messages", ["platform", "user_id"])
    op.create_table(
        "processed_events",
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("platform", "event_id", name="pk_processed_events"),
    )


def downgrade() -> None:
    # Children before parents; dropping a table drops its indexes.
    for table in ("processed_events", "messages", "state_changes", "relationship_states", "bindings", "characters"):
        op.drop_table(table)
