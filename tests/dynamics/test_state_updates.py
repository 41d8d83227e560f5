"""Writing feelings: racing appraisals, undo on regenerate, /forget, and drift with idle time."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

import sqlalchemy as sa

from bots.lexicon import LexiconAppraiser
from core.commands import Actor
from core.dynamics import Dynamics
from core.emotions import EmotionState
from core.events import ConversationKey, Platform
from core.feelings import UNDO, Feelings
from core.hot import decode_state, state_key
from core.state import Appraisal, Exchange, RelationshipState
from storage.tables import messages, relationship_states, state_changes
from tests.dynamics.conftest import close, levels, person, stored_state
from tests.engine.conftest import build_world

ELENA = Actor(Platform.DISCORD, "u1", "Elena")


class Fixed:
    """An appraiser that reads the same thing from every exchange, optionally waiting to be let go."""

    name = "fixed"

    def __init__(self, appraisal: Appraisal, gate: asyncio.Event | None = None) -> None:
        self.appraisal, self.gate, self.calls = appraisal, gate, 0
        self.entered = asyncio.Event()  # set when the first appraisal waits at the gate

    async def appraise(self, exchange, character):
        self.calls += 1
        if self.gate is not None and self.calls == 1:
            self.entered.set()
            await self.gate.wait()
        return self.appraisal


async def waiting_on_the_reply(feelings: Feelings, world, reply_id: int, users: int) -> None:
    """Until ``users`` updates hold or wait on the reply's lock (a condition, not a time: each pass
    yields to the loop once; the test fails after 10 s if it never holds)."""
    async with asyncio.timeout(10):
        while True:
            entry = feelings._replies._entries.get(f"{world.event('x').platform}:{reply_id}")
            if entry is not None and entry.users >= users:
                return
            await asyncio.sleep(0)


class Racing:
    """The relationship repository, but the first two reads wait for each other: two writers
    read the same version before either writes."""

    def __init__(self, inner) -> None:
        self.inner, self.reads, self.conflicts = inner, 0, 0
        self.barrier = asyncio.Barrier(2)

    async def get(self, key):
        found = await self.inner.get(key)
        self.reads += 1
        if self.reads <= 2:
            await self.barrier.wait()
        return found

    async def update(self, change):
        landed = await self.inner.update(change)
        self.conflicts += not landed
        return landed

    def __getattr__(self, name):
        return getattr(self.inner, name)


class WinnerLast(Racing):
    """``Racing``, and the writer that lands first is held back after its write, before it refreshes
    the cache, until the other one has written on top and refreshed the cache (``peek`` then reads
    the cache): the first writer's copy, now stale, reaches the cache last."""

    def __init__(self, inner, peek) -> None:
        super().__init__(inner)
        self.peek, self.seen = peek, None
        self.other_done = asyncio.Event()

    async def get(self, key):
        found = await super().get(key)
        if found is not None and found.version == 2 and not self.other_done.is_set():
            (self.seen,) = await self.peek()  # the second writer checks what landed, after its cache refresh
            self.other_done.set()
        return found

    async def update(self, change):
        landed = await super().update(change)
        if landed and change.after.version == 1:
            await self.other_done.wait()
        return landed


class StoreWith:
    def __init__(self, store, relationships) -> None:
        self._store, self.relationships = store, relationships

    def __getattr__(self, name):
        return getattr(self._store, name)


async def exchange(world, *, channel: str, reply_id: int, regenerated: bool = False, user_text: str = "hi", reply_text: str = "hello") -> Exchange:
    key = await person(world)
    state = await world.app.store.relationships.get(key)
    return Exchange(
        character_id=key.character_id, platform=key.platform, channel_id=channel, user_id=key.user_id, display_name="Elena",
        scene="", state_before=state, history=(), user_text=user_text, reply_text=reply_text,
        user_message_id=reply_id - 1, reply_message_id=reply_id, regenerated=regenerated,
    )


async def first_contact(world) -> RelationshipState:
    character = await world.app.store.characters.get_by_name(world.character_name)
    return await world.app.engine.hot.read_state(await person(world), character)


async def test_two_appraisals_racing_on_one_state_both_land(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi)
    try:
        await first_contact(world)
        key = state_key(await person(world))
        racing = WinnerLast(store.relationships, lambda: cache.get_many([key]))
        feelings = Feelings(
            StoreWith(store, racing), cache, world.app.engine.hot, Fixed(Appraisal("fixed", {"happiness": 10}, 10)), Dynamics()
        )
        # Two channels: two conversation locks, one state (the person's, with this character).
        a, b = await exchange(world, channel="c-a", reply_id=11), await exchange(world, channel="c-b", reply_id=21)
        await asyncio.gather(feelings.after_exchange(a), feelings.after_exchange(b))
        assert racing.conflicts == 1  # one writer lost the race, read again, and wrote on top
        state = await stored_state(world)
        assert state.version == 2
        assert (state.emotion.happiness, state.intimacy) == (5, 9)  # 1 -> 3 -> 5 and 7 -> 8 -> 9: nothing lost
        rows = await store.relationships.changes(await person(world))
        assert sorted(r.message_id for r in rows) == [11, 21]
        assert rows[1].after == rows[0].before  # the second write started from the first one's result
        # The second writer's copy was in the cache; the first writer's copy came after it, stale,
        # and was dropped again: the next turn reads the database.
        assert racing.seen is not None and decode_state(await person(world), racing.seen) == state
        assert (await cache.get_many([key]))[0] is None
    finally:
        await close(world)


async def test_regenerate_restores_the_state_from_before_the_replaced_reply(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi)
    try:
        tgi.reply = "(smiles) You are a dear, kind friend."
        await world.say("You are wonderful, thank you.")
        await world.app.engine.drain()
        before_reply = await stored_state(world)
        tgi.reply = "(beams) I adore you, my dear friend, thank you!"
        second, _ = await world.say("Tell me a story, dear friend.")
        await world.app.engine.drain()
        moved = await stored_state(world)
        assert levels(moved) != levels(before_reply)

        tgi.reply = "(scowls) Leave me, you wretched fool."
        conversation = ConversationKey(before_reply.character_id, Platform.DISCORD, world.channel, "u1")
        regenerated = world.app.engine.regenerate(conversation, "Elena", second.reply_message_id)
        await regenerated.collect()
        assert regenerated.status.value == "answered"
        await world.app.engine.drain()

        newest, undo, original = (await store.relationships.changes(await person(world)))[:3]
        assert original.message_id == undo.message_id == newest.message_id == second.reply_message_id
        assert undo.appraiser == UNDO and "undo" in undo.reason
        assert undo.before == moved and undo.after.version == moved.version + 1
        assert (undo.after.emotion, undo.after.intimacy, undo.after.updated_at) == (
            before_reply.emotion, before_reply.intimacy, before_reply.updated_at,
        )
        # Then the new reply was appraised on the restored state: as if the replaced one never was.
        appraisal = LexiconAppraiser().appraise_texts("Tell me a story, dear friend.", "(scowls) Leave me, you wretched fool.")
        expected = Dynamics().apply(before_reply, appraisal, (await world.app.engine.hot.character(before_reply.character_id)).profile.emotion)
        assert newest.appraiser == "lexicon" and newest.before == undo.after
        assert levels(await stored_state(world)) == levels(expected)
    finally:
        await close(world)


async def test_an_undo_waits_for_the_appraisal_of_the_reply_it_replaces(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi)
    try:
        start = await first_contact(world)
        gate = asyncio.Event()
        fixed = Fixed(Appraisal("fixed", {"anger": 10}, 0), gate)
        feelings = Feelings(store, cache, world.app.engine.hot, fixed, Dynamics())
        first = asyncio.create_task(feelings.after_exchange(await exchange(world, channel=world.channel, reply_id=31)))
        await asyncio.wait_for(fixed.entered.wait(), 10)  # the first appraisal is under way and waits at the gate
        again = asyncio.create_task(feelings.after_exchange(await exchange(world, channel=world.channel, reply_id=31, regenerated=True)))
        await waiting_on_the_reply(feelings, world, 31, 2)  # the undo waits behind the first appraisal
        gate.set()
        await asyncio.gather(first, again)
        appraisers = [r.appraiser for r in reversed(await store.relationships.changes(await person(world)))]
        assert appraisers == ["fixed", UNDO, "fixed"]
        state = await stored_state(world)
        assert (state.emotion.anger, state.intimacy) == (start.emotion.anger + 2, start.intimacy - 1)  # one move, not two
    finally:
        await close(world)


class OneThenNothing:
    """An appraiser that reads ``appraisal`` from the first exchange and nothing from the later ones."""

    name = "fixed"

    def __init__(self, appraisal: Appraisal) -> None:
        self.appraisal, self.calls = appraisal, 0

    async def appraise(self, exchange, character):
        self.calls += 1
        return self.appraisal if self.calls == 1 else None


async def test_regenerating_twice_does_not_bring_back_the_replaced_replys_change(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi)
    try:
        start = await first_contact(world)
        appraiser = OneThenNothing(Appraisal("fixed", {"anger": 10}, 0))
        feelings = Feelings(store, cache, world.app.engine.hot, appraiser, Dynamics())
        await feelings.after_exchange(await exchange(world, channel=world.channel, reply_id=41))
        moved = await stored_state(world)
        assert levels(moved) != levels(start)
        # Regenerated: the replaced reply's change is undone, and the new reply moves nothing.
        await feelings.after_exchange(await exchange(world, channel=world.channel, reply_id=41, regenerated=True))
        assert levels(await stored_state(world)) == levels(start)
        # Regenerated again: that change is already undone; undoing the undo would bring it back.
        await feelings.after_exchange(await exchange(world, channel=world.channel, reply_id=41, regenerated=True))
        assert levels(await stored_state(world)) == levels(start)
        assert [r.appraiser for r in reversed(await store.relationships.changes(await person(world)))] == ["fixed", UNDO]
        conversation = ConversationKey(start.character_id, Platform.DISCORD, world.channel, "u1")
        assert not await feelings.undo(conversation, 41, "undo: again")
        assert levels(await stored_state(world)) == levels(start)
    finally:
        await close(world)


def cache_keys(cache) -> list[str]:
    if hasattr(cache, "_data"):
        return list(cache._data)
    return []


async def redis_keys(cache) -> list[str]:
    if not hasattr(cache, "_redis"):
        return cache_keys(cache)
    return [k.decode()[len(cache.prefix):] async for k in cache._redis.scan_iter(match=f"{cache.prefix}*")]


async def rows_of(store, user: str) -> dict[str, int]:
    counts = {}
    async with store.engine.connect() as conn:
        for table in (messages, relationship_states, state_changes):
            query = sa.select(sa.func.count()).select_from(table).where(table.c.platform == "discord", table.c.user_id == user)
            counts[table.name] = (await conn.execute(query)).scalar_one()
    return counts


async def test_forget_leaves_no_row_and_no_cache_key_for_that_person(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi)
    # A second character in another channel: /forget is for every character.
    other = await build_world(store, cache, tgi)
    try:
        for w in (world, other):
            for user in ("u1", "u2"):
                tgi.reply = "(smiles) Thank you, dear friend."
                await w.say("You are kind and wonderful.", user=user)
                await w.say("I love talking with you.", user=user)
                await w.app.engine.drain()
        assert (await rows_of(store, "u1"))["state_changes"] == 4
        assert any(":u1:" in k for k in await redis_keys(cache))

        outcome = await world.app.commands.forget(ELENA)
        assert outcome.ok and outcome.counts == {"messages": 8, "states": 2, "changes": 4, "memories": 0}
        assert "8 messages" in outcome.message
        assert await rows_of(store, "u1") == {"messages": 0, "relationship_states": 0, "state_changes": 0}
        assert [k for k in await redis_keys(cache) if re.search(r"(^|:)u1(:|$)", k)] == []
        assert (await rows_of(store, "u2"))["state_changes"] == 4
    finally:
        await close(world)
        await close(other)


async def test_an_appraisal_that_lands_after_forget_leaves_nothing_behind(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi)
    try:
        await first_contact(world)
        gate = asyncio.Event()
        fixed = Fixed(Appraisal("fixed", {"happiness": 10}, 10), gate)
        feelings = Feelings(store, cache, world.app.engine.hot, fixed, Dynamics())
        pending = asyncio.create_task(feelings.after_exchange(await exchange(world, channel=world.channel, reply_id=41)))
        await asyncio.wait_for(fixed.entered.wait(), 10)  # the appraisal is under way and waits at the gate
        await world.app.commands.forget(ELENA)
        gate.set()
        await pending
        assert await rows_of(store, "u1") == {"messages": 0, "relationship_states": 0, "state_changes": 0}
        assert (await cache.get_many([state_key(await person(world))]))[0] is None
    finally:
        await close(world)


async def test_forget_between_the_write_and_the_cache_refresh_leaves_no_copy(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi)
    try:
        await first_contact(world)

        class ForgetRightAfter:
            def __init__(self, inner) -> None:
                self.inner = inner

            async def update(self, change):
                landed = await self.inner.update(change)
                await world.app.commands.forget(ELENA)  # before the updater refreshes its cache copy
                return landed

            def __getattr__(self, name):
                return getattr(self.inner, name)

        appraiser = Fixed(Appraisal("fixed", {"happiness": 10}, 10))
        feelings = Feelings(StoreWith(store, ForgetRightAfter(store.relationships)), cache, world.app.engine.hot, appraiser, Dynamics())
        await feelings.after_exchange(await exchange(world, channel=world.channel, reply_id=51))
        assert await rows_of(store, "u1") == {"messages": 0, "relationship_states": 0, "state_changes": 0}
        assert (await cache.get_many([state_key(await person(world))]))[0] is None
    finally:
        await close(world)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


async def test_a_state_untouched_for_one_half_life_is_halfway_back_to_its_baseline(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi)
    try:
        t0 = dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC)
        clock = Clock(t0)
        world.app.engine.state_updater.dynamics = Dynamics(half_life_s=6 * 3600, clock=clock)
        key = await person(world)
        # Baseline: happiness 1, sadness 8, disgust 5, fear 7, surprise 6, anger 4; intimacy 7.
        excited = EmotionState(happiness=9, sadness=0, disgust=1, fear=7, surprise=10, anger=8)
        await store.relationships.get_or_create(RelationshipState(key.character_id, key.platform, key.user_id, excited, 9, updated_at=t0))

        clock.now = t0 + dt.timedelta(hours=6)
        mood = await world.app.commands.mood(ELENA, world.place)
        assert levels(mood.state) == {"happiness": 5, "sadness": 4, "disgust": 3, "fear": 7, "surprise": 8, "anger": 6, "intimacy": 9}
        # The prompt of a turn reads it the same way; a neutral exchange writes nothing.
        tgi.reply = "It is nearly midnight."
        await world.say("What time is it?")
        await world.app.engine.drain()
        system = tgi.bodies()[-1]["messages"][0]["content"]
        assert "happiness: 5, sadness: 4, disgust: 3, fear: 7, surprise: 8, anger: 6" in system
        assert "intimacy level with them is 9 " in system
        assert (await stored_state(world)).emotion == excited

        clock.now = t0 + dt.timedelta(hours=12)  # two half-lives: a quarter of the way left
        mood = await world.app.commands.mood(ELENA, world.place)
        assert levels(mood.state) == {"happiness": 3, "sadness": 6, "disgust": 4, "fear": 7, "surprise": 7, "anger": 5, "intimacy": 9}

        # An appraisal drifts first, then blends: the stored state moves on from the drifted one.
        tgi.reply = "(smiles) Thank you, dear friend."
        await world.say("You are wonderful, thank you.")
        await world.app.engine.drain()
        state = await stored_state(world)
        assert state.updated_at == clock.now and state.emotion.happiness == 5 and state.emotion.sadness == 6
    finally:
        await close(world)


async def test_deleting_the_newest_reply_takes_back_its_change_and_only_the_newest(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi)
    try:
        tgi.reply = "(smiles) You are a dear, kind friend."
        first, _ = await world.say("You are wonderful, thank you.")
        await world.app.engine.drain()
        before_reply = await stored_state(world)
        tgi.reply = "(beams) I adore you, my dear friend, thank you!"
        second, _ = await world.say("Tell me a story, dear friend.")
        await world.app.engine.drain()
        assert levels(await stored_state(world)) != levels(before_reply)

        conversation = second.conversation
        assert not await world.app.engine.delete_reply(conversation, first.reply_message_id)  # not the newest
        assert await world.app.engine.delete_reply(conversation, second.reply_message_id)
        await world.app.engine.drain()

        restored = await stored_state(world)
        assert (restored.emotion, restored.intimacy) == (before_reply.emotion, before_reply.intimacy)
        assert (await store.relationships.changes(await person(world)))[0].appraiser == UNDO
        kept = [(m.role, m.content) for m in await store.messages.recent(conversation, 10)]
        # The whole exchange is taken back: the message it answered leaves the history with it.
        assert kept[-1] == ("assistant", "(smiles) You are a dear, kind friend.")
        assert ("assistant", "(beams) I adore you, my dear friend, thank you!") not in kept
        # The next turn's prompt no longer carries the deleted exchange (the cached history went too),
        # and the next message is a turn of its own, not merged into the undone one.
        tgi.reply = "Go on."
        await world.say("Are you there?")
        sent = [m["content"] for m in tgi.bodies()[-1]["messages"]]
        assert "(beams) I adore you, my dear friend, thank you!" not in sent
        assert sent[-1] == "Are you there?"
        # Taking it back twice changes nothing more.
        assert not await world.app.engine.delete_reply(conversation, second.reply_message_id)
    finally:
        await close(world)
