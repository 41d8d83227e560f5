"""``core.ports.Cache`` on Redis: one pipeline per call, and never an exception when Redis is away."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.backoff import NoBackoff
from redis.asyncio.retry import Retry
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.maint_notifications import MaintNotificationsConfig

from core import observe
from core.cancelled import pause
from core.ports import Admission, AdmitRequest
from storage.connect_errors import cache_failure
from storage.held import StagedWrites
from core.locks import KeyedLocks

log = logging.getLogger(__name__)

# Delete the lock only if it is still ours: it may have expired and been taken by someone else.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_RELEASE_SHA = hashlib.sha1(_RELEASE.encode()).hexdigest()
# Extend the lock's lease only if it is still ours.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
# Take a lease if it is free, or extend it if it is ours already: 1 held, 0 held by someone else.
_LEASE = (
    "local v = redis.call('get', KEYS[1]) "
    "if v == false then redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2]) return 1 end "
    "if v == ARGV[1] then redis.call('pexpire', KEYS[1], ARGV[2]) return 1 end return 0"
)
# Writes dropped during an outage are remembered (up to this many keys) and deleted once Redis is back.
_MAX_DIRTY = 10_000
_GLOB = re.compile(r"([*?\[\]\\])")
_OUTAGE = (RedisError, OSError, asyncio.TimeoutError)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisCache:
    """Hot copies, locks, dedupe keys and rate counters in Redis, every key starting with ``prefix``."""

    shared = True  # every replica on this Redis (and prefix) sees the same keys

    # A failed call means an outage: it is logged once, and calls fall back (reads miss, writes are
    # dropped, locks are local only) without trying Redis for ``retry_after`` seconds, then try again.
    # round_trips counts the pipelines sent (a single command goes as a pipeline of one).

    def __init__(
        self,
        url: str,
        prefix: str = "personae:",
        *,
        connect_timeout: float = 0.5,
        read_timeout: float = 1.0,
        retry_after: float = 1.0,
        lock_wait: float | None = None,
        lock_lease: float = 15.0,
        max_connections: int = 64,
    ) -> None:
        self.prefix = prefix
        self.round_trips = 0
        # The URL without its password, for log lines.
        self._where = re.sub(r"//[^@/]*@", "//", url)
        # Past max_connections, callers wait for a free connection instead of failing: a burst of
        # turns is not an outage. The client owns the pool and closes it.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=read_timeout + connect_timeout,
            socket_connect_timeout=connect_timeout,
            socket_timeout=read_timeout,
            # TCP only: a unix:// URL's connection class takes no socket_keepalive and raises TypeError.
            **({} if url.startswith("unix://") else {"socket_keepalive": True}),
            # No retries: the default (10 with backoff) would stall every call for seconds in an outage.
            # A pooled connection the server closed is noticed and replaced when it is checked out.
            retry=Retry(NoBackoff(), 0),
            # While maintenance notifications are on ("auto" counts as on), the pool skips its check
            # for connections the server closed, and a Redis restart would look like an outage.
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
            # No health_check_interval: its PINGs would add round trips to the hot path.
            decode_responses=False,
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._retry_after = retry_after
        self._lock_wait = lock_wait
        # A lock is taken for a short lease that its holder renews while it holds it: when a process
        # dies holding locks, the others get them after one lease, not after the whole turn deadline.
        self._lock_lease = lock_lease
        self._locks = KeyedLocks()
        self._down_until = 0.0
        self._outage = False
        # How many outages began so far: a held lock whose key went missing across one was lost with
        # Redis's data (a restart that kept nothing), not to another holder, and is taken back.
        self.outages = 0
        self._script_loaded = False
        self._dirty: set[str] = set()
        self._dirty_overflow = False
        self._dirty_prefixes: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    def _key(self, key: str) -> str:
        return self.prefix + key

    @property
    def available(self) -> bool:
        """False while an outage is being waited out."""
        return not self._outage

    @property
    def where(self) -> str:
        """The Redis URL without its password."""
        return self._where

    async def check(self) -> None:
        """Raise CacheUnavailable unless Redis answers a PING (at start-up: a wrong URL should not pass silently)."""
        try:
            await self._redis.ping()
        except _OUTAGE as exc:
            raise cache_failure(exc, self._where) from exc

    @property
    def locks_in_use(self) -> int:
        return len(self._locks)

    # -- sending ---------------------------------------------------------------------------------

    async def _send(self, build: Callable[[Pipeline], None], *, writes: Sequence[str] = ()) -> list[Any] | None:
        """Send one pipeline and return its results, or None if Redis is unavailable (``writes`` then go stale)."""
        if time.monotonic() < self._down_until:
            self._remember(writes)
            return None
        pipe = self._redis.pipeline(transaction=False)
        # Keys whose writes an outage dropped may hold old values: delete them in the same round trip.
        stale = list(self._dirty)
        self._dirty.clear()
        if stale:
            pipe.delete(*stale)
        build(pipe)
        self.round_trips += 1
        started = time.monotonic()
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            try:
                results = await pipe.execute(raise_on_error=False)
            finally:
                observe.metrics.storage("redis", observe.since(started))
            if task is not None and task.cancelling() > cancels:
                # redis-py's pipeline can swallow a cancellation that arrives while it reads the
                # answer: raise it here, or a task being stopped (a lease's renewals) runs on.
                raise asyncio.CancelledError
            for result in results:
                if isinstance(result, ResponseError) and not isinstance(result, NoScriptError):
                    raise result
        except _OUTAGE as exc:
            self._remember(stale)
            self._remember(writes)
            self._failed(exc)
            return None
        self._succeeded()
        return results[1:] if stale else results

    def _remember(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        if len(self._dirty) + len(keys) > _MAX_DIRTY:
            if not self._dirty_overflow:
                self._dirty_overflow = True
                log.warning("too many cache writes lost to the Redis outage to track; some copies may be stale until they expire")
            return
        self._dirty.update(keys)

    def _failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self._retry_after
        if not self._outage:
            self._outage = True
            self.outages += 1
            log.warning(
                "Redis (%s) is unavailable (%s: %s); carrying on without it, with local locks, until it is back",
                self._where,
                type(exc).__name__,
                exc,
            )

    def _succeeded(self) -> None:
        if self._outage:
            self._outage = False
            self._dirty_overflow = False
            log.warning("Redis is reachable again")
            if self._dirty_prefixes:
                task = asyncio.get_running_loop().create_task(self._delete_dirty_prefixes())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _delete_dirty_prefixes(self) -> None:
        for prefix in list(self._dirty_prefixes):
            self._dirty_prefixes.discard(prefix)
            await self.delete_prefix(prefix)

    # -- Cache -------------------------------------------------------------------------------------

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        results = await self._send(lambda p: p.mget([self._key(k) for k in keys]))
        return list(results[0]) if results else [None] * len(keys)

    async def set_many(self, items: Mapping[str, bytes], ttl: float) -> None:
        if not items:
            return
        keys = [self._key(k) for k in items]

        def build(p: Pipeline) -> None:
            for key, value in zip(keys, items.values()):
                p.set(key, value, px=_ms(ttl))

        await self._send(build, writes=keys)

    async def delete(self, *keys: str) -> None:
        if not keys:
            return
        full = [self._key(k) for k in keys]
        await self._send(lambda p: p.delete(*full), writes=full)

    async def delete_prefix(self, prefix: str) -> None:
        """SCAN for the keys and UNLINK them in batches; remembered and done later if Redis is away."""
        pattern = _GLOB.sub(r"\\\1", self._key(prefix)) + "*"
        cursor: int | bytes = 0
        while True:
            results = await self._send(lambda p: p.scan(cursor, match=pattern, count=1000))
            if results is None:
                self._dirty_prefixes.add(prefix)
                return
            cursor, keys = results[0]
            if keys and await self._send(lambda p: p.unlink(*keys)) is None:
                self._dirty_prefixes.add(prefix)
                return
            if int(cursor) == 0:
                return

    async def admit(
        self, dedupe_key: str | None, dedupe_ttl: float, rate_key: str, rate_window: float, read: Sequence[str] = ()
    ) -> Admission:
        request = AdmitRequest(dedupe_key, dedupe_ttl, rate_key, rate_window)

        def build(p: Pipeline) -> None:
            self._build_admit(p, request)
            if read:
                p.mget([self._key(k) for k in read])

        results = await self._send(build)
        if results is None:
            # The database decides on duplicates, and nobody is rate-limited while Redis is away.
            return Admission(first=True, count=0, values=[None] * len(read))
        admission, rest = self._admitted(request, results)
        admission.values = list(rest[0]) if read else []
        return admission

    @staticmethod
    def _admitted(request: AdmitRequest, results: list[Any]) -> tuple[Admission, list[Any]]:
        """The admission from the results of ``_build_admit``'s commands, and the results after them."""
        if request.dedupe_key is None:
            return Admission(first=True, count=int(results[0])), results[2:]
        return Admission(first=bool(results[0]), count=int(results[1])), results[3:]

    def _build_admit(self, p: Pipeline, request: AdmitRequest) -> None:
        """The dedupe key if absent (when there is one), one more hit in the rate window, the window's expiry."""
        rate = self._key(request.rate_key)
        if request.dedupe_key is not None:
            p.set(self._key(request.dedupe_key), b"1", nx=True, px=_ms(request.dedupe_ttl))
        p.incr(rate)
        # NX: the window starts at the first hit and is not pushed back by later ones.
        p.pexpire(rate, _ms(request.rate_window), nx=True)

    @asynccontextmanager
    async def hold(
        self, lock_key: str, *, ttl: float, read: Sequence[str] = (), admit: AdmitRequest | None = None
    ) -> AsyncIterator[StagedWrites]:
        """A local lock (arrival order in this process), then the Redis lock and the reads in one pipeline."""
        # Waits at most lock_wait (default ttl) in all, then goes ahead without the lock. After an
        # exception in the block, staged keys are deleted instead of written: the database may not match.
        wait = ttl if self._lock_wait is None else self._lock_wait
        deadline = time.monotonic() + wait
        async with self._locks.hold(lock_key, timeout=wait) as locked:
            if not locked:
                log.warning("lock %r still held in this process after %.1fs; going ahead without it", lock_key, wait)
            key = self._key(lock_key)
            token = secrets.token_hex(16)
            lease = min(ttl, self._lock_lease)
            owned, values, admission = await self._acquire(key, token, lease, [self._key(k) for k in read], deadline, admit)
            held = StagedWrites(values, admission=admission)
            renewal = _Renewal(self, key, token, lease, time.monotonic() + ttl) if owned else None
            if renewal is not None:
                held.check = renewal.still_held
            completed = False
            try:
                yield held
                completed = True
            finally:
                if renewal is not None:
                    await renewal.stop()
                await self._release(key, token if owned else None, held.writes, completed)

    async def _acquire(
        self, key: str, token: str, ttl: float, reads: list[str], deadline: float, admit: AdmitRequest | None = None
    ) -> tuple[bool, list[bytes | None], Admission | None]:
        """Take the Redis lock and read in one pipeline, retrying with backoff until ``deadline``.

        ``admit`` rides along with the first attempt only (an event is admitted once).
        """
        delay = 0.005
        admission: Admission | None = None
        while True:
            load_script = not self._script_loaded
            admitting = admit if admission is None else None

            def build(p: Pipeline) -> None:
                if admitting is not None:
                    self._build_admit(p, admitting)
                p.set(key, token, nx=True, px=_ms(ttl))
                if reads:
                    p.mget(reads)
                if load_script:
                    # Rides along with the first lock so that releases can use EVALSHA from then on.
                    p.script_load(_RELEASE)

            results = await self._send(build)
            if results is None:
                if admit is not None and admission is None:
                    admission = Admission(first=True, count=0)  # the database decides; nobody is limited
                return False, [None] * len(reads), admission
            if load_script:
                self._script_loaded = True
            if admitting is not None:
                admission, results = self._admitted(admitting, results)
            values = list(results[1]) if reads else []
            if results[0]:
                return True, values, admission
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("Redis lock %r still held elsewhere; going ahead without it", key)
                return False, values, admission
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.1)

    async def _release(
        self, key: str, token: str | None, writes: dict[str, tuple[bytes | None, float]], completed: bool
    ) -> None:
        """Send the staged writes and the lock's compare-and-delete in one pipeline."""
        if not writes and token is None:
            return
        staged = [(self._key(k), value, ttl) for k, (value, ttl) in writes.items()]

        def build(p: Pipeline) -> None:
            for full, value, ttl in staged:
                if value is None or not completed:
                    p.delete(full)
                else:
                    p.set(full, value, px=_ms(ttl))
            if token is not None:
                p.evalsha(_RELEASE_SHA, 1, key, token)

        results = await self._send(build, writes=[full for full, _, _ in staged])
        if results is not None and token is not None and isinstance(results[-1], NoScriptError):
            # Redis restarted (or its scripts were flushed): EVAL runs the script and caches it again.
            await self._send(lambda p: p.eval(_RELEASE, 1, key, token))

    async def lease(self, key: str, owner: str, ttl: float) -> bool | None:
        results = await self._send(lambda p: p.eval(_LEASE, 1, self._key(key), owner, _ms(ttl)))
        return None if results is None else bool(results[0])

    async def release(self, key: str, owner: str) -> None:
        await self._send(lambda p: p.eval(_RELEASE, 1, self._key(key), owner))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()


class _Renewal:
    """Renews a held lock's lease every third of it, up to ``until`` (the ttl asked for: a holder that
    overruns it loses the lock, as before leases). Most turns end before the first renewal, so only
    a timer is armed until then (no task per turn). A renewal that finds the lock no longer ours
    (its lease ran out while the process was paused, and it expired or another took it) marks it
    lost: ``still_held`` says so, and the holder stops. Unless Redis was away since the lease was
    last renewed and the key is simply gone (a Redis restarted empty, or a lease that ran out while
    it could not be renewed): nobody else holds it then, and it is taken back (as others, meanwhile,
    fell back to local locks and left this replica's turns alone)."""

    def __init__(self, cache: RedisCache, key: str, token: str, lease: float, until: float) -> None:
        self.cache, self.key, self.token, self.lease, self.until = cache, key, token, lease, until
        self.lost = False
        # Monotonic time up to which the lease surely holds: taken just before this.
        self.valid_until = time.monotonic() + lease * 0.9
        self._outages = cache.outages  # the cache's outage count when the lease was last confirmed
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(lease / 3, self._start)

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _renew_once(self) -> None:
        remaining = self.until - time.monotonic()
        if remaining <= 0 or self.lost:
            return
        lease = min(self.lease, remaining)
        asked = time.monotonic()
        # Shielded: a command cut off mid-way could leave its pooled connection out of step.
        results = await asyncio.shield(self.cache._send(lambda p: p.eval(_RENEW, 1, self.key, self.token, _ms(lease))))
        if results is None:
            return  # Redis is away: the cache cannot tell (others fall back to local locks too)
        if not results[0] and self.cache.outages != self._outages:
            # Redis was away since the lease was last renewed: a missing key was lost with it.
            results = await asyncio.shield(self.cache._send(lambda p: p.eval(_LEASE, 1, self.key, self.token, _ms(lease))))
            if results is None:
                return
            if results[0]:
                log.warning("the lock %r was gone after a Redis outage and is taken back", self.key)
        if results[0]:
            self.valid_until = max(self.valid_until, asked + lease * 0.9)
            self._outages = self.cache.outages
        elif not self.lost:
            self.lost = True
            log.warning("the lock %r was lost (its lease ran out, e.g. the process was paused); its turn stops", self.key)

    async def _run(self) -> None:
        while self.until > time.monotonic() and not self.lost:
            await self._renew_once()
            await pause(self.lease / 3)

    async def still_held(self) -> bool:
        """Whether the lock is still ours: known while the lease is fresh, else asked of Redis now."""
        # Not while Redis is away (it could not tell, and asking would stall the reply's stream).
        if not self.lost and time.monotonic() >= self.valid_until and self.cache.available:
            await self._renew_once()
        return not self.lost

    async def stop(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
