"""What every repository shares: the engines, the dialect-specific INSERT, the clock."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class Db:
    """An engine plus its autocommit twin (same pool) for single statements: one round trip, no BEGIN/COMMIT."""

    engine: AsyncEngine
    autocommit: AsyncEngine

    @classmethod
    def of(cls, engine: AsyncEngine) -> "Db":
        return cls(engine, engine.execution_options(isolation_level="AUTOCOMMIT"))

    @property
    def postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def insert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        """An INSERT that knows ON CONFLICT on either backend."""
        return (postgresql.insert if self.postgres else sqlite.insert)(table)

    def connect(self) -> AsyncConnection:
        """A connection for one statement, which is its own transaction."""
        return self.autocommit.connect()

    def begin(self):  # -> async context manager of AsyncConnection
        """A connection inside a transaction, for several statements that must hold together."""
        return self.engine.begin()
