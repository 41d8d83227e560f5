"""``core.ports.Cache`` inside one process: for a single bot process with no Redis."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable, Mapping, Sequence

from core.ports import Admission, AdmitRequest
from storage.held import StagedWrites
from core.locks import KeyedLocks

log = logging.getLogger(__name__)


class MemoryCache:
    """A dict with lazy expiry, a periodic sweep and a size cap, plus per-key asyncio locks."""

    shared = False  # one process: no replica sees it

    # round_trips counts calls the way RedisCache counts pipelines, so that benchmarks read alike.

    def __init__(
        self, *, max_entries: int = 200_000, sweep_every: float = 30.0, lock_wait: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.round_trips = 0
        self._clock = clock  # what expiries are measured on (tests pass a clock they move)
        self._data: dict[str, tuple[bytes, float]] = {}  # key -> (value, monotonic expiry)
        self._max_entries = max_entries
        self._sweep_every = sweep_every
        self._next_sweep = self._clock() + sweep_every
        self._lock_wait = lock_wait
        self._locks = KeyedLocks()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def locks_in_use(self) -> int:
        return len(self._locks)

    def _get(self, key: str, now: float) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] <= now:
            del self._data[key]
            return None
        return item[0]

    def _set(self, key: str, value: bytes, expires: float) -> None:
        # Re-inserting moves the key to the end, so the dict's order is oldest write first.
        self._data.pop(key, None)
        self._data[key] = (value, expires)

    def _tidy(self, now: float) -> None:
        """Drop expired entries now and then, and the oldest writes past the size cap."""
        if now >= self._next_sweep or len(self._data) > self._max_entries:
            self._next_sweep = now + self._sweep_every
            for key in [k for k, (_, expires) in self._data.items() if expires <= now]:
                del self._data[key]
            excess = len(self._data) - self._max_entries
            if excess > 0:
                # Evict a tenth more than needed so that the next writes do not sweep again at once.
                for key in list(self._data)[: excess + self._max_entries // 10]:
                    del self._data[key]

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self.round_trips += 1
        now = self._clock()
        return [self._get(k, now) for k in keys]

    async def set_many(self, items: Mapping[str, bytes], ttl: float) -> None:
        self.round_trips += 1
        now = self._clock()
        for key, value in items.items():
            self._set(key, value, now + ttl)
        self._tidy(now)

    async def delete(self, *keys: str) -> None:
        self.round_trips += 1
        for key in keys:
            self._data.pop(key, None)

    async def delete_prefix(self, prefix: str) -> None:
        self.round_trips += 1
        for key in [k for k in self._data if k.startswith(prefix)]:
            del self._data[key]

    async def admit(
        self, dedupe_key: str | None, dedupe_ttl: float, rate_key: str, rate_window: float, read: Sequence[str] = ()
    ) -> Admission:
        self.round_trips += 1
        now = self._clock()
        admission = self._admit(AdmitRequest(dedupe_key, dedupe_ttl, rate_key, rate_window), now)
        admission.values = [self._get(k, now) for k in read]
        return admission

    def _admit(self, request: AdmitRequest, now: float) -> Admission:
        dedupe_key, dedupe_ttl, rate_key, rate_window = (
            request.dedupe_key, request.dedupe_ttl, request.rate_key, request.rate_window,
        )
        first = dedupe_key is None or self._get(dedupe_key, now) is None
        if first and dedupe_key is not None:
            self._set(dedupe_key, b"1", now + dedupe_ttl)
        counted = self._get(rate_key, now)
        if counted is None:
            count, expires = 1, now + rate_window
        else:
            count, expires = int(counted) + 1, self._data[rate_key][1]
        # Counters are kept as decimal bytes, as Redis INCR keeps them.
        self._data[rate_key] = (str(count).encode(), expires)
        self._tidy(now)
        return Admission(first=first, count=count)

    @asynccontextmanager
    async def hold(
        self, lock_key: str, *, ttl: float, read: Sequence[str] = (), admit: AdmitRequest | None = None
    ) -> AsyncIterator[StagedWrites]:
        """Lock ``lock_key`` within this process; waits at most ``lock_wait`` (default ``ttl``), then goes ahead."""
        wait = ttl if self._lock_wait is None else self._lock_wait
        async with self._locks.hold(lock_key, timeout=wait) as locked:
            if not locked:
                log.warning("lock %r still held after %.1fs; going ahead without it", lock_key, wait)
            self.round_trips += 1
            now = self._clock()
            held = StagedWrites([self._get(k, now) for k in read])
            if admit is not None:
                held.admission = self._admit(admit, now)
            completed = False
            try:
                yield held
                completed = True
            finally:
                self._release(held, completed)

    def _release(self, held: StagedWrites, completed: bool) -> None:
        self.round_trips += 1
        now = self._clock()
        for key, (value, ttl) in held.writes.items():
            # After an exception the staged values may not match the database: drop the keys instead.
            if value is None or not completed:
                self._data.pop(key, None)
            else:
                self._set(key, value, now + ttl)
        self._tidy(now)

    async def lease(self, key: str, owner: str, ttl: float) -> bool | None:
        self.round_trips += 1
        now = self._clock()
        holder = self._get(key, now)
        if holder is not None and holder != owner.encode():
            return False
        self._set(key, owner.encode(), now + ttl)
        return True

    async def release(self, key: str, owner: str) -> None:
        self.round_trips += 1
        if self._get(key, self._clock()) == owner.encode():
            self._data.pop(key, None)

    async def close(self) -> None:
        self._data.clear()
