"""Discord shards: each process runs a set of shards (PERSONAE_DISCORD_SHARDS of
PERSONAE_DISCORD_SHARD_COUNT, or Discord's recommended count), the fake routes each guild's events to
its shard, and only the process running shard 0 syncs the slash commands."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from bots.discord.client import ShardedClient, make_client, run_discord
from bots.discord.shards import parse_shards, shard_of, shard_plan
from bots.settings import Settings
from core.commands import Actor, Place
from core.events import Platform
from tests.discord.conftest import CHARACTER, add_character, build_app, discord_settings
from bots.fakes.discord import ALICE, ANNEX, ANNEX_GUILD, DM, GUILD_ID, ROLEPLAY, FakeDiscord


def test_shard_settings_are_read_as_ranges_and_checked_against_the_count() -> None:
    assert parse_shards("0-3") == [0, 1, 2, 3]
    assert parse_shards("5, 0,2-3") == [0, 2, 3, 5]
    with pytest.raises(ValueError):
        parse_shards("3-1")
    assert shard_plan(None, None) is None
    assert shard_plan("auto", None).count is None  # type: ignore[union-attr]
    assert not shard_plan("4", "1-3").syncs_commands()  # type: ignore[union-attr]
    assert shard_plan("4", "0").syncs_commands()  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="PERSONAE_DISCORD_SHARD_COUNT=2"):
        Settings(_env_file=None, discord_shard_count="2", discord_shards="1-2")
    # The fake's two guilds sit on different shards of two.
    assert {shard_of(GUILD_ID, 2), shard_of(ANNEX_GUILD, 2)} == {0, 1}


async def _bind(app: Any, guild: int, channel: int) -> None:
    admin = Actor(Platform.DISCORD, "setup", "Setup", is_admin=True)
    outcome = await app.commands.bind(admin, Place(Platform.DISCORD, str(guild), str(channel)), CHARACTER, "all")
    assert outcome.ok, outcome.message


def _command_syncs(fake: FakeDiscord) -> int:
    return len([c for c in fake.requests("PUT") if c.path.endswith("/commands")])


async def test_two_processes_each_run_one_shard_get_their_guilds_events_and_one_syncs_commands(store, cache, fake, tgi) -> None:
    fake.add_annex()
    await add_character(store)
    apps, clients, tasks = [], [], []
    try:
        for shard in ("0", "1"):
            settings = discord_settings(
                fake, tgi, discord_shard_count="2", discord_shards=shard,
                discord_guild_ids=[str(GUILD_ID), str(ANNEX_GUILD)],
            )
            app = build_app(store, cache, settings)
            client = make_client(app, guild_ready_timeout=0.1)
            assert isinstance(client, ShardedClient)
            apps.append(app)
            clients.append(client)
            tasks.append(asyncio.create_task(run_discord(app, client=client)))
        await fake.wait_for(lambda: all(c.is_ready() for c in clients) or any(t.done() for t in tasks), timeout=15, what="both shards")
        for task in tasks:
            if task.done():
                task.result()
        assert sorted(fake.connected_shards()) == [(0, 2), (1, 2)]  # type: ignore[type-var]
        assert sorted(tuple(i["shard"]) for i in fake.identifies) == [(0, 2), (1, 2)]
        # Each process sees only the guilds of its shard.
        assert [g.id for g in clients[0].guilds] == [ANNEX_GUILD]
        assert [g.id for g in clients[1].guilds] == [GUILD_ID]
        # The commands were synced by the process running shard 0 only: one PUT per guild.
        assert _command_syncs(fake) == 2
        await _bind(apps[0], GUILD_ID, ROLEPLAY)
        await _bind(apps[0], ANNEX_GUILD, ANNEX)

        async def say(channel: int, content: str, expected: int) -> None:
            payload = fake.message_payload(channel, ALICE, content)
            fake.messages[int(payload["id"])] = payload
            waits = [
                asyncio.create_task(c.wait_for("turn_finished", check=lambda m, _, i=int(payload["id"]): m.id == i, timeout=20))
                for c in clients
            ]
            await fake.dispatch("MESSAGE_CREATE", payload)
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            assert waits[expected] in done, f"the message in {channel} was handled by the wrong shard"
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        await say(ROLEPLAY, "Good evening, prince.", 1)
        await say(ANNEX, "Good evening, prince.", 0)
        for channel in (ROLEPLAY, ANNEX):
            await fake.wait_for(lambda ch=channel: len(fake.bot_messages(ch)) == 1, timeout=10, what=f"one reply in {channel}")
        # Neither process answered a message of the other's guild.
        await asyncio.gather(*(app.engine.drain() for app in apps))
        assert len(fake.bot_messages(ROLEPLAY)) == len(fake.bot_messages(ANNEX)) == 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for app in apps:
            await app.engine.drain()
            await app.model.close()


async def test_without_a_count_one_process_runs_every_shard_discord_recommends(store, cache, fake, tgi) -> None:
    fake.add_annex()
    fake.recommended_shards = 2
    await add_character(store)
    app = build_app(store, cache, discord_settings(fake, tgi, discord_shard_count="auto"))
    client = make_client(app, guild_ready_timeout=0.1)
    task = asyncio.create_task(run_discord(app, client=client))
    try:
        await fake.wait_for(lambda: client.is_ready() or task.done(), timeout=15, what="every shard")
        if task.done():
            task.result()
        assert sorted(fake.connected_shards()) == [(0, 2), (1, 2)]  # type: ignore[type-var]
        assert sorted(g.id for g in client.guilds) == sorted([GUILD_ID, ANNEX_GUILD])
        assert fake.requests("GET", "/gateway/bot")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await app.engine.drain()
        await app.model.close()


@pytest.mark.parametrize("database_backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("cache_backend", ["memory"], indirect=True)
async def test_a_sharded_process_says_which_shards_it_runs_at_start(store, cache, fake, tgi, caplog) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="bots.discord.client")
    settings = discord_settings(fake, tgi, discord_shard_count="4", discord_shards="1-2")
    client = make_client(build_app(store, cache, settings))
    assert isinstance(client, ShardedClient)
    await client.prepare_shards()
    assert any("4 shards" in r.getMessage() and "this process runs 1, 2" in r.getMessage() for r in caplog.records), caplog.text
