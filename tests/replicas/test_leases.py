"""Leases between replicas on a throwaway Redis: a holder cut off from Redis lets go once its lease
may have expired (another replica may hold it by then), and model slots survive a Redis restart."""

from __future__ import annotations

import asyncio

import pytest

from bots.replicas import Lease
from storage.cache_redis import RedisCache
from tests.throwaway import ThrowawayRedis, free_port

TTL_S = 0.6


@pytest.fixture
def redis_server():
    server = ThrowawayRedis().start()
    yield server
    server.close()


async def test_a_holder_cut_off_from_redis_stops_leading_within_its_lease(redis_server) -> None:
    a, b = RedisCache(redis_server.url, "t:", retry_after=0.0), RedisCache(redis_server.url, "t:", retry_after=0.0)
    cut_off = RedisCache(f"redis://127.0.0.1:{free_port()}/0", "t:", retry_after=0.0)  # nothing listens there
    try:
        la, lb = Lease(a, "poller", "A", TTL_S), Lease(b, "poller", "B", TTL_S)
        assert await la.renew() and not await lb.renew()
        la.cache = cut_off  # A loses Redis (a partition): every renewal answers "cannot tell"
        assert await la.renew()  # within its lease A keeps its role
        await asyncio.sleep(TTL_S)  # the key expires in Redis, and A's own clock says it may have
        b_holds = await lb.renew()
        a_holds = await la.renew()
        assert b_holds and not a_holds and la.changed.is_set()
        la.cache = a  # back: A does not take it from B
        assert not await la.renew() and await lb.renew()
    finally:
        for cache in (a, b, cut_off):
            await cache.close()
