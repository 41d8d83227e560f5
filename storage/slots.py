"""The model budget behind ``core.ports.ModelSlots``: on Redis when the cache is Redis, else in-process."""

from __future__ import annotations

from storage.cache_memory import MemoryCache
from storage.cache_redis import RedisCache
from storage.slots_memory import LocalSlots
from storage.slots_redis import RedisSlots

__all__ = ["LocalSlots", "RedisSlots", "open_slots"]


def open_slots(cache: RedisCache | MemoryCache | object, cap: int, share: float, lease_s: float) -> RedisSlots | LocalSlots:
    """Shared by every replica on a Redis cache; one process's own with the in-process cache."""
    if isinstance(cache, RedisCache):
        return RedisSlots(cache, cap, share, lease_s)
    return LocalSlots(cap, share)
