"""MemoryCache specifics: memory stays bounded by sweeping expired entries and capping the size."""

from __future__ import annotations

from core.ports import AdmitRequest
from storage.cache import MemoryCache, open_cache
from storage.cache_redis import RedisCache


async def test_expired_entries_are_swept_even_if_never_read_again() -> None:
    now = [1000.0]
    cache = MemoryCache(sweep_every=30, clock=lambda: now[0])
    await cache.set_many({f"k{i}": b"x" for i in range(1000)}, ttl=5)
    await cache.admit("e", 5, "r", 5)
    now[0] += 29  # expired, but no sweep is due yet: nothing was read, nothing is gone
    await cache.set_many({"fresh": b"y"}, ttl=60)
    assert len(cache) == 1003
    now[0] += 1  # the sweep is due
    await cache.set_many({"fresh": b"y"}, ttl=60)
    assert len(cache) == 1


async def test_the_oldest_writes_go_first_past_the_size_cap() -> None:
    cache = MemoryCache(max_entries=100)
    for i in range(1000):
        await cache.set_many({f"k{i}": b"x"}, ttl=60)
    assert len(cache) <= 100
    assert await cache.get_many(["k999", "k0"]) == [b"x", None]


async def test_open_cache_picks_redis_for_a_url_and_memory_otherwise() -> None:
    assert isinstance(open_cache(None), MemoryCache)
    redis_cache = open_cache("redis://127.0.0.1:1/0")
    assert isinstance(redis_cache, RedisCache) and redis_cache.prefix == "personae:"
    await redis_cache.close()


async def test_the_rate_window_is_fixed_from_its_first_hit_not_pushed_back_by_later_ones() -> None:
    now = [1000.0]
    cache = MemoryCache(clock=lambda: now[0])  # the cache's clock only
    assert (await cache.admit(None, 0, "rate", 60)).count == 1
    now[0] += 50
    assert (await cache.admit(None, 0, "rate", 60)).count == 2
    async with cache.hold("conv", ttl=5, admit=AdmitRequest(None, 0, "rate", 60)) as held:
        assert held.admission is not None and held.admission.count == 3
    now[0] += 10.5  # 60.5 s after the first hit: its window is over, whatever came later
    assert (await cache.admit(None, 0, "rate", 60)).count == 1
