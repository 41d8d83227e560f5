"""Processed platform events: the database's word on redeliveries."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from storage.sql import Db, utcnow
from storage.tables import processed_events as t


# The hot-path statement, sent with the driver itself on PostgreSQL (see Db.pg_fetch).
_MARK_PG = (
    "INSERT INTO processed_events (platform, event_id, created_at) VALUES ($1, $2, $3) "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)


class SqlEventRepository:
    """``core.ports.EventRepository`` on the ``processed_events`` table."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def mark_processed(self, platform: str, event_id: str) -> bool:
        if self._db.postgres:
            rows = await self._db.pg_fetch(_MARK_PG, platform, event_id, utcnow())
            return bool(rows)
        # Hot path: one INSERT ... ON CONFLICT DO NOTHING RETURNING on an autocommit connection is one
        # round trip; a row comes back only for the first delivery, also when two race.
        statement = (
            self._db.insert(t)
            .values(platform=platform, event_id=event_id, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=[t.c.platform, t.c.event_id])
            .returning(t.c.event_id)
        )
        async with self._db.connect() as conn:
            return (await conn.execute(statement)).first() is not None

    async def prune(self, older_than: dt.datetime) -> int:
        async with self._db.connect() as conn:
            result = await conn.execute(sa.delete(t).where(t.c.created_at < older_than))
        return result.rowcount
