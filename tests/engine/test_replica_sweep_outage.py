"""A Redis outage or restart says nothing about which replicas died: a sweep then presumes every
owner alive (a message is never answered by two replicas), until one lease after Redis is back."""

from __future__ import annotations

import asyncio

import pytest

from core.hot import replica_key
from tests.engine.test_durable_turns import restarted
from tests.engine.test_replica_sweep import owner_of, swept
from tests.throwaway import ThrowawayRedis


@pytest.fixture
def database_backend(postgresql_store):
    return postgresql_store


@pytest.fixture
def redis_server():
    server = ThrowawayRedis().start()
    yield server
    server.close()


@pytest.fixture
async def cache(redis_server):
    from storage.cache_redis import RedisCache

    # retry_after=0: every call tries Redis, so that its return is seen without waiting.
    instance = RedisCache(redis_server.url, "sweep:", retry_after=0.0)
    yield instance
    await instance.close()


async def test_no_replica_is_presumed_dead_while_redis_is_away_or_just_came_back_empty(store, cache, redis_server, tgi) -> None:
    from tests.engine.conftest import build_world

    a = await build_world(store, cache, tgi, replica_id="a", replica_lease_s=60)
    b = restarted(a, replica_id="b", replica_lease_s=60)
    for name in ("a", "b"):
        assert await cache.lease(replica_key(name), name, 60)
    intake = await a.app.engine.accept(a.event("Who goes there?", message_id="m-a"))
    assert intake is not None and intake.owner == "a"
    assert await swept(b) == []  # a is alive

    # Redis dies: every lease reads as missing, and a still lives.
    await asyncio.to_thread(redis_server.kill)
    assert await swept(b) == []
    # Redis is back, empty: b renewed its lease first; a has not yet (it has a third of a lease to).
    await asyncio.to_thread(redis_server.start)
    assert await cache.lease(replica_key("b"), "b", 60)
    assert await swept(b) == []
    assert await owner_of(a, intake.id) == "a"
    assert tgi.count("/v1/chat/completions") == 0


async def test_a_redis_restart_nobody_noticed_is_found_by_the_leases_epoch(store, cache, redis_server, tgi) -> None:
    from tests.engine.conftest import build_world

    a = await build_world(store, cache, tgi, replica_id="a", replica_lease_s=60)
    b = restarted(a, replica_id="b", replica_lease_s=60)
    for name in ("a", "b"):
        assert await cache.lease(replica_key(name), name, 60)
    intake = await a.app.engine.accept(a.event("Who goes there?", message_id="m-a"))
    assert intake is not None
    assert await swept(b) == []
    # Redis restarts empty between two sweeps, and b's renewal comes first: only the epoch tells.
    await asyncio.to_thread(redis_server.kill)
    await asyncio.to_thread(redis_server.start)
    assert await cache.lease(replica_key("b"), "b", 60)
    assert await swept(b) == []
    assert await owner_of(a, intake.id) == "a"


async def test_a_turn_paused_past_its_locks_lease_stops_and_shows_and_stores_nothing_more(store, redis_server, tgi) -> None:
    import time

    import redis

    from core.hot import lock_key
    from core.reply import ReplyStatus
    from storage.cache_redis import RedisCache
    from tests.engine.conftest import build_world

    # Long enough that a starved loop (a loaded CI machine) still renews it before the first piece.
    lease = 3.0
    cache = RedisCache(redis_server.url, "pause:", retry_after=0.0, lock_lease=lease)
    try:
        a = await build_world(store, cache, tgi, replica_id="a")
        tgi.script(reply="Nay, answer me: stand, and unfold yourself, for this is the night.", token_delay=0.01)
        reply = a.app.engine.handle(a.event("Who goes there?", message_id="m-a"))
        deltas = reply.__aiter__()
        shown = [await deltas.__anext__()]
        # SIGSTOP as it looks from inside: the loop stands still past the lease (no renewal runs),
        # the lock expires, and another replica that took the message over takes the lock.
        time.sleep(lease * 1.5)
        key = cache.prefix + lock_key(reply.conversation)
        other = redis.Redis.from_url(redis_server.url)
        try:
            assert other.set(key, b"another-replica", nx=True, px=60_000)
        finally:
            other.close()
        shown += [d async for d in deltas]  # SIGCONT
        assert len(shown) == 1
        assert reply.status is ReplyStatus.LOST and reply.reply_message_id is None
        [pending] = await a.app.store.messages.pending("discord")
        assert pending.id == reply.intake.id  # left to the replica that took it over
    finally:
        await cache.close()
