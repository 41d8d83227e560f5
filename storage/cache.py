"""The cache behind ``core.ports.Cache``: Redis when configured, else an in-process one."""

from __future__ import annotations

from storage.cache_memory import MemoryCache
from storage.cache_redis import RedisCache

__all__ = ["MemoryCache", "RedisCache", "open_cache"]


def open_cache(redis_url: str | None, prefix: str = "personae:") -> RedisCache | MemoryCache:
    """RedisCache for a URL, MemoryCache for None (one bot process, nothing to share)."""
    return RedisCache(redis_url, prefix) if redis_url else MemoryCache()
