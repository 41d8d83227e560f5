"""Both caches: values with expiry, admission (dedupe and rate counting), and held locks with staged writes."""

from __future__ import annotations

import asyncio

import pytest

from storage.cache import MemoryCache
from storage.cache_redis import RedisCache
from tests.conftest import TEST_REDIS_URL


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def clocked(cache_backend: str | None):
    """Like ``cache``, but the in-process cache runs on a ``Clock`` the test moves (no sleeping)."""
    import secrets

    instance = MemoryCache(clock=Clock()) if cache_backend is None else RedisCache(TEST_REDIS_URL, f"{cache_backend}{secrets.token_hex(4)}:")
    yield instance
    await instance.close()


async def expire(cache, key: str, ttl: float) -> None:
    """Let ``key``'s ``ttl`` run out without sleeping: the in-process cache's clock moves past it; on
    Redis the key's PTTL is checked to be the one asked for, and the key removed, as Redis would."""
    if isinstance(cache, MemoryCache):
        cache._clock.now += ttl + 0.001
        return
    pttl = await cache._redis.pttl(cache._key(key))
    assert 0 < pttl <= ttl * 1000, pttl
    await cache._redis.unlink(cache._key(key))


async def test_values_are_set_read_deleted_and_expire(cache) -> None:
    assert await cache.get_many([]) == []
    await cache.set_many({"a": b"1", "b": b"\x00\xff binary"}, ttl=60)
    assert await cache.get_many(["a", "b", "missing"]) == [b"1", b"\x00\xff binary", None]
    await cache.delete("a", "missing")
    assert await cache.get_many(["a", "b"]) == [None, b"\x00\xff binary"]

    await cache.set_many({"short": b"x"}, ttl=0.15)
    assert await cache.get_many(["short"]) == [b"x"]


async def test_a_value_expires_after_its_ttl(clocked) -> None:
    await clocked.set_many({"short": b"x"}, ttl=0.15)
    assert await clocked.get_many(["short"]) == [b"x"]
    if isinstance(clocked, MemoryCache):
        clocked._clock.now += 0.149
        assert await clocked.get_many(["short"]) == [b"x"]  # not before the TTL
    await expire(clocked, "short", 0.15)
    assert await clocked.get_many(["short"]) == [None]


async def test_admit_sets_the_dedupe_key_once_and_counts_hits_in_the_window(clocked) -> None:
    first = await clocked.admit("e:1", 60, "rate:u1", 30)
    again = await clocked.admit("e:1", 60, "rate:u1", 30)
    other = await clocked.admit("e:2", 60, "rate:u1", 30)
    assert (first.first, first.count) == (True, 1)
    assert (again.first, again.count) == (False, 2)
    assert (other.first, other.count) == (True, 3)
    assert (await clocked.admit("e:3", 60, "rate:u2", 30)).count == 1

    await expire(clocked, "rate:u1", 30)  # the window is over (the dedupe key's 60 s are not)
    # A new window starts with the next hit; the dedupe key lives on.
    fresh = await clocked.admit("e:1", 60, "rate:u1", 30)
    assert (fresh.first, fresh.count) == (False, 1)


async def test_admit_reads_the_requested_keys_in_the_same_call(cache) -> None:
    await cache.set_many({"binding": b"B", "state": b"S"}, ttl=60)
    admission = await cache.admit("e:9", 60, "rate:9", 60, read=["binding", "nothing", "state"])
    assert admission.values == [b"B", None, b"S"]
    assert (await cache.admit("e:10", 60, "rate:9", 60)).values == []


async def test_the_dedupe_key_expires(clocked) -> None:
    assert (await clocked.admit("e:short", 0.15, "rate:s", 60)).first
    assert not (await clocked.admit("e:short", 0.15, "rate:s", 60)).first
    await expire(clocked, "e:short", 0.15)
    assert (await clocked.admit("e:short", 0.15, "rate:s", 60)).first


async def test_hold_serialises_in_arrival_order(cache) -> None:
    order: list[int] = []
    inside = 0
    most_inside = 0

    async def turn(i: int) -> None:
        nonlocal inside, most_inside
        async with cache.hold("conv:1", ttl=10):
            inside += 1
            most_inside = max(most_inside, inside)
            await asyncio.sleep(0.01)
            order.append(i)
            inside -= 1

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(turn(i)))
        await asyncio.sleep(0)  # each task reaches the lock before the next starts
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert most_inside == 1


async def test_hold_reads_on_entry_and_writes_staged_values_on_release(cache) -> None:
    await cache.set_many({"history": b"old", "state": b"s0"}, ttl=60)
    async with cache.hold("conv:2", ttl=10, read=["history", "state", "missing"]) as held:
        assert held.values == [b"old", b"s0", None]
        held.stage("history", b"new", 60)
        held.stage("state", None, 60)
        held.stage("history", b"newer", 60)  # the last staged value wins
        # Nothing is written before the release.
        assert await cache.get_many(["history", "state"]) == [b"old", b"s0"]
    assert await cache.get_many(["history", "state"]) == [b"newer", None]

    async with cache.hold("conv:2", ttl=10, read=["history"]) as held:
        assert held.values == [b"newer"]


async def test_the_lock_is_released_after_an_exception_and_staged_keys_are_dropped(cache) -> None:
    await cache.set_many({"history": b"old"}, ttl=60)
    with pytest.raises(RuntimeError):
        async with cache.hold("conv:3", ttl=30, read=["history"]) as held:
            held.stage("history", b"half-done", 60)
            raise RuntimeError("the turn failed")
    # The database may not have what was staged, so the cached copy is removed, not overwritten.
    assert await cache.get_many(["history", "conv:3"]) == [None, None]
    assert cache.locks_in_use == 0
    async with asyncio.timeout(5):  # a guard against a hang, not a timing assertion
        async with cache.hold("conv:3", ttl=30):
            pass


async def test_locks_are_forgotten_when_nobody_holds_or_waits(cache) -> None:
    async def turn(key: str) -> None:
        async with cache.hold(key, ttl=10):
            await asyncio.sleep(0)

    await asyncio.gather(*(turn(f"conv:{i % 50}") for i in range(500)))
    assert cache.locks_in_use == 0


async def test_a_lock_held_too_long_is_given_up_on(cache_backend) -> None:
    from tests.conftest import TEST_REDIS_URL

    if cache_backend is None:
        cache = MemoryCache(lock_wait=0.1)
    else:
        cache = RedisCache(TEST_REDIS_URL, f"{cache_backend}wait:", lock_wait=0.1)
    try:
        entered = asyncio.Event()
        release = asyncio.Event()

        async def stuck() -> None:
            async with cache.hold("conv:4", ttl=30):
                entered.set()
                await release.wait()

        holder = asyncio.create_task(stuck())
        await entered.wait()
        async with asyncio.timeout(5):
            async with cache.hold("conv:4", ttl=30):
                pass  # got through without the lock, after lock_wait
        release.set()
        await holder
        assert cache.locks_in_use == 0
    finally:
        await cache.close()


async def test_delete_prefix_deletes_only_keys_with_that_prefix(cache) -> None:
    await cache.set_many({"p:1:a": b"1", "p:1:b": b"2", "p:10:a": b"3", "p*x": b"4", "p:1": b"5"}, ttl=60)
    await cache.delete_prefix("p:1:")
    assert await cache.get_many(["p:1:a", "p:1:b", "p:10:a", "p*x", "p:1"]) == [None, None, b"3", b"4", b"5"]
    await cache.delete_prefix("p*")  # glob characters are literal
    assert await cache.get_many(["p:10:a", "p*x"]) == [b"3", None]


async def test_round_trips_are_counted(cache) -> None:
    before = cache.round_trips
    await cache.get_many(["a"])
    await cache.admit("e", 60, "r", 60, read=["a"])
    assert cache.round_trips - before == 2


async def test_hold_admits_the_event_in_the_same_round_trip_as_the_lock(cache) -> None:
    from core.ports import AdmitRequest

    request = AdmitRequest("e:discord:c:m1", 60, "r:discord:u1", 60)
    before = cache.round_trips
    async with cache.hold("l:conv", ttl=5, read=("k",), admit=request) as held:
        assert held.admission.first and held.admission.count == 1
        assert cache.round_trips - before == 1
    async with cache.hold("l:conv", ttl=5, admit=request) as held:
        assert not held.admission.first and held.admission.count == 2
    async with cache.hold("l:conv", ttl=5) as held:
        assert held.admission is None
