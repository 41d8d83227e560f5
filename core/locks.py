"""Per-key asyncio locks that keep arrival order and disappear when nobody holds or waits on them."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # holders plus waiters


class KeyedLocks:
    """One ``asyncio.Lock`` per key while in use; asyncio.Lock wakes waiters first come, first served."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @asynccontextmanager
    async def hold(self, key: str, timeout: float | None = None) -> AsyncIterator[bool]:
        """Hold ``key``'s lock; yields False (not holding it) if ``timeout`` seconds pass first."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        acquired = False
        try:
            try:
                async with asyncio.timeout(timeout):
                    await entry.lock.acquire()
                acquired = True
            except TimeoutError:
                pass
            yield acquired
        finally:
            if acquired:
                entry.lock.release()
            entry.users -= 1
            if entry.users == 0 and self._entries.get(key) is entry:
                del self._entries[key]
