"""Scenes: several characters in one channel, a conversation trigger, and where replies were shown.

A channel may now have several bindings, one per character (the unique key moves from
(platform, channel_id) to (platform, channel_id, character_id)); the trigger may be
``conversation`` (characters answer each other for a few turns). ``reply_messages`` records the
platform messages a stored reply was shown in, so that a person replying to one of them is
answered by the character that wrote it; its rows go with the reply (and with /forget).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("bindings") as batch:
        batch.drop_constraint("uq_bindings_platform_channel_id", type_="unique")
        batch.drop_constraint("ck_bindings_trigger", type_="check")
        batch.create_unique_constraint("uq_bindings_platform_channel_id_character_id", ["platform", "channel_id", "character_id"])
        batch.create_check_constraint("ck_bindings_trigger", "trigger IN ('all', 'mention', 'conversation')")
    op.create_table(
        "reply_messages",
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("channel_id", sa.String(64), nullable=False),
        sa.Column("platform_message_id", sa.String(128), nullable=False),
        sa.Column("message_id", _BigId, nullable=False),
        sa.PrimaryKeyConstraint("platform", "channel_id", "platform_message_id", name="pk_reply_messages"),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_reply_messages_message_id_messages", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_reply_messages_message_id", "reply_messages", ["message_id"])
    # The scene of a channel is read across its conversations, newest first.
    op.create_index("ix_messages_channel", "messages", ["platform", "channel_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_messages_channel", table_name="messages")
    op.drop_index("ix_reply_messages_message_id", table_name="reply_messages")
    op.drop_table("reply_messages")
    # Channels with several characters keep their oldest binding.
    op.execute(
        "DELETE FROM bindings WHERE id NOT IN (SELECT min(id) FROM bindings GROUP BY platform, channel_id)"
    )
    op.execute("UPDATE bindings SET trigger = 'all' WHERE trigger = 'conversation'")
    with op.batch_alter_table("bindings") as batch:
        batch.drop_constraint("uq_bindings_platform_channel_id_character_id", type_="unique")
        batch.drop_constraint("ck_bindings_trigger", type_="check")
        batch.create_unique_constraint("uq_bindings_platform_channel_id", ["platform", "channel_id"])
        batch.create_check_constraint("ck_bindings_trigger", "trigger IN ('all', 'mention')")
