"""The cache behind ``core.ports.Cache``: Redis when configured, else an in-process one.

``storage.cache_redis`` (and redis-py, a tenth of a second to import) is imported only for a Redis URL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from storage.cache_memory import MemoryCache
from storage.errors import CacheUnavailable

if TYPE_CHECKING:
    from storage.cache_redis import RedisCache

__all__ = ["MemoryCache", "connect_cache", "open_cache"]


def open_cache(redis_url: str | None, prefix: str = "personae:") -> RedisCache | MemoryCache:
    """RedisCache for a URL, MemoryCache for None (one bot process, nothing to share)."""
    if not redis_url:
        return MemoryCache()
    from storage.cache_redis import RedisCache

    return RedisCache(redis_url, prefix)


async def connect_cache(redis_url: str | None, prefix: str = "personae:", *, lock_lease: float = 15.0) -> RedisCache | MemoryCache:
    """``open_cache``, and for Redis a first PING: CacheUnavailable says in one line why it cannot be used.
    ``lock_lease``: how long a conversation lock outlasts its holder's last renewal (a dead process's, at most)."""
    if not redis_url:
        return MemoryCache()
    from storage.cache_redis import RedisCache

    try:
        cache = RedisCache(redis_url, prefix, lock_lease=lock_lease)
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
