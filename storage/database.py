"""The round-trip counter and ``SqlStore``: the database behind ``core.ports.Store`` (the engine: ``storage.engine``)."""

from __future__ import annotations

import logging
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from core import observe
from storage.connect_errors import database_errors
from storage.engine import create_engine, is_memory, safe_url
from storage.errors import SchemaNotReady
from storage.repositories import (
    SqlBindingRepository,
    SqlCharacterRepository,
    SqlEventRepository,
    SqlMemoryRepository,
    SqlMessageRepository,
    SqlRelationshipRepository,
)
from storage.repositories.messages import delete_chains, replies_of_person
from storage.sql import Db
from storage.tables import memories, memory_marks, messages, relationship_states, state_changes

log = logging.getLogger(__name__)

UPGRADE_HINT = "run `personae db upgrade`"


class RoundTripCounter:
    """Counts what an engine sends the database: statements, and BEGIN/COMMIT/ROLLBACK outside autocommit."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.count = 0
        self._target = engine.sync_engine
        self._listeners = (
            ("before_cursor_execute", self._statement),
            ("after_cursor_execute", self._statement_done),
            ("handle_error", self._statement_failed),
            ("begin", self._transaction),
            ("commit", self._transaction),
            ("rollback", self._transaction),
        )
        for name, listener in self._listeners:
            event.listen(self._target, name, listener)

    def _statement(self, _conn: Any, _cursor: Any, _statement: Any, _parameters: Any, context: Any, _many: Any) -> None:
        self.count += 1
        if context is not None:
            context._personae_started = time.monotonic()

    @staticmethod
    def _statement_done(_conn: Any, _cursor: Any, _statement: Any, _parameters: Any, context: Any, _many: Any) -> None:
        started = getattr(context, "_personae_started", None)
        if started is not None:
            observe.metrics.storage("database", observe.since(started))

    @staticmethod
    def _statement_failed(exception_context: Any) -> None:
        started = getattr(exception_context.execution_context, "_personae_started", None)
        if started is not None:
            observe.metrics.storage("database", observe.since(started))

    def driver_call(self) -> None:
        """A statement sent with the driver directly (``Db.pg_fetch``)."""
        self.count += 1

    def _transaction(self, conn: sa.Connection) -> None:
        # On an autocommit connection SQLAlchemy still fires these events, but nothing goes out.
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            self.count += 1

    def remove(self) -> None:
        for name, listener in self._listeners:
            if event.contains(self._target, name, listener):
                event.remove(self._target, name, listener)


class SqlStore:
    """``core.ports.Store`` on PostgreSQL or SQLite; ``round_trips`` counts what went to the database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._counter = RoundTripCounter(engine)
        db = Db.of(engine, self._counter.driver_call)
        self._db = db
        self.characters = SqlCharacterRepository(db)
        self.bindings = SqlBindingRepository(db)
        self.relationships = SqlRelationshipRepository(db)
        self.messages = SqlMessageRepository(db)
        self.events = SqlEventRepository(db)
        self.memories = SqlMemoryRepository(db)

    @classmethod
    async def open(
        cls, url: str | sa.URL, *, check_schema: bool = True, migrate_sqlite: bool = False, **engine_options: Any
    ) -> "SqlStore":
        """Connect to ``url`` and check the schema; DatabaseUnavailable or SchemaNotReady say what is wrong.

        With ``migrate_sqlite``, a SQLite database is created or upgraded here: it belongs to this one
        machine, so there is no operator to run ``personae db upgrade`` first. PostgreSQL never is.
        """
        store = cls(create_engine(url, **engine_options))
        try:
            if is_memory(store.engine.url):
                # Nobody can have migrated a database that exists only inside this engine.
                from storage.migrate import upgrade_engine

                await upgrade_engine(store.engine)
            elif migrate_sqlite and store.engine.url.get_backend_name() == "sqlite":
                await store._upgrade_sqlite()
            await store.check(schema=check_schema)
        except BaseException:
            await store.close()
            raise
        return store

    async def _upgrade_sqlite(self) -> None:
        from storage import migrate

        where = safe_url(self.engine.url)
        with database_errors(where):
            async with self.engine.connect() as conn:
                revision = await conn.run_sync(migrate.current_revision)
        known = await migrate.revisions()
        if revision == known[0] or (revision is not None and revision not in known):
            return  # up to date, or newer than this code: check() says so
        # Its own engine: migrations run with foreign keys off (batch mode copies tables).
        await migrate.upgrade(self.engine.url.render_as_string(hide_password=False))
        log.info("%s the SQLite schema at %s (revision %s)", "created" if revision is None else "upgraded", where, known[0])

    @property
    def round_trips(self) -> int:
        return self._counter.count

    async def check(self, *, schema: bool = True) -> None:
        """Raise DatabaseUnavailable if the database cannot be reached, SchemaNotReady if it is not migrated."""
        from storage import migrate

        where = safe_url(self.engine.url)
        with database_errors(where):
            async with self.engine.connect() as conn:
                revision = await conn.run_sync(migrate.current_revision)
        if not schema:
            return
        known = await migrate.revisions()
        if revision is None:
            raise SchemaNotReady(f"the database at {where} has no personae tables yet; {UPGRADE_HINT}")
        if revision not in known:
            raise SchemaNotReady(
                f"the database at {where} has schema revision {revision}, which this version of personae "
                "does not know: it was made by a newer personae; upgrade personae"
            )
        if revision != known[0]:
            raise SchemaNotReady(
                f"the database at {where} has schema revision {revision}, this version of personae "
                f"needs {known[0]}; {UPGRADE_HINT}"
            )

    async def forget_person(self, platform: str, user_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        async with self._db.begin() as conn:
            # First the character conversations the person's replies started (trigger conversation):
            # they are found through where those replies were shown, which goes with the replies.
            followed = await delete_chains(conn, replies_of_person(platform, user_id), postgres=self._db.postgres)
            for kind, table in (
                ("messages", messages), ("states", relationship_states), ("changes", state_changes),
                ("memories", memories), (None, memory_marks),
            ):
                statement = sa.delete(table).where(table.c.platform == platform, table.c.user_id == user_id)
                deleted = (await conn.execute(statement)).rowcount
                if kind is not None:
                    counts[kind] = deleted
            counts["messages"] += followed
        return counts

    async def close(self) -> None:
        self._counter.remove()
        await self.engine.dispose()


async def open_store(url: str | sa.URL, *, migrate_sqlite: bool = False, **engine_options: Any) -> SqlStore:
    """``SqlStore.open``: the database at ``url``, checked to be reachable and migrated."""
    return await SqlStore.open(url, migrate_sqlite=migrate_sqlite, **engine_options)

