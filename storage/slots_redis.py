"""``core.ports.ModelSlots`` on Redis: the model budget shared by every replica.

Per model server, a sorted set holds the slots taken (member: the slot's token, score: when its
lease runs out, in Redis's own clock), a second one per channel holds that channel's, and a third
the replies waiting for a full server (appraisals give way to them). Taking a slot is one script
call (it drops expired leases first: a dead replica's slots come back when their leases run out);
giving it back is one ZREM pipeline; a process renews all the leases it holds in one pipeline every
third of a lease. While Redis is away, requests go ahead on the process's own cap alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from core.cancelled import pause
from core.slots import channel_cap
from storage.cache_redis import RedisCache

log = logging.getLogger(__name__)

# KEYS: the server's slots, the channel's slots, the replies waiting for the server.
# ARGV: token, lease ms, cap, channel cap, low (1) or reply (0). Returns 1 when the slot is taken.
_ACQUIRE = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
local expiry = now + lease
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
redis.call('zremrangebyscore', KEYS[2], '-inf', now)
redis.call('zremrangebyscore', KEYS[3], '-inf', now)
if redis.call('zcard', KEYS[1]) >= tonumber(ARGV[3]) then
  if ARGV[5] == '0' then
    redis.call('zadd', KEYS[3], expiry, ARGV[1])
    redis.call('pexpire', KEYS[3], lease)
  end
  return 0
end
redis.call('zrem', KEYS[3], ARGV[1])
if redis.call('zcard', KEYS[2]) >= tonumber(ARGV[4]) then return 0 end
if ARGV[5] == '1' and redis.call('zcard', KEYS[3]) > 0 then return 0 end
redis.call('zadd', KEYS[1], expiry, ARGV[1])
redis.call('pexpire', KEYS[1], lease)
redis.call('zadd', KEYS[2], expiry, ARGV[1])
redis.call('pexpire', KEYS[2], lease)
return 1
"""
_ACQUIRE_SHA = hashlib.sha1(_ACQUIRE.encode()).hexdigest()
# KEYS: the server's slots, the channel's slots. ARGV: token, lease ms, cap. Extends a slot still
# held (1); one that vanished (Redis restarted empty, or its lease ran out while the holder's loop
# was starved) is taken again if the cap allows (2), else it is lost (0).
_RENEW = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = now + tonumber(ARGV[2])
local result = 1
redis.call('zremrangebyscore', KEYS[1], '-inf', now)
redis.call('zremrangebyscore', KEYS[2], '-inf', now)
if redis.call('zscore', KEYS[1], ARGV[1]) == false then
  if redis.call('zcard', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
  result = 2
end
redis.call('zadd', KEYS[1], expiry, ARGV[1])
redis.call('pexpire', KEYS[1], ARGV[2])
redis.call('zadd', KEYS[2], expiry, ARGV[1])
redis.call('pexpire', KEYS[2], ARGV[2])
return result
"""
_RENEW_SHA = hashlib.sha1(_RENEW.encode()).hexdigest()
_FIRST_WAIT_S = 0.005
_LONGEST_WAIT_S = 0.1


class RedisSlots:
    """At most ``cap`` requests in flight per model server across every process on this Redis."""

    def __init__(self, cache: RedisCache, cap: int, share: float, lease_s: float = 15.0) -> None:
        if cap < 1:
            raise ValueError("the model budget must be at least 1")
        self.cache = cache
        self.cap = cap
        self.channel_cap = channel_cap(cap, share)
        self.lease_ms = max(1, int(lease_s * 1000))
        self._held: dict[str, tuple[str, str]] = {}  # token -> (server key, channel key)
        self._freed: dict[str, asyncio.Event] = {}  # server -> set when a slot here is given back
        self._renewer: asyncio.Task[None] | None = None
        self._renewing = True
        # What taking and giving back cost: round trips and seconds, summed (for `personae bench`).
        self.acquire_trips = 0
        self.acquire_s = 0.0
        self.release_trips = 0
        self.release_s = 0.0
        self.acquired = 0

    def _keys(self, server: str, channel: str) -> tuple[str, str, str]:
        base = f"{self.cache.prefix}slots:{server}"
        return base, f"{base}|ch:{channel}", f"{base}|waiting"

    @asynccontextmanager
    async def slot(self, server: str, channel: str, *, low: bool = False) -> AsyncIterator[None]:
        token = secrets.token_hex(12)
        held_key, channel_key, waiting_key = self._keys(server, channel)
        started = time.perf_counter()
        taken = await self._take(server, token, held_key, channel_key, waiting_key, low)
        self.acquire_s += time.perf_counter() - started
        if taken:
            self.acquired += 1
            self._held[token] = (held_key, channel_key)
            self._start_renewing()
        try:
            yield
        finally:
            if taken:
                self._held.pop(token, None)
                started = time.perf_counter()
                await asyncio.shield(self._give_back(token, held_key, channel_key))
                self.release_s += time.perf_counter() - started
                self._freed.setdefault(server, asyncio.Event()).set()

    async def _take(self, server: str, token: str, held_key: str, channel_key: str, waiting_key: str, low: bool) -> bool:
        """Ask until a slot is free (False: Redis is away, go ahead without one). Between asks it
        waits for a slot given back in this process, or a growing pause for one given back elsewhere."""
        delay = _FIRST_WAIT_S
        args = (token, self.lease_ms, self.cap, self.channel_cap, 1 if low else 0)
        try:
            while True:
                freed = self._freed.setdefault(server, asyncio.Event())
                freed.clear()
                result = await self._eval(_ACQUIRE, _ACQUIRE_SHA, (held_key, channel_key, waiting_key), args)
                self.acquire_trips += 1
                if result is None:
                    return False
                if int(result) == 1:
                    return True
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await freed.wait()
                delay = min(delay * 2, _LONGEST_WAIT_S)
        except BaseException:
            if not low:  # no longer waiting: appraisals need not give way to it
                await asyncio.shield(self.cache._send(lambda p: p.zrem(waiting_key, token)))
            raise

    async def _eval(self, script: str, sha: str, keys: tuple[str, ...], args: tuple[object, ...]) -> object | None:
        results = await self.cache._send(lambda p: p.evalsha(sha, len(keys), *keys, *args))
        if results is None:
            return None
        if isinstance(results[0], NoScriptError):
            # First use on this Redis (or its scripts were flushed): EVAL runs the script and caches it.
            results = await self.cache._send(lambda p: p.eval(script, len(keys), *keys, *args))
            if results is None:
                return None
        return results[0]

    async def _give_back(self, token: str, held_key: str, channel_key: str) -> None:
        def build(p: Pipeline) -> None:
            p.zrem(held_key, token)
            p.zrem(channel_key, token)

        await self.cache._send(build)
        self.release_trips += 1

    def _start_renewing(self) -> None:
        if self._renewing and (self._renewer is None or self._renewer.done()):
            self._renewer = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        """Every third of a lease, extend the lease of every slot this process holds (one pipeline)."""
        while self._held:
            await pause(self.lease_ms / 3000)
            held = list(self._held.items())
            if not held:
                return

            def build(p: Pipeline) -> None:
                for token, (held_key, channel_key) in held:
                    p.eval(_RENEW, 2, held_key, channel_key, token, self.lease_ms, self.cap)

            results = await asyncio.shield(self.cache._send(build))
            for (token, (held_key, _)), result in zip(held, results or ()):
                if isinstance(result, Exception) or token not in self._held:
                    continue
                if int(result) == 2:
                    log.warning("a model slot on %s had vanished from Redis (restarted, or its lease ran out); taken again", held_key)
                elif int(result) == 0:
                    log.warning(
                        "a model slot on %s was lost (its lease ran out and others took the budget): this request "
                        "runs over the cap; PERSONAE_LLM_SLOT_LEASE_S longer than a stall avoids it", held_key
                    )

    def stop_renewing(self) -> None:
        """Stop renewing leases, as a replica that died would (its slots come back after a lease)."""
        self._renewing = False
        if self._renewer is not None:
            self._renewer.cancel()

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
