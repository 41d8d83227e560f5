"""Bindings: which characters play in which channel, and how (several may share a channel: a scene)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from core.errors import NotFound
from core.events import Trigger
from core.state import Binding
from storage.sql import Db, utcnow
from storage.tables import bindings as t

_COLUMNS = (t.c.platform, t.c.chat_id, t.c.channel_id, t.c.character_id, t.c.trigger, t.c.scene, t.c.private)


def _binding(row: sa.Row) -> Binding:
    return Binding(
        platform=row.platform,
        chat_id=row.chat_id,
        channel_id=row.channel_id,
        character_id=row.character_id,
        trigger=Trigger(row.trigger),
        scene=row.scene,
        private=row.private,
    )


class SqlBindingRepository:
    """``core.ports.BindingRepository`` on the ``bindings`` table."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def get(self, platform: str, channel_id: str) -> Binding | None:
        found = await self.list(platform, channel_id)
        return found[0] if found else None

    async def list(self, platform: str, channel_id: str) -> list[Binding]:
        statement = (
            sa.select(*_COLUMNS).where(t.c.platform == platform, t.c.channel_id == channel_id).order_by(t.c.id)
        )
        async with self._db.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [_binding(row) for row in rows]

    async def channels(self, platform: str, limit: int) -> list[str]:
        statement = (
            sa.select(t.c.channel_id, sa.func.max(t.c.id).label("newest"))
            .where(t.c.platform == platform, sa.not_(t.c.private))
            .group_by(t.c.channel_id)
            .order_by(sa.desc("newest"))
            .limit(limit)
        )
        async with self._db.connect() as conn:
            return [row.channel_id for row in (await conn.execute(statement)).all()]

    async def put(self, binding: Binding) -> None:
        """The channel's one binding becomes ``binding`` (the others go)."""
        async with self._db.begin() as conn:
            await conn.execute(
                sa.delete(t).where(
                    t.c.platform == binding.platform, t.c.channel_id == binding.channel_id,
                    t.c.character_id != binding.character_id,
                )
            )
            await self._upsert(conn, binding)

    async def add(self, binding: Binding) -> None:
        """Add ``binding`` to the channel's (or update the character's own), the others staying."""
        async with self._db.begin() as conn:
            await self._upsert(conn, binding)

    async def _upsert(self, conn, binding: Binding) -> None:
        values = {
            "chat_id": binding.chat_id,
            "trigger": Trigger(binding.trigger).value,
            "scene": binding.scene,
            "private": binding.private,
        }
        statement = (
            self._db.insert(t)
            .values(
                platform=binding.platform, channel_id=binding.channel_id, character_id=binding.character_id,
                created_at=utcnow(), **values,
            )
            .on_conflict_do_update(index_elements=[t.c.platform, t.c.channel_id, t.c.character_id], set_=values)
        )
        try:
            await conn.execute(statement)
        except IntegrityError:
            # The only constraint an upsert can still break is the character's foreign key.
            raise NotFound(f"character {binding.character_id} does not exist (was it deleted?)") from None

    async def remove(self, platform: str, channel_id: str, character_id: int) -> bool:
        statement = sa.delete(t).where(
            t.c.platform == platform, t.c.channel_id == channel_id, t.c.character_id == character_id
        )
        async with self._db.connect() as conn:
            result = await conn.execute(statement)
        return result.rowcount > 0

    async def delete(self, platform: str, channel_id: str) -> bool:
        statement = sa.delete(t).where(t.c.platform == platform, t.c.channel_id == channel_id)
        async with self._db.connect() as conn:
            result = await conn.execute(statement)
        return result.rowcount > 0
