"""Two replicas (two Apps on one database and one Redis) share one model budget: the TGI-protocol
double never sees more requests in flight than the cap, and a busy channel does not starve a quiet
one. The double holds every stream at its gate until the test opens it, so what is in flight is
counted while everyone waits (no timing)."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid

import pytest

from bots.compose import wire
from bots.llm.client import ModelClient
from core.commands import Place
from core.events import Platform
from storage.cache_redis import RedisCache
from storage.slots_redis import RedisSlots
from tests.conftest import TEST_REDIS_URL
from tests.engine.conftest import World, build_world, built_apps, make_settings
from tests.tgi_server import TGIServer


@pytest.fixture
async def tgi():
    async with TGIServer(token_delay=0.002) as server:
        yield server


async def replicas(store, tgi: TGIServer, redis_prefix: str, *, cap: int, share: float):
    """Two worlds on one store and one Redis prefix, each with its own cache connection, client and slots."""
    prefix = f"{redis_prefix}{secrets.token_hex(4)}:"
    made = []
    for _ in range(2):
        cache = RedisCache(TEST_REDIS_URL, prefix)
        slots = RedisSlots(cache, cap, share)
        made.append((cache, slots))
    first = await build_world(store, made[0][0], tgi)
    # build_world wired its own client: rewire both with a client that takes slots.
    worlds = []
    for index, (cache, slots) in enumerate(made):
        client = ModelClient(tgi.base_url, timeout_s=5.0, concurrency=64, retries=0, slots=slots)
        app = wire(make_settings(llm_url=tgi.base_url), store, cache, client)
        built_apps.append(app)
        worlds.append(World(app, tgi, first.character_name, first.channel, first.chat))
    await first.app.model.close()
    return worlds, [slots for _, slots in made], [cache for cache, _ in made]


async def until(condition) -> None:
    async with asyncio.timeout(20):
        while not condition():
            await asyncio.sleep(0.01)


async def close(worlds, slots, caches) -> None:
    for world in worlds:
        await world.app.engine.drain()
        await world.app.model.close()
    for one in slots:
        await one.close()
    for cache in caches:
        await cache.close()


async def test_two_replicas_never_send_more_than_the_cap(store, tgi: TGIServer, redis_prefix: str) -> None:
    worlds, slots, caches = await replicas(store, tgi, redis_prefix, cap=3, share=1.0)
    await worlds[0].say("warm up")  # the client learns the server first
    await worlds[1].say("warm up", user="u0")
    tgi.max_in_flight = 0
    tgi.gate = asyncio.Event()
    turns = [
        asyncio.create_task(worlds[i % 2].say(f"turn {i}", user=f"user-{i}")) for i in range(10)
    ]
    # Every turn has asked for a slot; three got one and wait at the double's gate.
    await until(lambda: slots[0].acquire_trips + slots[1].acquire_trips >= 10 and tgi.in_flight == 3)
    assert tgi.in_flight == 3
    tgi.gate.set()
    for reply, deltas in await asyncio.gather(*turns):
        assert "".join(deltas)
    assert tgi.max_in_flight == 3
    assert slots[0].acquired >= 5 and slots[1].acquired >= 5  # both replicas sent their turns
    await close(worlds, slots, caches)


async def test_a_busy_channel_does_not_starve_a_quiet_one(store, tgi: TGIServer, redis_prefix: str) -> None:
    worlds, slots, caches = await replicas(store, tgi, redis_prefix, cap=2, share=0.5)
    busy, quiet = worlds
    quiet_channel = f"chan-{uuid.uuid4().hex[:8]}"
    outcome = await quiet.app.commands.bind(quiet.admin, Place(Platform.DISCORD, quiet.chat, quiet_channel), quiet.character_name, "all")
    assert outcome.ok, outcome.message
    quiet.channel = quiet_channel
    await busy.say("warm up")
    await quiet.say("warm up", user="u0")
    asked_before = slots[0].acquire_trips
    tgi.gate = asyncio.Event()
    first_request = len(tgi.requests)
    turns = [asyncio.create_task(busy.say(f"busy {i}", user=f"busy-{i}")) for i in range(5)]
    # The busy channel's five turns have all asked (one holds its share: the other four wait).
    await until(lambda: slots[0].acquire_trips - asked_before >= 5 and tgi.in_flight == 1)
    turns.append(asyncio.create_task(quiet.say("quiet one", user="quiet")))
    await until(lambda: tgi.in_flight == 2)
    generations = [json.dumps(r.body) for r in tgi.requests[first_request:] if r.path.endswith("completions")]
    # The second request the double saw is the quiet channel's one turn, not the busy channel's second.
    assert len(generations) == 2
    assert "busy" in generations[0] and "quiet one" in generations[1]
    tgi.gate.set()
    await asyncio.gather(*turns)
    await close(worlds, slots, caches)
