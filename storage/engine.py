"""Database URLs and the async engine personae tunes for PostgreSQL and SQLite.

Apart from ``storage.database`` (the store, its repositories and the domain they import), so that
``storage.migrate`` and ``personae db upgrade`` load no more than they use."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from storage.errors import DatabaseUnavailable, InvalidDatabaseURL

CONNECT_TIMEOUT_S = 10.0  # opening a PostgreSQL connection; ?connect_timeout=S in the URL changes it
# Cards keep their non-ASCII text readable in the database.
_json_dumps = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))


def database_url(url: str | sa.URL) -> sa.URL:
    """Parse a database URL and put in the async driver personae ships (asyncpg or aiosqlite)."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise InvalidDatabaseURL(
            f"{url!r} is not a database URL; use postgresql://user@host/db or sqlite:////absolute/path/file.db (four slashes; three: relative to the current directory)"
        ) from None
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    raise InvalidDatabaseURL(f"unsupported database {backend!r}: personae works with PostgreSQL or SQLite")


def is_memory(url: str | sa.URL) -> bool:
    """Whether ``url`` is an in-memory SQLite database (gone when its engine closes)."""
    url = sa.make_url(url)
    return url.get_backend_name() == "sqlite" and (
        url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    )


def safe_url(url: str | sa.URL) -> str:
    """A URL fit for messages and logs: the password hidden."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable URL>"


def create_engine(url: str | sa.URL, *, sqlite_foreign_keys: bool = True, **options: Any) -> AsyncEngine:
    """An async engine tuned for personae: WAL and foreign keys on SQLite, a bounded pool on PostgreSQL."""
    url = database_url(url)
    options.setdefault("json_serializer", _json_dumps)
    if url.get_backend_name() == "sqlite":
        path = url.database
        if is_memory(url):
            # One connection, kept for the engine's life: it *is* the database. Callers queue for it.
            options.setdefault("poolclass", AsyncAdaptedQueuePool)
            options.setdefault("pool_size", 1)
            options.setdefault("max_overflow", 0)
            options.setdefault("pool_recycle", -1)
        elif not path.startswith("file:"):
            # Once at start-up, before any connection: a blocking mkdir is harmless here.
            try:
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseUnavailable(f"cannot create the folder for the SQLite database {path}: {exc}") from exc
        # Writers wait for each other (busy timeout) instead of failing with "database is locked".
        options.setdefault("connect_args", {"timeout": 30})
        engine = create_async_engine(url, **options)
        event.listen(engine.sync_engine, "connect", functools.partial(_sqlite_pragmas, foreign_keys=sqlite_foreign_keys))
        return engine
    connect_timeout = CONNECT_TIMEOUT_S
    if "connect_timeout" in url.query:  # libpq's parameter, so that one URL serves psql and personae
        try:
            connect_timeout = float(url.query["connect_timeout"])  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InvalidDatabaseURL(f"connect_timeout in the database URL must be a number of seconds, not {url.query['connect_timeout']!r}") from None
        url = url.difference_update_query(["connect_timeout"])
    if "poolclass" not in options:
        options.setdefault("pool_size", 10)
        options.setdefault("max_overflow", 10)
    # No pool_pre_ping: it would add a round trip to every checkout; a dead connection fails its statement.
    options.setdefault("pool_pre_ping", False)
    options.setdefault(
        "connect_args",
        {
            "timeout": connect_timeout,
            # No statement of personae's runs for long: one that hangs is an error, not a stuck turn.
            "command_timeout": 30,
            # JIT compilation only slows down personae's short indexed queries.
            "server_settings": {"application_name": "personae", "jit": "off"},
        },
    )
    return create_async_engine(url, **options)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *, foreign_keys: bool) -> None:
    cursor = dbapi_connection.cursor()
    # SQLite enforces foreign keys (and so ON DELETE CASCADE) only when asked, per connection.
    cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
    # WAL lets readers go on while one connection writes; NORMAL sync is safe with WAL.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
