"""Migrations: upgrade, downgrade and upgrade again on both databases; clear errors for an unready database."""

from __future__ import annotations

from typing import AsyncIterator

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.pool import NullPool

from storage import migrate
from storage.database import SqlStore
from storage.engine import create_engine
from storage.errors import DatabaseUnavailable, SchemaNotReady
from storage.tables import TABLES, metadata
from tests.conftest import throwaway_postgres


@pytest.fixture(params=["postgresql", "sqlite"])
async def empty_url(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[str]:
    """A database with nothing in it, of its own (not the session's shared one)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'personae.db'}"
        return
    async with throwaway_postgres() as url:
        yield url


async def table_names(url: str) -> set[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_upgrade_then_downgrade_to_base_then_upgrade_again(empty_url: str) -> None:
    head = await migrate.head()
    assert await migrate.current(empty_url) is None

    await migrate.upgrade(empty_url)
    assert await migrate.current(empty_url) == head
    assert set(TABLES) <= await table_names(empty_url)

    await migrate.downgrade(empty_url, "base")
    assert await migrate.current(empty_url) is None
    assert not set(TABLES) & await table_names(empty_url)

    await migrate.upgrade(empty_url)
    assert await migrate.current(empty_url) == head
    assert set(TABLES) <= await table_names(empty_url)


async def test_the_migrated_schema_matches_the_table_definitions(empty_url: str) -> None:
    await migrate.upgrade(empty_url)
    engine = create_engine(empty_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            differences = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), metadata)
            )
    finally:
        await engine.dispose()
    assert differences == []


async def test_upgrading_twice_changes_nothing(empty_url: str) -> None:
    await migrate.upgrade(empty_url)
    await migrate.upgrade(empty_url)
    assert await migrate.current(empty_url) == await migrate.head()


async def test_opening_an_unmigrated_database_says_to_run_the_upgrade(empty_url: str) -> None:
    with pytest.raises(SchemaNotReady, match="run `personae db upgrade`"):
        await SqlStore.open(empty_url)


async def test_opening_an_older_schema_says_to_run_the_upgrade(empty_url: str, monkeypatch) -> None:
    await migrate.upgrade(empty_url)

    known = await migrate.revisions()

    async def newer() -> list[str]:
        return ["9999", *known]

    monkeypatch.setattr(migrate, "revisions", newer)
    with pytest.raises(SchemaNotReady, match="needs 9999; run `personae db upgrade`"):
        await SqlStore.open(empty_url)


async def column_names(url: str, table: str) -> set[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return {c["name"] for c in await conn.run_sync(lambda c: sa.inspect(c).get_columns(table))}
    finally:
        await engine.dispose()


async def test_the_avatar_columns_come_and_go_with_0002_and_the_characters_stay(empty_url: str) -> None:
    await migrate.upgrade(empty_url, "0001")
    assert not {"avatar", "avatar_ext"} & await column_names(empty_url, "characters")
    engine = create_engine(empty_url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("INSERT INTO characters (id, name, name_key, card) VALUES (7, 'Hamlet', 'hamlet', :card)"),
                {"card": '{"spec": "chara_card_v2", "data": {"name": "Hamlet"}}'},
            )
            await conn.execute(
                sa.text("INSERT INTO bindings (platform, chat_id, channel_id, character_id, trigger, private) "
                        "VALUES ('discord', 'g', 'c', 7, 'all', false)")
            )

        await migrate.upgrade(empty_url, "0002")
        assert {"avatar", "avatar_ext"} <= await column_names(empty_url, "characters")
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE characters SET avatar = :a, avatar_ext = 'png' WHERE id = 7"), {"a": b"\x89PNG"})

        await migrate.downgrade(empty_url, "0001")
        assert not {"avatar", "avatar_ext"} & await column_names(empty_url, "characters")
        async with engine.connect() as conn:
            # The table was rebuilt on SQLite: its rows stay, and so do the rows that point at them.
            assert (await conn.execute(sa.text("SELECT name FROM characters WHERE id = 7"))).scalar_one() == "Hamlet"
            assert (await conn.execute(sa.text("SELECT count(*) FROM bindings WHERE character_id = 7"))).scalar_one() == 1

        await migrate.upgrade(empty_url)
        assert await migrate.current(empty_url) == await migrate.head()
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT avatar FROM characters WHERE id = 7"))).scalar_one() is None
    finally:
        await engine.dispose()


async def index_names(url: str, table: str) -> set[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return {i["name"] for i in await conn.run_sync(lambda c: sa.inspect(c).get_indexes(table))}
    finally:
        await engine.dispose()


async def test_0008_indexes_overheard_lines_and_its_downgrade_deletes_them_and_nothing_else(empty_url: str) -> None:
    await migrate.upgrade(empty_url, "0007")
    assert "ix_messages_overheard" not in await index_names(empty_url, "messages")
    await migrate.upgrade(empty_url, "0008")
    assert "ix_messages_overheard" in await index_names(empty_url, "messages")
    engine = create_engine(empty_url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("INSERT INTO characters (id, name, name_key, card) VALUES (7, 'Hamlet', 'hamlet', :card)"),
                {"card": '{"spec": "chara_card_v2", "data": {"name": "Hamlet"}}'},
            )
            for n, status in enumerate(["overheard", "answered", None]):
                await conn.execute(
                    sa.text("INSERT INTO messages (character_id, platform, channel_id, user_id, role, content, tokens, "
                            "platform_message_id, status, created_at) VALUES (7, 'discord', 'c', 'elena', 'user', 'x', 1, "
                            ":pid, :status, CURRENT_TIMESTAMP)"),
                    {"pid": f"m{n}", "status": status},
                )
        await migrate.downgrade(empty_url, "0007")
        assert "ix_messages_overheard" not in await index_names(empty_url, "messages")
        async with engine.connect() as conn:
            kept = (await conn.execute(sa.text("SELECT platform_message_id FROM messages ORDER BY id"))).scalars().all()
        assert kept == ["m1", "m2"]
        await migrate.upgrade(empty_url)
        assert await migrate.current(empty_url) == await migrate.head()
    finally:
        await engine.dispose()


async def test_an_unreachable_postgres_is_a_clear_error_not_a_traceback() -> None:
    with pytest.raises(DatabaseUnavailable, match=r"cannot reach the database at postgresql\+asyncpg://nobody:\*\*\*@127.0.0.1:1/x"):
        await SqlStore.open("postgresql://nobody:secret@127.0.0.1:1/x")


async def test_a_sqlite_file_that_cannot_be_made_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DatabaseUnavailable, match="SQLite database"):
        await SqlStore.open(f"sqlite:///{tmp_path / 'file' / 'personae.db'}")


async def test_an_in_memory_sqlite_database_is_migrated_when_opened() -> None:
    store = await SqlStore.open("sqlite+aiosqlite://")
    try:
        assert await store.characters.list() == []
    finally:
        await store.close()


def test_the_scripts_read_without_alembic_give_alembics_order() -> None:
    from alembic.script import ScriptDirectory

    alembic_order = [r.revision for r in ScriptDirectory.from_config(migrate.config()).walk_revisions()]
    assert migrate.script_revisions() == alembic_order


def test_scripts_that_are_not_one_line_of_revisions_are_left_to_alembic(tmp_path, monkeypatch) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    monkeypatch.setattr(migrate, "MIGRATIONS", tmp_path)
    (versions / "0001_a.py").write_text('revision = "0001"\ndown_revision = None\n')
    (versions / "0002_b.py").write_text('revision: str = "0002"\ndown_revision: str | None = "0001"\n')
    assert migrate.script_revisions() == ["0002", "0001"]
    (versions / "0003_c.py").write_text('revision = "0003"\ndown_revision = "0001"\n')  # a branch
    assert migrate.script_revisions() is None
    (versions / "0003_c.py").write_text('revision = "0003"\ndown_revision = ("0001", "0002")\n')  # a merge
    assert migrate.script_revisions() is None
    (versions / "0003_c.py").write_text('revision = "0003"\ndown_revision = "0002"\ndepends_on = "0001"\n')
    assert migrate.script_revisions() is None
    (versions / "0003_c.py").write_text('revision = make_id()\ndown_revision = "0002"\n')
    assert migrate.script_revisions() is None


async def test_the_current_revision_read_without_alembic_is_alembics(empty_url: str) -> None:
    async def both() -> tuple[str | None, str | None]:
        engine = create_engine(empty_url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                ours = await conn.run_sync(migrate.current_revision)
                theirs = await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
                return ours, theirs
        finally:
            await engine.dispose()

    assert await both() == (None, None)
    await migrate.upgrade(empty_url, "0001")
    assert await both() == ("0001", "0001")
    await migrate.upgrade(empty_url)
    assert await both() == (await migrate.head(),) * 2
