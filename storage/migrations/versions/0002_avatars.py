"""Character avatars: the image a card came with (PNG, or the icon of a CharX file).

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-12
"""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite cannot drop a column in place, so the downgrade needs it; the upgrade uses
    # it too so that both directions take the same path.
    with op.batch_alter_table("characters") as batch:
        batch.add_column(sa.Column("avatar", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("avatar_ext", sa.String(8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("characters") as batch:
        batch.drop_column("avatar_ext")
        batch.drop_column("avatar")
