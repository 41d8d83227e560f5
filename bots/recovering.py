"""Delivering what a crash left unanswered: at start-up, then from time to time for messages whose turn's owner is gone."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from core.engine import Engine, RecoveredTurn, ReplyStatus

log = logging.getLogger(__name__)


async def recover_once(engine: Engine, platform: str, deliver: Callable[[RecoveredTurn], Awaitable[None]], *, older_than_s: float = 0.0) -> int:
    """Deliver the answer of every pending message of ``platform``; returns how many were delivered."""
    delivered = 0
    async for turn in engine.recover(platform, older_than_s=older_than_s):
        try:
            await deliver(turn)
            delivered += 1
        except Exception:  # noqa: BLE001 - one chat that cannot be reached must not stop the rest
            log.exception("could not deliver the answer to stored message %s", turn.intake.id)
            if turn.late and turn.reply.status is ReplyStatus.PENDING:
                # Never shown and too old to answer: settle it, or every sweep would try again.
                await turn.reply.collect()
    if delivered:
        log.info("answered %d %s message%s left pending", delivered, platform, "" if delivered == 1 else "s")
    return delivered


async def keep_recovering(engine: Engine, platform: str, deliver: Callable[[RecoveredTurn], Awaitable[None]]) -> None:
    """At start-up, then once per lock lifetime: a message pending longer than a turn's lock can
    last has lost its turn (its process died), so it is answered here."""
    every = engine.config.turn_deadline_s + 5
    await recover_once(engine, platform, deliver)
    while True:
        await asyncio.sleep(every)
        try:
            await recover_once(engine, platform, deliver, older_than_s=every)
        except Exception:  # noqa: BLE001 - the database may be away; try again next time
            log.exception("looking for pending %s messages failed", platform)
