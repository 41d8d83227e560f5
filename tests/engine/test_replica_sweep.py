"""A replica's pending messages: left to it while its liveness lease holds, taken over once by one
of the others when the lease runs out (PostgreSQL and Redis, several engines in one process)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from core.engine import ReplyStatus
from core.events import Platform
from core.hot import replica_key
from tests.engine.test_durable_turns import restarted

SWEEP_AGE_S = 60.0  # a sweep's older_than_s: a live replica's message younger than this stays its own


async def swept(world) -> list:
    """One sweep of ``world``'s replica, as ``personae run`` makes every third of a lease; each answer collected."""
    turns = [t async for t in world.app.engine.recover(Platform.DISCORD, older_than_s=SWEEP_AGE_S)]
    for turn in turns:
        await turn.reply.collect()
    return turns


@pytest.fixture
def database_backend(postgresql_store):
    """Replicas share a server database."""
    return postgresql_store


@pytest.fixture
def cache_backend(redis_prefix: str) -> str:
    """Replicas share Redis."""
    return redis_prefix


async def owner_of(world, message_id: int) -> str | None:
    async with world.app.store.engine.connect() as conn:
        return await conn.scalar(sa.text("SELECT claimed_by FROM messages WHERE id = :id"), {"id": message_id})


async def test_a_live_replicas_message_is_left_to_it_and_a_dead_ones_is_answered_once_by_one_other(store, cache, tgi) -> None:
    from tests.engine.conftest import build_world

    a = await build_world(store, cache, tgi, replica_id="a")
    b, c = restarted(a, replica_id="b"), restarted(a, replica_id="c")
    for name in ("a", "b", "c"):  # every replica alive (``personae run`` holds its lease while it serves)
        await cache.lease(replica_key(name), name, 60)
    intake = await a.app.engine.accept(a.event("Who goes there?", message_id="m-a"))
    assert intake is not None and intake.owner == "a" and await owner_of(a, intake.id) == "a"

    # While a lives, the others leave its message alone (it is younger than a turn can last).
    assert await swept(b) == []

    # a dies: its lease runs out (here: is gone). b and c sweep at once; one of them answers.
    await cache.release(replica_key("a"), "a")
    tgi.script(reply="Nay, answer me.")
    sweeps = await asyncio.gather(swept(b), swept(c))
    answered = [t for turns in sweeps for t in turns]
    assert [(t.intake.id, t.reply.status, t.reply.text) for t in answered] == [(intake.id, ReplyStatus.ANSWERED, "Nay, answer me.")]
    assert tgi.count("/v1/chat/completions") == 1
    assert await owner_of(a, intake.id) in ("b", "c")
    assert await swept(b) == [] and await swept(c) == []


async def test_a_replica_restarted_under_its_name_answers_what_its_previous_life_left_at_once(store, cache, tgi) -> None:
    from tests.engine.conftest import build_world

    before = await build_world(store, cache, tgi, replica_id="a")
    await cache.lease(replica_key("a"), "a", 60)
    intake = await before.app.engine.accept(before.event("Who goes there?", message_id="m-a"))
    assert intake is not None and intake.owner == "a"
    # Killed, and started again as "a" (PERSONAE_REPLICA_ID): its lease is held again at once, so
    # the message looks like a live replica's; the start-up recovery takes it back all the same.
    after = restarted(before, replica_id="a")
    await cache.lease(replica_key("a"), "a", 60)
    assert await swept(after) == []  # a later sweep leaves a live replica's young message alone
    tgi.script(reply="Nay, answer me.")
    turns = [t async for t in after.app.engine.recover(Platform.DISCORD, older_than_s=SWEEP_AGE_S, at_start=True)]
    for turn in turns:
        await turn.reply.collect()
    assert [(t.intake.id, t.reply.status, t.reply.text) for t in turns] == [(intake.id, ReplyStatus.ANSWERED, "Nay, answer me.")]
    # What the new life takes in itself is not its previous life's.
    fresh = await after.app.engine.accept(after.event("And who are you?", message_id="m-b"))
    assert fresh is not None
    assert [t async for t in after.app.engine.recover(Platform.DISCORD, older_than_s=SWEEP_AGE_S, at_start=True)] == []
