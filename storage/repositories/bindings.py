"""Bindings: which character answers in which channel, and how."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from core.errors import NotFound
from core.events import Trigger
from core.state import Binding
from storage.sql import Db, utcnow
from storage.tables import bindings as t

_COLUMNS = (t.c.platform, t.c.chat_id, t.c.channel_id, t.c.character_id, t.c.trigger, t.c.scene, t.c.private)


class SqlBindingRepository:
    """``core.ports.BindingRepository`` on the ``bindings`` table."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def get(self, platform: str, channel_id: str) -> Binding | None:
        statement = sa.select(*_COLUMNS).where(t.c.platform == platform, t.c.channel_id == channel_id)
        async with self._db.connect() as conn:
            row = (await conn.execute(statement)).first()
        if row is None:
            return None
        return Binding(
            platform=row.platform,
            chat_id=row.chat_id,
            channel_id=row.channel_id,
            character_id=row.character_id,
            trigger=Trigger(row.trigger),
            scene=row.scene,
            private=row.private,
        )

    async def put(self, binding: Binding) -> None:
        values = {
            "chat_id": binding.chat_id,
            "character_id": binding.character_id,
            "trigger": Trigger(binding.trigger).value,
            "scene": binding.scene,
            "private": binding.private,
        }
        statement = (
            self._db.insert(t)
            .values(platform=binding.platform, channel_id=binding.channel_id, created_at=utcnow(), **values)
            .on_conflict_do_update(index_elements=[t.c.platform, t.c.channel_id], set_=values)
        )
        try:
            async with self._db.connect() as conn:
                await conn.execute(statement)
        except IntegrityError:
            # The only constraint an upsert can still break is the character's foreign key.
            raise NotFound(f"character {binding.character_id} does not exist (was it deleted?)") from None

    async def delete(self, platform: str, channel_id: str) -> bool:
        statement = sa.delete(t).where(t.c.platform == platform, t.c.channel_id == channel_id)
        async with self._db.connect() as conn:
            result = await conn.execute(statement)
        return result.rowcount > 0
