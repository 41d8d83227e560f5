"""The cache behind ``core.ports.Cache``: Redis when configured, else an in-process one."""

from __future__ import annotations

from storage.cache_memory import MemoryCache
from storage.cache_redis import RedisCache
from storage.errors import CacheUnavailable

__all__ = ["MemoryCache", "RedisCache", "connect_cache", "open_cache"]


def open_cache(redis_url: str | None, prefix: str = "personae:") -> RedisCache | MemoryCache:
    """RedisCache for a URL, MemoryCache for None (one bot process, nothing to share)."""
    return RedisCache(redis_url, prefix) if redis_url else MemoryCache()


async def connect_cache(redis_url: str | None, prefix: str = "personae:") -> RedisCache | MemoryCache:
    """``open_cache``, and for Redis a first PING: CacheUnavailable says in one line why it cannot be used."""
    if not redis_url:
        return MemoryCache()
    try:
        cache = RedisCache(redis_url, prefix)
    except ValueError as exc:  # redis-py's word for a URL it cannot read
        raise CacheUnavailable(f"{_without_password(redis_url)!r} is not a Redis URL ({exc}); use redis://host:6379/0") from None
    try:
        await cache.check()
    except BaseException:
        await cache.close()
        raise
    return cache


def _without_password(url: str) -> str:
    head, at, tail = url.rpartition("@")
    return f"{head.partition('//')[0]}//{tail}" if at else url
