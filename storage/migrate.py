"""Schema migrations (Alembic), driven from code: no alembic.ini on disk.

Alembic is imported only to migrate, or when the scripts or the database hold more than one line of
revisions: it costs about a third of a second of CPU, and every command that opens the database
checks the schema revision (``current_revision`` and ``revisions`` read it without Alembic).
"""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import text
from sqlalchemy.pool import NullPool

from storage.connect_errors import database_errors
from storage.engine import create_engine, safe_url
from storage.errors import SchemaNotReady

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"  # Alembic's default, which env.py keeps
# Any constant will do: it makes concurrent upgrades (say, two containers starting) take turns.
_PG_LOCK = 0x706572736F6E6165  # "personae"


def config(database_url: str = "") -> Config:
    """An Alembic Config pointing at the migrations shipped inside this package."""
    from alembic.config import Config

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
        from alembic.util import CommandError

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


def _upgrade(revision: str) -> Callable[[Config], None]:
    def action(cfg: Config) -> None:
        from alembic import command

        command.upgrade(cfg, revision)

    return action


def _downgrade(revision: str) -> Callable[[Config], None]:
    def action(cfg: Config) -> None:
        from alembic import command

        command.downgrade(cfg, revision)

    return action


async def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (the newest by default)."""
    await _run(database_url, _migrate(database_url, _upgrade(revision)), transaction=True)


async def upgrade_engine(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade through an existing engine (an in-memory SQLite database lives only in its engine)."""
    url = engine.url.render_as_string(hide_password=False)
    async with engine.begin() as conn:
        await conn.run_sync(_migrate(url, _upgrade(revision)))


async def downgrade(database_url: str, revision: str) -> None:
    """Take the schema down to ``revision`` ("base" removes every table)."""
    await _run(database_url, _migrate(database_url, _downgrade(revision)), transaction=True)


async def current(database_url: str) -> str | None:
    """The schema revision the database is at, or None for an empty database."""
    return await _run(database_url, current_revision, transaction=False)


def current_revision(connection: Connection) -> str | None:
    """The revision recorded in ``alembic_version`` (for ``AsyncConnection.run_sync``)."""
    from sqlalchemy import inspect

    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    recorded = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(recorded) > 1:  # unmerged branches: Alembic says what that means
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(connection).get_current_revision()
    return recorded[0] if recorded else None


async def revisions() -> list[str]:
    """Every revision this code knows, newest first."""

    def walk() -> list[str]:
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(config())
        return [r.revision for r in script.walk_revisions()]

    # Reading the migration scripts is file I/O: keep it off the event loop.
    return await asyncio.to_thread(lambda: script_revisions() or walk())


async def head() -> str:
    """The newest revision: the schema this code expects."""
    return (await revisions())[0]


_ASSIGNMENT = re.compile(r"^(revision|down_revision|depends_on)\s*(?::[^=]*)?=\s*(.+?)\s*$", re.MULTILINE)


def script_revisions() -> list[str] | None:
    """The revisions of the scripts in ``migrations/versions``, newest first, from their ``revision`` and
    ``down_revision`` lines (what Alembic reads from them), without importing Alembic. None unless the
    scripts plainly form one line of revisions from a single first one: Alembic reads them then."""
    parents: dict[str, str | None] = {}
    for path in (MIGRATIONS / "versions").glob("*.py"):
        if path.name.startswith((".#", "__init__")):  # as Alembic: editor lock files, a package marker
            continue
        found: dict[str, Any] = {}
        for name, value in _ASSIGNMENT.findall(path.read_text(encoding="utf-8")):
            if name in found:
                return None
            try:
                found[name] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                return None
        revision, down = found.get("revision"), found.get("down_revision", ...)
        if not isinstance(revision, str) or not (down is None or isinstance(down, str)) or revision in parents:
            return None
        if found.get("depends_on") is not None:
            return None
        parents[revision] = down
    children = {down: revision for revision, down in parents.items()}
    if len(children) != len(parents):  # a branch, or two first revisions
        return None
    order: list[str] = []
    revision = children.get(None)
    while revision is not None:
        order.append(revision)
        revision = children.get(revision)
    return order[::-1] if order and len(order) == len(parents) else None
