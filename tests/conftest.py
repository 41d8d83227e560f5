"""Shared fixtures: ``store`` on PostgreSQL and SQLite, ``cache`` on Redis and in-process, service checks."""

# PostgreSQL comes from TEST_DATABASE_URL (a server and a database to connect to): each session
# creates its own throwaway database there, migrates it, and drops it at the end (a database named
# there that does not exist yet is created first). Redis comes from
# TEST_REDIS_URL; each session uses a key prefix of its own and deletes it at the end. A service that
# cannot be reached skips its tests, except in CI (CI=true), where that is a failure.

from __future__ import annotations

import os
import secrets
from contextlib import asynccontextmanager
from typing import AsyncIterator, NoReturn

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from tests.llama_fixture import llama_server  # noqa: F401  (llama.cpp with the bundled model, one per run)

pytest_plugins = ["tests.hang_report"]

# CREATE and DROP DATABASE wait on each other (and on a checkpoint) across the test workers and the
# throwaway servers' tests: on a loaded machine one may take longer than the product's 30 s statement
# bound, which is for personae's own short queries, not for these.
ADMIN_CONNECT_ARGS = {"timeout": 30, "command_timeout": 300}

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def require_service(name: str, exc: BaseException) -> NoReturn:
    """Skip the test because ``name`` is unreachable, or fail it in CI, where every service must run."""
    message = f"{name} is not reachable: {type(exc).__name__}: {exc}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing service is a failure)", pytrace=False)
    pytest.skip(message)


# -- PostgreSQL and SQLite ----------------------------------------------------------------------


MISSING_DATABASE = "3D000"  # PostgreSQL's invalid_catalog_name: the database does not exist
DUPLICATE_DATABASE = "42P04"


async def create_database(server_url: str) -> None:
    """Create the database ``server_url`` names, through the server's ``postgres`` maintenance database."""
    from storage.engine import create_engine

    url = sa.make_url(server_url)
    maintenance = create_engine(
        url.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args=ADMIN_CONNECT_ARGS
    )
    try:
        async with maintenance.connect() as conn:
            exists = await conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database})
            if not exists:
                quoted = url.database.replace('"', '""')
                try:
                    await conn.execute(sa.text(f'CREATE DATABASE "{quoted}"'))
                except sa.exc.DBAPIError as exc:
                    if getattr(exc.orig, "sqlstate", None) != DUPLICATE_DATABASE:  # another run made it first
                        raise
    finally:
        await maintenance.dispose()


@asynccontextmanager
async def throwaway_postgres(server_url: str = TEST_DATABASE_URL) -> AsyncIterator[str]:
    """Create an empty database ``personae_test_<random>`` on the server, yield its URL, drop it after."""
    from storage.engine import create_engine

    name = f"personae_test_{secrets.token_hex(6)}"
    admin = create_engine(server_url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args=ADMIN_CONNECT_ARGS)
    try:
        try:
            try:
                async with admin.connect() as conn:
                    await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            except sa.exc.DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) != MISSING_DATABASE:
                    raise
                # The server is there but TEST_DATABASE_URL's database is not: create it, go on.
                await create_database(server_url)
                async with admin.connect() as conn:
                    await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        except (OSError, sa.exc.DBAPIError) as exc:
            require_service(f"PostgreSQL at {sa.make_url(server_url).render_as_string()}", exc)
        try:
            yield sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                # FORCE: a test that failed half-way may have left a connection open.
                await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """A migrated throwaway PostgreSQL database for this test session."""
    from storage import migrate

    async with throwaway_postgres() as url:
        await migrate.upgrade(url)
        yield url


@pytest.fixture(scope="session")
async def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file for this test session."""
    from storage import migrate

    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'personae.db'}"
    await migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
async def postgresql_store(postgres_url: str):
    from storage.database import SqlStore

    store = await SqlStore.open(postgres_url)
    yield store
    await store.close()


@pytest.fixture(scope="session")
async def sqlite_store(sqlite_url: str):
    from storage.database import SqlStore

    store = await SqlStore.open(sqlite_url)
    yield store
    await store.close()


@pytest.fixture(params=["postgresql", "sqlite"])
def database_backend(request: pytest.FixtureRequest):
    """The session's store for one backend (sync, so that it can pick the async fixture by name)."""
    return request.getfixturevalue(f"{request.param}_store")


async def empty_tables(store) -> None:
    """Delete every row, so that each test starts from an empty database."""
    from storage.tables import TABLES

    async with store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(TABLES):
                await conn.execute(sa.text(f"DELETE FROM {table}"))


@pytest.fixture
async def store(database_backend):
    """A ``storage.database.SqlStore`` on PostgreSQL or SQLite with empty tables."""
    await empty_tables(database_backend)
    yield database_backend


# -- Redis and the in-process cache -------------------------------------------------------------


@pytest.fixture(scope="session")
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this session's own on the test Redis; everything under it is deleted at the end."""
    from storage.cache_redis import RedisCache

    prefix = f"personae-test-{secrets.token_hex(6)}:"
    import redis.asyncio as aioredis

    probe = aioredis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
    try:
        await probe.ping()
    except (OSError, aioredis.RedisError) as exc:
        require_service(f"Redis at {TEST_REDIS_URL}", exc)
    finally:
        await probe.aclose()
    yield prefix
    cleaner = RedisCache(TEST_REDIS_URL, prefix)
    await cleaner.delete_prefix("")
    await cleaner.close()


@pytest.fixture(params=["redis", "memory"])
def cache_backend(request: pytest.FixtureRequest) -> str | None:
    """The Redis key prefix for this session, or None for the in-process cache."""
    return request.getfixturevalue("redis_prefix") if request.param == "redis" else None


@pytest.fixture
async def cache(cache_backend: str | None):
    """A ``RedisCache`` (with a prefix of the test's own) or a ``MemoryCache``."""
    from storage.cache import MemoryCache
    from storage.cache_redis import RedisCache

    instance = MemoryCache() if cache_backend is None else RedisCache(TEST_REDIS_URL, f"{cache_backend}{secrets.token_hex(4)}:")
    yield instance
    await instance.close()


# SQLite with Redis is no deployment: Redis is there for several replicas, which SQLite cannot
# serve. A test that takes both a store and a cache runs on the other three pairs; each backend's
# own behaviour is the storage suite's, where the store and the cache are tested on their own.
BACKEND_PAIRS = [("sqlite", "memory"), ("postgresql", "memory"), ("postgresql", "redis")]


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Pair ``database_backend`` and ``cache_backend`` (BACKEND_PAIRS) where a test takes both from
    here, instead of pytest's every combination of their params. Added as a mark, so that pytest's
    own parametrization of the two fixtures steps aside for it."""
    names = ("database_backend", "cache_backend")
    if not all(n in metafunc.fixturenames for n in names):
        return
    if any(n in mark.args[0] for mark in metafunc.definition.iter_markers("parametrize") for n in names):
        return  # the test names its own
    definitions = [metafunc._arg2fixturedefs.get(n, ()) for n in names]
    if not all(d and d[-1].params is not None for d in definitions):
        return  # overridden (the adapter suites take theirs from ``backends``)
    ids = [f"{database}-{cache}" for database, cache in BACKEND_PAIRS]
    metafunc.definition.add_marker(pytest.mark.parametrize(names, BACKEND_PAIRS, indirect=True, ids=ids))


# -- Backend pairs (the adapter suites) ---------------------------------------------------------


@pytest.fixture(params=["sqlite-memory", "postgresql-redis"])
def backends(request: pytest.FixtureRequest) -> tuple[str, str]:
    """A database and a cache backend, named ``<database>-<cache>``: the adapter suites run on these two
    pairs (a test may name others with ``@pytest.mark.parametrize("backends", [...], indirect=True)``)."""
    database, cache = request.param.split("-")
    return database, cache


def paired_database(request: pytest.FixtureRequest, backends: tuple[str, str]):
    return request.getfixturevalue(f"{backends[0]}_store")


def paired_cache(request: pytest.FixtureRequest, backends: tuple[str, str]) -> str | None:
    return request.getfixturevalue("redis_prefix") if backends[1] == "redis" else None


@pytest.fixture(autouse=True)
async def _finish_background_work():
    """After each test, the state updates still running for the apps it built finish (or fail) there."""
    yield
    from tests.engine.conftest import built_apps

    while built_apps:
        app = built_apps.pop()
        await app.engine.drain()
        await app.model.close()


@pytest.fixture(autouse=True, scope="session")
def _heartbeat_in_a_temporary_dir(tmp_path_factory: pytest.TempPathFactory):
    """Adapters started by tests beat into a file of the test run's own, not the user's state dir."""
    os.environ.setdefault("PERSONAE_HEARTBEAT_FILE", str(tmp_path_factory.mktemp("heartbeat") / "heartbeat"))
    yield
