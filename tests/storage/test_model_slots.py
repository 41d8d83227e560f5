"""The model budget (``ModelSlots``): a cap shared by replicas, leases, fair shares, replies first.

Two "replicas" are two RedisSlots on their own Redis connections with the same key prefix; the
in-process one (``LocalSlots``) keeps the same rules in one process. Order is asserted on events.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import AsyncIterator

import pytest

from storage.cache_redis import RedisCache
from storage.slots import LocalSlots
from storage.slots_redis import RedisSlots
from tests.conftest import TEST_REDIS_URL

SERVER = "http://gpu:8080"


@pytest.fixture
async def replicas(redis_prefix: str) -> AsyncIterator[list[RedisCache]]:
    prefix = f"{redis_prefix}{secrets.token_hex(4)}:"
    caches = [RedisCache(TEST_REDIS_URL, prefix), RedisCache(TEST_REDIS_URL, prefix)]
    yield caches
    for cache in caches:
        await cache.close()


class Holder:
    """Requests that take a slot, say so (in order), and hold it until let go."""

    def __init__(self) -> None:
        self.admitted: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.go: dict[str, asyncio.Event] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()

    def start(self, slots, name: str, channel: str, *, low: bool = False) -> None:
        self.go[name] = asyncio.Event()
        self.tasks.append(asyncio.create_task(self._run(slots, name, channel, low)))

    async def _run(self, slots, name: str, channel: str, low: bool) -> None:
        async with slots.slot(SERVER, channel, low=low):
            self.admitted.append(name)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._changed.set()
            await self.go[name].wait()
            self.in_flight -= 1

    async def until_admitted(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.admitted) < count:
                self._changed.clear()
                await self._changed.wait()

    def let_go(self, name: str) -> None:
        self.go[name].set()

    async def finish(self) -> None:
        for event in self.go.values():
            event.set()
        async with asyncio.timeout(10):
            await asyncio.gather(*self.tasks)


async def asked(slots: RedisSlots, times: int) -> None:
    """Wait until ``slots`` has asked Redis ``times`` times (waiters have made their first ask)."""
    async with asyncio.timeout(10):
        while slots.acquire_trips < times:
            await asyncio.sleep(0.005)


async def test_two_replicas_never_hold_more_than_the_cap(replicas: list[RedisCache]) -> None:
    a, b = RedisSlots(replicas[0], 3, 1.0), RedisSlots(replicas[1], 3, 1.0)
    holder = Holder()
    for i in range(6):
        holder.start(a if i % 2 else b, f"r{i}", f"c{i}")
    await holder.until_admitted(3)
    await asked(a, 3)
    await asked(b, 3)
    assert len(holder.admitted) == 3
    for name in list(holder.admitted):
        holder.let_go(name)
    await holder.until_admitted(6)
    await holder.finish()
    assert holder.max_in_flight == 3
    await a.close()
    await b.close()


async def test_a_dead_replicas_slots_come_back_after_its_lease(replicas: list[RedisCache]) -> None:
    # Long enough that a starved event loop (a busy machine) still renews in time: the test is
    # about a lease outliving its renewals, not about how fast they run.
    lease = 2.0
    dying, alive = RedisSlots(replicas[0], 2, 1.0, lease), RedisSlots(replicas[1], 2, 1.0, lease)
    holder = Holder()
    holder.start(dying, "d1", "c1")
    holder.start(dying, "d2", "c2")
    await holder.until_admitted(2)
    holder.start(alive, "a1", "c3")
    # While the holder renews, more than a lease passes and the slots stay taken.
    await asyncio.sleep(lease * 1.25)
    assert sorted(holder.admitted) == ["d1", "d2"]  # admitted in either order
    dying.stop_renewing()  # the replica dies: its requests never give their slots back
    await holder.until_admitted(3)
    assert holder.admitted[-1] == "a1"
    await holder.finish()
    await dying.close()
    await alive.close()


@pytest.fixture(params=["redis", "memory"])
async def two_sided(request: pytest.FixtureRequest, redis_prefix: str):
    """A factory of (replica one, replica two) slots: two RedisSlots on one prefix, or one LocalSlots."""
    made: list = []

    def make(cap: int, share: float):
        if request.param == "memory":
            local = LocalSlots(cap, share)
            return local, local
        prefix = f"{redis_prefix}{secrets.token_hex(4)}:"
        caches = [RedisCache(TEST_REDIS_URL, prefix), RedisCache(TEST_REDIS_URL, prefix)]
        made.extend(caches)
        return RedisSlots(caches[0], cap, share), RedisSlots(caches[1], cap, share)

    yield make
    for cache in made:
        await cache.close()


async def waiting(slots, times: int) -> None:
    if isinstance(slots, RedisSlots):
        await asked(slots, times)
    else:
        for _ in range(20):
            await asyncio.sleep(0)


async def test_a_busy_channel_does_not_starve_another(two_sided) -> None:
    one, two = two_sided(2, 0.5)  # one channel holds at most one of the two slots
    holder = Holder()
    for i in range(5):
        holder.start(one, f"busy{i}", "busy")
    await holder.until_admitted(1)
    await waiting(one, 5)
    holder.start(two, "quiet", "quiet")
    await holder.until_admitted(2)
    # The quiet channel's one request went in before the busy channel's second.
    assert holder.admitted[0].startswith("busy") and holder.admitted[1] == "quiet"
    await holder.finish()
    assert sorted(holder.admitted) == sorted(f"busy{i}" for i in range(5)) + ["quiet"]


async def test_replies_go_before_appraisals(two_sided) -> None:
    one, two = two_sided(1, 1.0)
    holder = Holder()
    holder.start(one, "reply0", "c1")
    await holder.until_admitted(1)
    holder.start(one, "appraisal", "c2", low=True)
    await waiting(one, 2)
    holder.start(two, "reply1", "c3")
    await waiting(two, 1)
    holder.let_go("reply0")
    await holder.until_admitted(2)
    assert holder.admitted == ["reply0", "reply1"]
    holder.let_go("reply1")
    await holder.until_admitted(3)
    assert holder.admitted[-1] == "appraisal"
    await holder.finish()


async def test_redis_away_lets_requests_go_on_the_process_cap() -> None:
    cache = RedisCache("redis://127.0.0.1:1/0", "nowhere:", connect_timeout=0.2)
    slots = RedisSlots(cache, 1, 1.0)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(slots.slot(SERVER, "c"))
        await stack.enter_async_context(slots.slot(SERVER, "c"))  # not refused: nothing to count on
    await cache.close()
