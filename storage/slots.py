"""The model budget behind ``core.ports.ModelSlots``: on Redis when the cache is Redis, else in-process.

redis-py (a tenth of a second to import) is imported only for a cache that is not the in-process one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from storage.cache_memory import MemoryCache
from storage.slots_memory import LocalSlots

if TYPE_CHECKING:
    from storage.cache_redis import RedisCache
    from storage.slots_redis import RedisSlots

__all__ = ["LocalSlots", "open_slots"]


def open_slots(cache: RedisCache | MemoryCache | object, cap: int, share: float, lease_s: float) -> RedisSlots | LocalSlots:
    """Shared by every replica on a Redis cache; one process's own with the in-process cache."""
    if isinstance(cache, MemoryCache):
        return LocalSlots(cap, share)
    from storage.cache_redis import RedisCache
    from storage.slots_redis import RedisSlots

    if isinstance(cache, RedisCache):
        return RedisSlots(cache, cap, share, lease_s)
    return LocalSlots(cap, share)
