"""Replicas: a pending message names the replica answering it, so that another one can take it over.

``claimed_by`` is set when the message is stored (the replica that took it in) and moved, with a
compare-and-set, by the replica that takes over a message whose owner's liveness lease ran out.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        # NULL: stored before this revision (or by a process without a replica name): anyone may take it.
        batch.add_column(sa.Column("claimed_by", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("claimed_by")
