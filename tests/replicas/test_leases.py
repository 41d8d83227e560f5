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


async def test_model_slots_held_through_a_redis_restart_are_taken_again_and_the_cap_holds(redis_server) -> None:
    from storage.slots_redis import RedisSlots

    c1, c2 = RedisCache(redis_server.url, "s:", retry_after=0.0), RedisCache(redis_server.url, "s:", retry_after=0.0)
    s1, s2 = RedisSlots(c1, cap=1, share=1.0, lease_s=TTL_S), RedisSlots(c2, cap=1, share=1.0, lease_s=TTL_S)
    held_key = s1._keys("srv", "ch")[0]
    inside, peak, release = 0, 0, asyncio.Event()
    first_in, second_in = asyncio.Event(), asyncio.Event()

    async def request(slots, entered: asyncio.Event, hold) -> None:
        nonlocal inside, peak
        async with slots.slot("srv", "ch"):
            inside += 1
            peak = max(peak, inside)
            entered.set()
            await hold()
            inside -= 1

    first = asyncio.create_task(request(s1, first_in, release.wait))
    try:
        await first_in.wait()
        await asyncio.to_thread(redis_server.kill)  # restarts empty while the first request runs
        await asyncio.to_thread(redis_server.start)
        # The holder's next renewals put its slot back (before the fix it stayed gone).
        for _ in range(40):
            if await c1._redis.zcard(held_key) == 1:
                break
            await asyncio.sleep(TTL_S / 6)
        assert await c1._redis.zcard(held_key) == 1
        second = asyncio.create_task(request(s2, second_in, lambda: asyncio.sleep(0)))
        await asyncio.sleep(TTL_S)  # several renewals and asks: the second waits for the slot
        assert not second_in.is_set()
        release.set()
        await first
        await second
        assert peak == 1
    finally:
        release.set()
        for slots in (s1, s2):
            await slots.close()
        for cache in (c1, c2):
            await cache.close()
