"""Schema migrations (Alembic), driven from code: no alembic.ini on disk."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

from alembic import command
from alembic.util import CommandError
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from storage.connect_errors import database_errors
from storage.database import create_engine, safe_url
from storage.errors import SchemaNotReady

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any constant will do: it makes concurrent upgrades (say, two containers starting) take turns.
_PG_LOCK = 0x706572736F6E6165  # "personae"


def config(database_url: str = "") -> Config:
    """An Alembic Config pointing at the migrations shipped inside this package."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation would eat a '%' in a password.
    cfg.set_main_option("sqlalchemy.url", str(database_url).replace("%", "%%"))
    return cfg


async def _run(database_url: str, work: Callable[[Connection], Any], *, transaction: bool) -> Any:
    # Foreign keys off on SQLite: batch mode copies tables, which must not cascade deletes.
    engine = create_engine(database_url, poolclass=NullPool, sqlite_foreign_keys=False)
    try:
        with database_errors(safe_url(database_url)):
            return await _run_on(engine, work, transaction=transaction)
    finally:
        await engine.dispose()


async def _run_on(engine: AsyncEngine, work: Callable[[Connection], Any], *, transaction: bool) -> Any:
    if transaction:
        async with engine.begin() as conn:
            return await conn.run_sync(work)
    async with engine.connect() as conn:
        return await conn.run_sync(work)


def _migrate(database_url: str, action: Callable[[Config], None]) -> Callable[[Connection], None]:
    def work(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
        cfg = config(database_url)
        cfg.attributes["connection"] = connection
        try:
            action(cfg)
        except CommandError as exc:
            # An unknown revision: asked for, or recorded in the database by a newer personae.
            raise SchemaNotReady(f"cannot migrate the database at {safe_url(database_url)}: {exc}") from exc

    return work


async def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (the newest by default)."""
    await _run(database_url, _migrate(database_url, lambda cfg: command.upgrade(cfg, revision)), transaction=True)


async def upgrade_engine(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade through an existing engine (an in-memory SQLite database lives only in its engine)."""
    url = engine.url.render_as_string(hide_password=False)
    async with engine.begin() as conn:
        await conn.run_sync(_migrate(url, lambda cfg: command.upgrade(cfg, revision)))


async def downgrade(database_url: str, revision: str) -> None:
    """Take the schema down to ``revision`` ("base" removes every table)."""
    await _run(database_url, _migrate(database_url, lambda cfg: command.downgrade(cfg, revision)), transaction=True)


async def current(database_url: str) -> str | None:
    """The schema revision the database is at, or None for an empty database."""
    return await _run(database_url, current_revision, transaction=False)


def current_revision(connection: Connection) -> str | None:
    """The revision recorded in ``alembic_version`` (for ``AsyncConnection.run_sync``)."""
    return MigrationContext.configure(connection).get_current_revision()


async def revisions() -> list[str]:
    """Every revision this code knows, newest first."""

    def walk() -> list[str]:
        script = ScriptDirectory.from_config(config())
        return [r.revision for r in script.walk_revisions()]

    # Reading the migration scripts is file I/O: keep it off the event loop.
    return await asyncio.to_thread(walk)


async def head() -> str:
    """The newest revision: the schema this code expects."""
    return (await revisions())[0]
