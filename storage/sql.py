"""What every repository shares: the engines, the dialect-specific INSERT, the clock."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core import observe


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class Db:
    """An engine plus its autocommit twin (same pool) for single statements: one round trip, no BEGIN/COMMIT."""

    engine: AsyncEngine
    autocommit: AsyncEngine
    # Called once per statement sent with the driver itself, which SQLAlchemy's events do not see.
    on_driver_call: Callable[[], None] = field(default=lambda: None)

    @classmethod
    def of(cls, engine: AsyncEngine, on_driver_call: Callable[[], None] | None = None) -> "Db":
        return cls(engine, engine.execution_options(isolation_level="AUTOCOMMIT"), on_driver_call or (lambda: None))

    @property
    def postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def insert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        """An INSERT that knows ON CONFLICT on either backend."""
        return (postgresql.insert if self.postgres else sqlite.insert)(table)

    async def pg_fetch(self, sql: str, *args: Any) -> list[Any]:
        """One PostgreSQL statement sent with asyncpg itself, on a pooled autocommit connection.

        For the chat hot path only: SQLAlchemy's work per statement costs about as much CPU as the
        round trip itself. Raises asyncpg's own errors.
        """
        async with self.autocommit.connect() as conn:
            raw = await conn.get_raw_connection()
            self.on_driver_call()
            started = time.monotonic()
            try:
                return await raw.driver_connection.fetch(sql, *args)
            finally:
                observe.metrics.storage("database", observe.since(started))

    def connect(self) -> AsyncConnection:
        """A connection for one statement, which is its own transaction."""
        return self.autocommit.connect()

    def begin(self):  # -> async context manager of AsyncConnection
        """A connection inside a transaction, for several statements that must hold together."""
        return self.engine.begin()
