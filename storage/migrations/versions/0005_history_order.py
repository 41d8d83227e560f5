"""History order: a message's place in its conversation, set when it joins the history.

A person's message is stored when it arrives (pending) but joins the conversation only when it is
answered, so the row id (arrival) is not the conversation's order: a second message stored while
the first is answered would come before the first reply, and a first-contact greeting stored
with the reply would come after the message it opens. ``seq`` is the order the history is read in:
one more than the conversation's highest when the row joins it (NULL while pending).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True))
    # Rows stored before: the id order they were read in.
    op.execute("UPDATE messages SET seq = id WHERE status IS NULL OR status <> 'pending'")
    op.create_index("ix_messages_history", "messages", ["character_id", "platform", "channel_id", "user_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_messages_history", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("seq")
