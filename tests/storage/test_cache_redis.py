"""RedisCache specifics: one pipeline per call, a lock shared between processes, and outages that never raise."""

from __future__ import annotations

import asyncio
import logging
import secrets

import pytest

from core.ports import AdmitRequest
from storage.cache_redis import RedisCache
from tests.conftest import TEST_REDIS_URL
from tests.storage.conftest import through
from tests.storage.helpers import TcpProxy


@pytest.fixture
async def prefix(redis_prefix: str) -> str:
    return f"{redis_prefix}{secrets.token_hex(4)}:"


@pytest.fixture
async def redis_cache(prefix: str):
    cache = RedisCache(TEST_REDIS_URL, prefix)
    yield cache
    await cache.close()


async def test_admit_and_each_side_of_hold_are_one_pipeline(redis_cache: RedisCache) -> None:
    async with redis_cache.hold("warm-up", ttl=5):
        pass  # the first lock also registers the release script
    counted = redis_cache.round_trips
    await redis_cache.admit("e:1", 60, "rate:1", 60, read=["a", "b"])
    assert redis_cache.round_trips - counted == 1

    counted = redis_cache.round_trips
    async with redis_cache.hold("conv:1", ttl=5, read=["a", "b"]) as held:
        assert redis_cache.round_trips - counted == 1
        held.stage("a", b"1", 60)
        held.stage("b", None, 60)
    assert redis_cache.round_trips - counted == 2

    counted = redis_cache.round_trips
    await redis_cache.get_many(["a", "b"])
    await redis_cache.set_many({"a": b"2", "c": b"3"}, 60)
    assert redis_cache.round_trips - counted == 2


async def test_the_rate_window_is_fixed_from_its_first_hit_not_pushed_back_by_later_ones(redis_cache: RedisCache) -> None:
    raw = redis_cache._redis
    key = redis_cache._key("rate:fixed")
    assert (await redis_cache.admit(None, 0, "rate:fixed", 60)).count == 1
    assert 59_000 < await raw.pttl(key) <= 60_000
    # Time passes (read off the key, not waited for): 2 s of the 60 s window are left.
    await raw.pexpire(key, 2_000)
    assert (await redis_cache.admit(None, 0, "rate:fixed", 60)).count == 2
    assert 0 < await raw.pttl(key) <= 2_000
    async with redis_cache.hold("conv:fixed", ttl=5, admit=AdmitRequest(None, 0, "rate:fixed", 60)) as held:
        assert held.admission is not None and held.admission.count == 3
    assert 0 < await raw.pttl(key) <= 2_000


async def test_every_key_carries_the_prefix(redis_cache: RedisCache, prefix: str) -> None:
    await redis_cache.set_many({"k": b"v"}, 60)
    await redis_cache.admit("d", 60, "r", 60)
    raw = redis_cache._redis
    assert await raw.mget([f"{prefix}k", f"{prefix}d", f"{prefix}r"]) == [b"v", b"1", b"1"]
    assert await raw.get("k") is None


async def test_two_processes_take_turns_on_one_lock(prefix: str) -> None:
    a, b = RedisCache(TEST_REDIS_URL, prefix), RedisCache(TEST_REDIS_URL, prefix)
    try:
        events: list[str] = []
        a_inside = asyncio.Event()
        b_asking = asyncio.Event()

        async def in_a() -> None:
            async with a.hold("conv", ttl=10) as held:
                a_inside.set()
                events.append("a in")
                await b_asking.wait()
                tried = b.round_trips
                while b.round_trips < tried + 2:  # b has asked Redis for the lock and been refused twice
                    await asyncio.sleep(0.005)
                held.stage("history", b"from a", 60)
                events.append("a out")

        async def in_b() -> None:
            await a_inside.wait()
            b_asking.set()
            async with b.hold("conv", ttl=10, read=["history"]) as held:
                events.append(f"b in, saw {held.values[0]!r}")

        await asyncio.gather(in_a(), in_b())
        assert events == ["a in", "a out", "b in, saw b'from a'"]
    finally:
        await a.close()
        await b.close()


async def test_an_expired_lock_is_taken_over_and_the_late_owner_does_not_delete_it(prefix: str) -> None:
    a, b = RedisCache(TEST_REDIS_URL, prefix), RedisCache(TEST_REDIS_URL, prefix)
    try:
        a_inside = asyncio.Event()
        b_inside = asyncio.Event()
        a_done = asyncio.Event()

        async def slow_a() -> None:
            async with a.hold("conv", ttl=10):
                a_inside.set()
                await b_inside.wait()  # a outlives its lock's ttl
            a_done.set()

        async def b_after_expiry() -> bool:
            async with b.hold("conv", ttl=10):
                b_inside.set()
                await a_done.wait()
                # a's release ran while b held the lock: b's lock must still be there.
                return (await a._redis.get(f"{prefix}conv")) is not None

        task_a = asyncio.create_task(slow_a())
        await a_inside.wait()
        # a's lock runs out while a still works: its key is on a ttl, and goes as Redis lets it expire.
        assert 0 < await a._redis.pttl(f"{prefix}conv") <= 10_000
        await a._redis.unlink(f"{prefix}conv")
        assert await b_after_expiry()
        await task_a
        assert await a._redis.get(f"{prefix}conv") is None
    finally:
        await a.close()
        await b.close()


async def test_the_release_script_is_reloaded_after_redis_forgets_it(redis_cache: RedisCache, prefix: str) -> None:
    async with redis_cache.hold("conv", ttl=10):
        pass
    await redis_cache._redis.script_flush()
    async with redis_cache.hold("conv", ttl=10) as held:
        held.stage("k", b"v", 60)
    assert await redis_cache._redis.get(f"{prefix}conv") is None
    assert await redis_cache.get_many(["k"]) == [b"v"]


async def test_no_redis_at_all_means_misses_first_admissions_and_local_locks(caplog) -> None:
    cache = RedisCache("redis://127.0.0.1:1/0", "nowhere:", retry_after=0)
    caplog.set_level(logging.WARNING, logger="storage.cache_redis")
    try:
        await cache.set_many({"a": b"1"}, 60)
        assert await cache.get_many(["a", "b"]) == [None, None]
        await cache.delete("a")
        await cache.delete_prefix("")
        for _ in range(3):
            admission = await cache.admit("e", 60, "r", 60, read=["x", "y"])
            assert (admission.first, admission.count, admission.values) == (True, 0, [None, None])

        order: list[int] = []

        async def turn(i: int) -> None:
            async with cache.hold("conv", ttl=10, read=["h"]) as held:
                assert held.values == [None]
                held.stage("h", b"dropped", 60)
                await asyncio.sleep(0.01)
                order.append(i)

        tasks = []
        for i in range(3):
            tasks.append(asyncio.create_task(turn(i)))
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2]
        assert not cache.available
    finally:
        await cache.close()
    # One warning for the outage, not one per call.
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1


async def test_an_outage_mid_use_falls_back_and_recovery_clears_what_went_stale(redis_proxy: TcpProxy, prefix: str, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="storage.cache_redis")
    cache = RedisCache(through(redis_proxy), prefix, retry_after=0.05)
    direct = RedisCache(TEST_REDIS_URL, prefix)
    try:
        await cache.set_many({"history": b"v1", "state": b"s1"}, 60)
        assert await cache.get_many(["history"]) == [b"v1"]

        await redis_proxy.stop()  # Redis goes away between two calls
        assert await cache.get_many(["history", "state"]) == [None, None]
        assert (await cache.admit("e", 60, "r", 60, read=["history"])).values == [None]
        async with cache.hold("conv", ttl=10, read=["history"]) as held:
            assert held.values == [None]
            held.stage("history", b"v2", 60)  # dropped: Redis still holds v1
        await cache.set_many({"state": b"s2"}, 60)  # dropped too
        assert await direct.get_many(["history", "state"]) == [b"v1", b"s1"]

        await redis_proxy.start()  # Redis is back
        await asyncio.sleep(0.1)
        # The first call after the outage deletes the copies whose updates were lost.
        assert await cache.get_many(["history", "state"]) == [None, None]
        await cache.set_many({"history": b"v3"}, 60)
        assert await cache.get_many(["history"]) == [b"v3"]
        assert cache.available
    finally:
        await cache.close()
        await direct.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "unavailable" in m]) == 1
    assert any("reachable again" in m for m in messages)


async def test_a_prefix_deletion_lost_to_an_outage_is_done_when_redis_returns(redis_proxy: TcpProxy, prefix: str) -> None:
    cache = RedisCache(through(redis_proxy), prefix, retry_after=0.05)
    direct = RedisCache(TEST_REDIS_URL, prefix)
    try:
        await cache.set_many({"person:1:a": b"1", "person:2:a": b"2"}, 60)
        await redis_proxy.stop()
        await cache.delete_prefix("person:1:")  # /forget while Redis is away
        await redis_proxy.start()
        await asyncio.sleep(0.1)
        await cache.get_many(["anything"])  # the first successful call notices the recovery
        deadline = asyncio.get_running_loop().time() + 10  # a harness bound, not a timing assertion
        while await direct.get_many(["person:1:a"]) != [None] and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        assert await direct.get_many(["person:1:a", "person:2:a"]) == [None, b"2"]
    finally:
        await cache.close()
        await direct.close()


async def test_a_redis_restart_between_calls_is_not_an_outage(redis_proxy: TcpProxy, prefix: str, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="storage.cache_redis")
    cache = RedisCache(through(redis_proxy), prefix)
    try:
        await cache.set_many({"k": b"v"}, 60)
        await redis_proxy.stop()  # every pooled connection is cut
        await redis_proxy.start()
        await asyncio.sleep(0.05)
        assert await cache.get_many(["k"]) == [b"v"]  # a dead pooled connection is replaced, not reported
        assert cache.available
    finally:
        await cache.close()
    assert not [r for r in caplog.records if "unavailable" in r.getMessage()]


async def test_a_lock_is_held_on_a_short_lease_that_its_live_holder_renews(prefix: str) -> None:
    a = RedisCache(TEST_REDIS_URL, prefix, lock_lease=1.0)
    b = RedisCache(TEST_REDIS_URL, prefix, lock_lease=1.0)
    try:
        events: list[str] = []
        a_inside, a_may_leave = asyncio.Event(), asyncio.Event()

        async def in_a() -> None:
            async with a.hold("conv", ttl=95):
                # A process that dies now leaves a lock that expires within one lease, not the ttl.
                assert 0 < await a._redis.pttl(f"{prefix}conv") <= 1000
                a_inside.set()
                await a_may_leave.wait()
                events.append("a out")

        async def in_b() -> None:
            await a_inside.wait()
            async with b.hold("conv", ttl=95):
                events.append("b in")

        task_a, task_b = asyncio.create_task(in_a()), asyncio.create_task(in_b())
        await a_inside.wait()
        # Wait until a has renewed its lease (the time left goes up again) three times: b stays out.
        renewals, last = 0, await a._redis.pttl(f"{prefix}conv")
        while renewals < 3:
            await asyncio.sleep(0.02)
            now = await a._redis.pttl(f"{prefix}conv")
            assert now > 0, "the lease ran out while its holder was alive"
            renewals += now > last
            last = now
        assert not task_b.done() and events == []
        a_may_leave.set()
        await asyncio.gather(task_a, task_b)
        assert events == ["a out", "b in"]
    finally:
        await a.close()
        await b.close()


async def test_a_lock_that_redis_lost_in_an_outage_is_taken_back_by_its_holder(redis_proxy: TcpProxy, prefix: str) -> None:
    # Redis restarted empty while a turn held its conversation's lock: nobody else holds the lock,
    # so the holder takes it back and goes on, instead of stopping a half-shown reply that no
    # other replica takes over (the sweep presumes a live owner's message is being answered).
    a = RedisCache(through(redis_proxy), prefix, lock_lease=0.3, retry_after=0.05)
    b = RedisCache(TEST_REDIS_URL, prefix, lock_lease=0.3)
    try:
        async with a.hold("conv", ttl=95) as held:
            await redis_proxy.stop()
            await a.get_many(["anything"])  # the outage is noticed
            assert not a.available
            await b._redis.unlink(f"{prefix}conv")  # what a Redis that kept nothing comes back without
            await redis_proxy.start()
            await asyncio.sleep(0.1)
            await a.get_many(["anything"])  # the recovery is noticed
            assert a.available
            # The next renewal takes the lock back (a harness bound on waiting for it, not a timing assertion).
            deadline = asyncio.get_running_loop().time() + 10
            while await b._redis.get(f"{prefix}conv") is None and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
            assert await b._redis.get(f"{prefix}conv") is not None  # held again: others stay out
            assert await held.still_held()
        assert await b._redis.get(f"{prefix}conv") is None  # released on the way out
    finally:
        await a.close()
        await b.close()


async def test_a_lock_whose_lease_ran_out_without_an_outage_stays_lost(prefix: str) -> None:
    # A paused holder (no outage: Redis kept its keys, the lease simply ran out) does not take the
    # lock back: a replica that took the message over may be answering it.
    a = RedisCache(TEST_REDIS_URL, prefix, lock_lease=0.3)
    try:
        async with a.hold("conv", ttl=95) as held:
            await a._redis.unlink(f"{prefix}conv")
            deadline = asyncio.get_running_loop().time() + 10
            while await held.still_held() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.02)
            assert not await held.still_held()
            assert await a._redis.get(f"{prefix}conv") is None
    finally:
        await a.close()


async def test_a_task_cancelled_mid_call_stops_whatever_step_of_the_call_the_cancellation_meets(redis_cache: RedisCache) -> None:
    # redis-py's pipeline can swallow a cancellation that arrives while it reads an answer: a lease's
    # renewal loop cancelled there ran on, and stopping it waited forever.
    async def renewing() -> None:
        while True:
            await redis_cache.lease("lease", "me", 60)

    ran_on = []
    for steps in range(60):  # cancel after 0, 1, 2, ... event-loop steps: every point of the round trip
        task = asyncio.create_task(renewing())
        for _ in range(steps):
            await asyncio.sleep(0)  # one loop step, not a wait
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)  # a harness bound: a stopped task ends at once
        if not done:
            ran_on.append(steps)
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1)
        assert task.cancelled() or not done
    assert ran_on == [], f"cancelled after {ran_on} loop steps, the task went on"


async def test_a_unix_socket_url_that_is_not_there_is_an_outage(tmp_path) -> None:
    from storage.errors import CacheUnavailable

    cache = RedisCache(f"unix://{tmp_path}/redis.sock", "personae:")
    try:
        with pytest.raises(CacheUnavailable):
            await cache.check()
    finally:
        await cache.close()


@pytest.mark.parametrize(("replica_lease_s", "longest_ms", "shortest_ms"), [(2.0, 3000, 0), (10.0, 15000, 3000)])
async def test_the_service_s_conversation_locks_last_one_and_a_half_replica_leases(
    prefix: str, replica_lease_s: float, longest_ms: int, shortest_ms: int
) -> None:
    """A dead replica's locks go within 1.5 × PERSONAE_REPLICA_LEASE_S of its last renewal, not a fixed 15 s."""
    from bots.compose import open_cache
    from bots.settings import Settings

    settings = Settings(_env_file=None, redis_url=TEST_REDIS_URL, redis_prefix=prefix, replica_lease_s=replica_lease_s)
    cache = await open_cache(settings)
    try:
        async with cache.hold("conv", ttl=95):
            assert shortest_ms < await cache._redis.pttl(f"{prefix}conv") <= longest_ms
    finally:
        await cache.close()
