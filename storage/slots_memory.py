"""``core.ports.ModelSlots`` in one process (the in-process cache: SQLite or memory, one replica)."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import asynccontextmanager
from typing import AsyncIterator

from core.slots import channel_cap


class LocalSlots:
    """At most ``cap`` requests in flight per model server, one channel at most ``share`` of them,
    and low-priority requests only while no reply waits: the same rules as ``RedisSlots``, for one
    process (nothing outlives it, so there are no leases)."""

    def __init__(self, cap: int, share: float) -> None:
        if cap < 1:
            raise ValueError("the model budget must be at least 1")
        self.cap = cap
        self.channel_cap = channel_cap(cap, share)
        self._held: Counter[str] = Counter()
        self._held_by: Counter[tuple[str, str]] = Counter()
        self._waiting: dict[str, set[object]] = {}  # replies waiting for a full server
        self._changed = asyncio.Condition()
        self.acquired = 0

    def in_flight(self, server: str) -> int:
        return self._held[server]

    def _free(self, server: str, channel: str, low: bool, me: object) -> bool:
        """Whether a slot is free for this request; a reply refused because the server is full
        counts as waiting (low-priority requests give way to it)."""
        waiting = self._waiting.setdefault(server, set())
        if self._held[server] >= self.cap:
            if not low:
                waiting.add(me)
            return False
        waiting.discard(me)
        if self._held_by[server, channel] >= self.channel_cap:
            return False
        return not (low and waiting)

    @asynccontextmanager
    async def slot(self, server: str, channel: str, *, low: bool = False) -> AsyncIterator[None]:
        me = object()
        async with self._changed:
            try:
                await self._changed.wait_for(lambda: self._free(server, channel, low, me))
            finally:
                if me in self._waiting.get(server, ()):
                    self._waiting[server].discard(me)
                    self._changed.notify_all()
            self._held[server] += 1
            self._held_by[server, channel] += 1
            self.acquired += 1
            self._changed.notify_all()  # a reply that stopped waiting may let a low-priority request in
        try:
            yield
        finally:
            async with self._changed:
                self._held[server] -= 1
                self._held_by[server, channel] -= 1
                self._changed.notify_all()

    async def close(self) -> None:
        return None
