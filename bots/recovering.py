"""Delivering what a crash left unanswered: at start-up, then from time to time for messages whose turn's owner is gone."""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Awaitable, Callable

from bots.settings import Settings
from core.cancelled import pause, raise_if_cancelled
from core.engine import Engine, RecoveredTurn, ReplyStatus
from core.ports import Cache

log = logging.getLogger(__name__)


# Conversations whose recovered messages are answered at once (each conversation's in order): a
# restart after a crash with many chats half answered does not answer them one after another.
RECOVERED_AT_ONCE = 8


async def recover_once(
    engine: Engine, platform: str, deliver: Callable[[RecoveredTurn], Awaitable[None]], *, older_than_s: float = 0.0,
    at_start: bool = False,
) -> int:
    """Deliver the answer of every pending message of ``platform``; returns how many were delivered
    (``at_start``: with those this replica's name left in a previous life, at once). Up to
    ``RECOVERED_AT_ONCE`` conversations are answered at once, each one's messages in their order."""
    delivered = 0
    lines: dict[str, collections.deque[RecoveredTurn]] = {}
    gate = asyncio.Semaphore(RECOVERED_AT_ONCE)

    async def one(turn: RecoveredTurn) -> None:
        nonlocal delivered
        try:
            await deliver(turn)
            delivered += 1
        except Exception:  # noqa: BLE001 - one chat that cannot be reached must not stop the rest
            raise_if_cancelled()  # unless the "fault" was the stop, turned into an error on its way out
            log.exception("could not deliver the answer to stored message %s", turn.intake.id)
            if turn.late and turn.reply.status is ReplyStatus.PENDING:
                # Never shown and too old to answer: settle it, or every sweep would try again.
                await turn.reply.collect()
        finally:
            engine.claimed(turn.intake, mine=False)

    async def line(key: str) -> None:
        waiting = lines[key]
        try:
            async with gate:
                while waiting:
                    await one(waiting.popleft())
        finally:
            del lines[key]
            for turn in waiting:  # stopped: left to the next sweep
                engine.claimed(turn.intake, mine=False)

    running: set[asyncio.Task[None]] = set()
    try:
        async for turn in engine.recover(platform, older_than_s=older_than_s, at_start=at_start):
            key = turn.intake.conversation.cache_key()
            if key in lines:
                lines[key].append(turn)
            else:
                lines[key] = collections.deque([turn])
                running.add(asyncio.create_task(line(key)))
    except Exception:
        await asyncio.gather(*running, return_exceptions=True)  # the answers begun are finished first
        raise
    except BaseException:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        for waiting in lines.values():  # a line cancelled before it began: its turns are left to the next sweep
            for turn in waiting:
                engine.claimed(turn.intake, mine=False)
        raise
    # Every line ends before this returns, even when one failed: none goes on answering unwatched.
    ended = await asyncio.gather(*running, return_exceptions=True)
    if delivered:
        log.info("answered %d %s message%s left pending", delivered, platform, "" if delivered == 1 else "s")
    for outcome in ended:
        if isinstance(outcome, BaseException):
            raise outcome
    return delivered


def sweep_every(settings: Settings, cache: Cache) -> float | None:
    """How often to look for messages a dead replica left: every third of a liveness lease when
    replicas share Redis, else once per lock lifetime (None: the default)."""
    return settings.replica_lease_s / 3 if getattr(cache, "shared", False) else None


async def keep_recovering(
    engine: Engine, platform: str, deliver: Callable[[RecoveredTurn], Awaitable[None]], *, sweep_s: float | None = None
) -> None:
    """At start-up, then every ``sweep_s`` (default: once per lock lifetime): a message whose
    replica's liveness lease ran out is answered here at once, and any message pending longer than a
    turn's lock can last has lost its turn (its process died), so it is answered here too.

    Alone (the in-process cache), everything pending at start-up was left by an earlier run; with
    replicas on one Redis, what the live ones hold is theirs until it is that old."""
    every = engine.config.turn_deadline_s + 5
    sweep_s = every if sweep_s is None else sweep_s
    shared = getattr(engine.cache, "shared", False)
    await recover_once(engine, platform, deliver, older_than_s=every if shared else 0.0, at_start=True)
    while True:
        await pause(sweep_s)
        try:
            await recover_once(engine, platform, deliver, older_than_s=every)
        except Exception:  # noqa: BLE001 - the database may be away; try again next time
            raise_if_cancelled()  # unless the "fault" was the stop, turned into an error on its way out
            log.exception("looking for pending %s messages failed", platform)
