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


async def test_a_newer_message_waits_for_an_older_one_a_sweep_is_taking_over(store, cache, tgi, monkeypatch) -> None:
    """The sweep writes its claim (the message becomes this replica's) before it answers: a newer
    message of the same conversation arriving in between must wait for it, not go first."""
    from tests.engine.conftest import build_world

    a = await build_world(store, cache, tgi, replica_id="a")
    b, c = restarted(a, replica_id="b"), restarted(a, replica_id="c")
    for name in ("a", "b", "c"):
        await cache.lease(replica_key(name), name, 60)
    older = await a.app.engine.accept(a.event("Who goes there?", message_id="m-1"))
    assert older is not None and older.owner == "a"
    assert await swept(b) == []  # while a lives
    await cache.release(replica_key("a"), "a")  # a dies with the message pending; c takes it over

    messages = c.app.store.messages
    claim, pending_before = messages.claim, messages.pending_before
    claimed, carry_on, looked = asyncio.Event(), asyncio.Event(), []

    async def paused_claim(*args, **kwargs):
        won = await claim(*args, **kwargs)
        claimed.set()
        await carry_on.wait()
        return won

    async def counted_pending_before(*args, **kwargs):
        looked.append(await pending_before(*args, **kwargs))
        return looked[-1]

    monkeypatch.setattr(messages, "claim", paused_claim)
    monkeypatch.setattr(messages, "pending_before", counted_pending_before)
    tgi.script(reply="Nay, answer me.")
    sweep = asyncio.create_task(swept(c))
    async with asyncio.timeout(30):
        await claimed.wait()
    assert await owner_of(c, older.id) == "c"
    newer = asyncio.create_task(c.say("Stand and unfold yourself.", message_id="m-2"))
    # The newer turn either goes to the model (it did not wait) or looks a second time (it waits).
    async with asyncio.timeout(30):
        while tgi.count("/v1/chat/completions") == 0 and len(looked) < 2:
            await asyncio.sleep(0.01)
    assert tgi.count("/v1/chat/completions") == 0, "the newer message was answered before the older one"
    carry_on.set()
    turns = await sweep
    reply, _ = await newer
    assert [(t.intake.id, t.reply.status) for t in turns] == [(older.id, ReplyStatus.ANSWERED)]
    assert reply.status is ReplyStatus.ANSWERED
    asked = [body["messages"][-1]["content"] for body in tgi.bodies()]
    assert [text.split(":", 1)[-1].strip() for text in asked] == ["Who goes there?", "Stand and unfold yourself."], asked


async def test_a_sweep_whose_claim_fails_leaves_the_message_to_the_next_one(store, cache, tgi, monkeypatch) -> None:
    """Marked as answered here before its claim is written, a message whose claim fails (the
    database went away) is unmarked again: the next sweep takes it, and a newer message is not held up."""
    from tests.engine.conftest import build_world

    a = await build_world(store, cache, tgi, replica_id="a")
    b, c = restarted(a, replica_id="b"), restarted(a, replica_id="c")
    for name in ("a", "b", "c"):
        await cache.lease(replica_key(name), name, 60)
    older = await a.app.engine.accept(a.event("Who goes there?", message_id="m-1"))
    assert older is not None
    assert await swept(b) == []
    await cache.release(replica_key("a"), "a")

    async def no_database(*args, **kwargs):
        raise ConnectionError("the database went away")

    with monkeypatch.context() as patched:
        patched.setattr(c.app.store.messages, "claim", no_database)
        with pytest.raises(ConnectionError):
            await swept(c)
    assert not c.app.engine.taking(older)
    tgi.script(reply="Nay, answer me.")
    assert [(t.intake.id, t.reply.status) for t in await swept(c)] == [(older.id, ReplyStatus.ANSWERED)]
