"""Answering what a crash left behind: messages stored on arrival and never answered.

At start-up (and from time to time, for messages whose turn's owner is gone) an adapter asks
``Engine.recover`` for the pending messages of its platform and delivers each answer. With several
replicas, each stored message names the replica that took it in (``Intake.owner``); a message whose
owner's liveness lease ran out is claimed by one sweeping replica (a compare-and-set in the
database) and answered there, and the conversation's lock and the message's status keep a second
answer from being stored or shown. A message
older than ``pending_answer_within_s`` gets one short notice instead: answering it now would come
out of nowhere. Either way the message is settled once: a redelivery of it, or a second recovery,
finds it answered.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from typing import TYPE_CHECKING, AsyncIterator

from core.hot import replica_key, shown_key
from core.reply import NOTICE_STALE, Reply, ReplyStatus
from core.state import Intake, MessageStatus

if TYPE_CHECKING:
    from core.engine import Engine, RecoveredTurn

# How long the platform id of a reply being shown is remembered: past this, recovery answers anew.
SHOWN_TTL_S = 86400.0
# Set by the first sweep and kept: gone (or replaced), the cache lost the liveness leases with it.
LIVENESS_EPOCH_KEY = "replicas:epoch"
LIVENESS_EPOCH_TTL_S = 30 * 86400.0


async def pending_turns(
    engine: "Engine", platform: str, *, older_than_s: float = 0.0, at_start: bool = False
) -> AsyncIterator["RecoveredTurn"]:
    """Each pending message of ``platform`` stored at least ``older_than_s`` ago, with its answer.
    ``at_start``: those this replica's name took in before this process started (a previous life,
    killed and restarted under the same name) too, at once: their owner's lease is ours again."""
    from core.engine import RecoveredTurn

    after_id = 0
    while True:
        batch = await engine.store.messages.pending(platform, after_id=after_id)
        if not batch:
            return
        after_id = batch[-1].id
        now = dt.datetime.now(dt.UTC)
        candidates = [i for i in batch if not engine.taking(i)]
        gone = await owners_gone(engine, candidates)
        due = [
            i for i in candidates
            if i.owner in gone or (at_start and _previous_life(engine, i)) or (now - i.created_at).total_seconds() >= older_than_s
        ]
        # Marked before the claim is written: a newer message of its conversation, arriving here
        # meanwhile, finds it ours in the database and must already see that it is answered here next.
        for intake in due:
            engine.claimed(intake)
        handed: set[int] = set()  # yielded: the caller lets go of each when it has delivered it
        try:
            taken = []
            for intake in due:
                if await _taken_over(engine, intake):
                    taken.append(intake)
                else:
                    engine.claimed(intake, mine=False)  # another replica won it
            due = taken
            if not due:
                continue
            shown = await engine.cache.get_many([shown_key(i.id) for i in due])
            for intake, raw in zip(due, shown):
                late = (now - intake.created_at).total_seconds() > engine.config.pending_answer_within_s
                reply = Reply(lambda r, i=intake: _too_late(engine, i, r)) if late else engine.answer(intake)
                handed.add(intake.id)
                yield RecoveredTurn(intake, reply, raw.decode() if raw is not None else None, late)
        finally:
            for intake in due:  # a failed claim or cache read, or a caller that stopped early
                if intake.id not in handed:
                    engine.claimed(intake, mine=False)


async def owners_gone(engine: "Engine", intakes: list[Intake]) -> set[str | None]:
    """The replicas among the owners of ``intakes`` whose liveness lease has run out (they died, or
    stopped): their messages are answered here at once. This replica and owners still alive are not
    in it; their messages are taken only once older than a sweep's ``older_than_s``."""
    me = engine.config.replica
    owners = sorted({i.owner for i in intakes if i.owner is not None and i.owner != me})
    if not owners or not _liveness_known(engine):
        return set()
    # Read along: our own lease and the leases' epoch, a key that a Redis restarted empty lost too.
    # Either missing or changed since the last sweep, the cache lost its leases, and a missing one
    # proves nothing until every live replica has had time to renew its own.
    mine = [replica_key(me)] if me else []
    *leases, epoch = await engine.cache.get_many([replica_key(o) for o in owners] + mine + [LIVENESS_EPOCH_KEY])
    changed = engine.liveness_epoch is not None and epoch != engine.liveness_epoch
    lost = epoch is None or changed or bool(mine and leases[-1] is None)
    if epoch is None:
        epoch = secrets.token_hex(8).encode()
        await engine.cache.set_many({LIVENESS_EPOCH_KEY: epoch}, LIVENESS_EPOCH_TTL_S)
    engine.liveness_epoch = epoch
    if not _liveness_known(engine) or lost:
        # Unreadable (an outage answers every key missing) or lost: owners are presumed alive.
        engine.liveness_doubt_until = time.monotonic() + engine.config.replica_lease_s
        return set()
    return {owner for owner, held in zip(owners, leases) if held is None}


def _liveness_known(engine: "Engine") -> bool:
    """Whether the cache can tell which replicas are alive: not while it is away, nor for one
    lease after it was (or after it was found to have lost the leases)."""
    if not getattr(engine.cache, "available", True):
        engine.liveness_doubt_until = time.monotonic() + engine.config.replica_lease_s
        return False
    return time.monotonic() >= engine.liveness_doubt_until


def _previous_life(engine: "Engine", intake: Intake) -> bool:
    me = engine.config.replica
    return bool(me) and intake.owner == me and intake.created_at < engine.started_at


async def _taken_over(engine: "Engine", intake: Intake) -> bool:
    """Claim ``intake`` for this replica unless it is ours already: of several replicas sweeping at
    once, one wins the compare-and-set and answers it; the others leave it."""
    me = engine.config.replica
    if not me or intake.owner == me:
        return True
    return await engine.store.messages.claim(intake.id, intake.owner, me)


async def _too_late(engine: "Engine", intake: Intake, reply: Reply) -> AsyncIterator[str]:
    """Settle the message with a notice (stored first, so that it is given once)."""
    reply.intake, reply.conversation = intake, intake.conversation
    if engine.answering(intake):
        reply.status = ReplyStatus.DUPLICATE
        return
    ids = await engine.stored(lambda: engine.store.messages.finish(intake, MessageStatus.NOTICE, None))
    if ids is None:
        reply.status = ReplyStatus.DUPLICATE
        return
    reply.status, reply.text = ReplyStatus.NOTICE, NOTICE_STALE
    yield NOTICE_STALE


async def remember_shown(engine: "Engine", intake: Intake, platform_message_id: str) -> None:
    await engine.cache.set_many({shown_key(intake.id): platform_message_id.encode()}, SHOWN_TTL_S)
