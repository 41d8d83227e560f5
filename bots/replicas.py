"""Replicas that cooperate through Redis: each one's liveness lease, and leases that elect one of them.

A lease is a cache key holding its owner's name (and a random token of the process, so that two
processes given the same PERSONAE_REPLICA_ID tell each other apart) for ``PERSONAE_REPLICA_LEASE_S``, renewed every third
of that while its owner lives; when the owner dies the key expires and another replica takes over.
With the in-process cache (one process) every lease is simply held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from typing import AsyncIterator, Awaitable, Callable

from core.cancelled import pause, raise_if_cancelled
from core.errors import ConfigurationError
from core.hot import replica_key
from core.ports import Cache

log = logging.getLogger(__name__)


PROCESS_TOKEN = secrets.token_hex(6)  # this process's, in every lease it holds


def new_replica_id() -> str:
    """This process's name in leases and on the messages it takes: host, pid and a random tail."""
    host = socket.gethostname().split(".")[0] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class Lease:
    """Keep ``key`` for ``owner`` while running: ``held`` says whether it is ours right now."""

    def __init__(self, cache: Cache, key: str, owner: str, ttl_s: float) -> None:
        self.cache, self.key, self.owner, self.ttl_s = cache, key, owner, ttl_s
        self.value = f"{owner} {PROCESS_TOKEN}"  # what the key holds: a twin with the same owner name is not us
        self.held = False
        self.changed = asyncio.Event()  # set on every gain or loss
        self._renewed_at = 0.0  # monotonic time of the last renewal the cache confirmed

    @property
    def renew_s(self) -> float:
        return self.ttl_s / 3

    async def renew(self) -> bool:
        """One attempt to take or extend the lease; returns whether it is held. When the cache cannot
        tell (Redis away), a holder keeps its role and the others keep waiting, up to the lease's ttl
        since its last confirmed renewal (by its own clock): past that, the key may have expired and
        another replica won it, so it lets go."""
        asked = time.monotonic()  # the key's new expiry counts from no earlier than this
        got = await self.cache.lease(self.key, self.value, self.ttl_s)
        if got:
            self._renewed_at = asked
        held = self.held if got is None else got
        if got is None and held and time.monotonic() - self._renewed_at >= self.ttl_s:
            log.warning("the lease %r could not be renewed for %.0fs; giving it up", self.key, self.ttl_s)
            held = False
        if held != self.held:
            self.held = held
            self.changed.set()
        return held

    async def keep(self) -> None:
        """Renew forever (cancel to stop; ``release`` then gives the lease up at once)."""
        while True:
            try:
                await self.renew()
            except Exception:  # noqa: BLE001 - a cache fault must not end the replica: try again next time
                raise_if_cancelled()
                log.exception("renewing the lease %r failed", self.key)
            await pause(self.renew_s)

    async def release(self) -> None:
        if self.held:
            self.held = False
            self.changed.set()
        with contextlib.suppress(Exception):
            await self.cache.release(self.key, self.value)


@contextlib.asynccontextmanager
async def alive(cache: Cache, owner: str, ttl_s: float) -> AsyncIterator[Lease]:
    """This replica's liveness lease, kept while the block runs and given up after it (a clean stop:
    what it left pending is taken over at once, not after the lease runs out).

    Raises ConfigurationError when another live process holds it (the same PERSONAE_REPLICA_ID):
    a lease left by a process that died runs out within ``ttl_s``, so that long is waited first."""
    lease = Lease(cache, replica_key(owner), owner, ttl_s)
    loop = asyncio.get_running_loop()
    until = loop.time() + ttl_s + lease.renew_s
    while not await lease.renew():
        if loop.time() >= until:
            raise ConfigurationError(
                f"another live process runs as replica {owner!r}: give each process its own PERSONAE_REPLICA_ID (or leave it unset)"
            )
        await asyncio.sleep(min(lease.renew_s, 0.5))
    task = asyncio.create_task(lease.keep(), name="replica-lease")
    try:
        yield lease
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await lease.release()


async def while_elected(
    lease: Lease, start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]], *, what: str
) -> None:
    """Run ``start`` when ``lease`` is won and ``stop`` when it is lost, renewing it, until cancelled
    (then ``stop`` if started, and the lease is given up so that a standby takes over at once)."""
    leading = False
    try:
        while True:
            try:
                held = await lease.renew()
            except Exception:  # noqa: BLE001 - try again next time
                raise_if_cancelled()
                log.exception("renewing the lease %r failed", lease.key)
                held = lease.held
            if held and not leading:
                log.info("this replica (%s) now %s", lease.owner, what)
                await start()
                leading = True
            elif not held and leading:
                log.warning("this replica (%s) lost the lease and no longer %s", lease.owner, what)
                leading = False
                await stop()
            await pause(lease.renew_s)
    finally:
        if leading:
            await stop()
        await lease.release()
