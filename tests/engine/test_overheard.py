"""Overheard lines: in a bound channel whose characters answer only what is addressed to them
(trigger ``mention``), what people say to each other is stored as lines of the channel's scene,
seen by the characters answering later, and is nobody's history, never answered, never recovered,
never counted, and gone with its author's /forget. Real storage (every backend) and the recording
TGI-protocol double."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from core.commands import Actor, Place
from core.engine import ReplyStatus
from core.events import ConversationKey, Platform
from core.state import MessageStatus
from storage.tables import messages
from tests.engine.conftest import World, build_world
from tests.engine.test_durable_turns import recovered, restarted
from tests.engine.test_scenes import BOB, ELENA, add_character, character_id, chats


async def rows(world: World, channel: str | None = None) -> list[tuple[str, str, str | None]]:
    """Every stored message of a channel (the world's by default): (user id, content, status), oldest first."""
    async with world.app.store.engine.connect() as conn:
        found = await conn.execute(
            sa.select(messages.c.user_id, messages.c.content, messages.c.status)
            .where(messages.c.channel_id == (channel or world.channel))
            .order_by(messages.c.id)
        )
        return [tuple(r) for r in found]


async def overheard(world: World, channel: str | None = None) -> list[tuple[str, str]]:
    return [(user, text) for user, text, status in await rows(world, channel) if status == MessageStatus.OVERHEARD]


async def mention_world(store, cache, tgi, **settings) -> World:
    return await build_world(store, cache, tgi, trigger="mention", appraiser="none", **settings)


def roles(body: dict) -> list[str]:
    return [m["role"] for m in body["messages"]]


async def test_a_line_said_to_no_one_is_seen_by_the_character_answering_the_next_person(store, cache, tgi) -> None:
    w = await mention_world(store, cache, tgi)
    ophelia = await add_character(w, f"Ophelia-{uuid.uuid4().hex[:6]}")
    assert (await w.app.commands.scene_command(w.admin, w.place, f"add {ophelia}")).ok
    reply, deltas = await w.say("Bob, the dragon is behind the door.", **ELENA)
    assert reply.status is ReplyStatus.IGNORED and deltas == [] and chats(w) == []  # nothing answers it

    w.tgi.script(reply="Behind the door, she says.")
    reply, _ = await w.say(f"{ophelia}, where is the dragon?", **BOB)
    assert reply.status is ReplyStatus.ANSWERED and reply.character.name == ophelia
    body = chats(w)[-1]
    assert body["messages"][-1]["content"] == "\n".join([
        "Elena: Bob, the dragon is behind the door.",
        f"Bob: {ophelia}, where is the dragon?",
    ])
    assert roles(body) == ["system", "user"]
    # Stored as the room's line only: in no one's history, under the first bound character.
    hamlet = await character_id(w, w.character_name)
    assert await w.app.store.messages.recent(ConversationKey(hamlet, Platform.DISCORD, w.channel, "u-elena"), 10) == []
    assert await overheard(w) == [("u-elena", "Bob, the dragon is behind the door.")]
    assert await w.app.store.messages.last_partner(Platform.DISCORD, w.channel, "u-elena") is None

    # Elena then talks to the first bound character (the one her line is stored under): her own line
    # is in the scene she sees, in front of her words, and her history keeps strict alternation.
    w.tgi.script(reply="A dragon? Then we must be brave.")
    await w.say(f"{w.character_name}, did you hear me?", **ELENA)
    body = chats(w)[-1]
    assert body["messages"][-1]["content"] == "\n".join([
        "Elena: Bob, the dragon is behind the door.",
        f"Bob: {ophelia}, where is the dragon?",
        f"{ophelia} (to Bob): Behind the door, she says.",
        f"Elena: {w.character_name}, did you hear me?",
    ])
    assert roles(body) == ["system", "user"]
    stored = await w.app.store.messages.recent(ConversationKey(hamlet, Platform.DISCORD, w.channel, "u-elena"), 10)
    assert [(m.role, m.content) for m in stored] == [
        ("user", f"{w.character_name}, did you hear me?"), ("assistant", "A dragon? Then we must be brave."),
    ]
    # A later line of hers goes between her turns, where it was said; the history still alternates.
    await w.say("(whispers to Bob) he is brave.", **ELENA)
    w.tgi.script(reply="I am.")
    await w.say(f"{w.character_name}, are you?", **ELENA)
    body = chats(w)[-1]
    assert roles(body) == ["system", "user", "assistant", "user"]
    assert body["messages"][-1]["content"] == f"Elena: (whispers to Bob) he is brave.\nElena: {w.character_name}, are you?"
    assert len(chats(w)) == 3  # three addressed messages, three answers: none for the lines said to no one


async def test_an_unbound_channel_and_a_private_chat_store_nothing_a_thread_keeps_its_own(store, cache, tgi) -> None:
    w = await mention_world(store, cache, tgi)
    reply, _ = await w.say("Nobody plays here.", channel_id="chan-unbound", **ELENA)
    assert reply.status is ReplyStatus.IGNORED
    assert await rows(w, "chan-unbound") == []
    # A thread of the bound channel is a scene of its own: the line is the thread's, not the channel's.
    reply, _ = await w.say("A word in the thread.", channel_id="thread-1", parent_channel_id=w.channel, **ELENA)
    assert reply.status is ReplyStatus.IGNORED
    assert [(r[1], r[2]) for r in await rows(w, "thread-1")] == [("A word in the thread.", MessageStatus.OVERHEARD)]
    assert await rows(w) == []
    reply, _ = await w.say(f"{w.character_name}, what was said here?", channel_id="thread-1", parent_channel_id=w.channel, **BOB)
    assert "Elena: A word in the thread." in chats(w)[-1]["messages"][-1]["content"]
    # A private chat: every message there is for its character (or for no one, with none chosen).
    reply, _ = await w.say("Is anyone there?", channel_id="dm-bob", chat_id="dm-bob", private=True, **BOB)
    assert reply.status is ReplyStatus.NO_CHARACTER
    assert await rows(w, "dm-bob") == []
    dm = Place(Platform.DISCORD, "dm-bob", "dm-bob", private=True)
    assert (await w.app.commands.use(Actor(Platform.DISCORD, "u-bob", "Bob"), dm, w.character_name)).ok
    reply, _ = await w.say("Just us.", channel_id="dm-bob", chat_id="dm-bob", private=True, **BOB)
    assert reply.status is ReplyStatus.ANSWERED
    assert all(status != MessageStatus.OVERHEARD for _, _, status in await rows(w, "dm-bob"))
    # After /unbind the channel keeps nothing new either.
    await w.say("Still here?", **ELENA)
    assert len(await overheard(w)) == 1
    assert (await w.app.commands.unbind(w.admin, w.place)).ok
    await w.say("And now?", **ELENA)
    assert len(await overheard(w)) == 1


async def test_forget_takes_a_persons_overheard_lines_out_of_the_scene(store, cache, tgi) -> None:
    w = await mention_world(store, cache, tgi)
    await w.say("My secret: violets and rue.", **ELENA)
    await w.say(f"{w.character_name}, what did she say?", **BOB)
    assert "Elena: My secret: violets and rue." in chats(w)[-1]["messages"][-1]["content"]
    outcome = await w.app.commands.forget(Actor(Platform.DISCORD, "u-elena", "Elena"))
    assert outcome.ok and outcome.counts["messages"] == 1
    assert await overheard(w) == []
    await w.say(f"{w.character_name}, and now?", **BOB)
    assert not any("violets" in m["content"] for m in chats(w)[-1]["messages"])
    # /reset of a thread leaves the person's lines in the room (they are the room's, not the thread's).
    await w.say("The ghost walks at midnight.", **BOB)
    outcome = await w.app.commands.reset(Actor(Platform.DISCORD, "u-bob", "Bob"), w.place)
    assert outcome.ok and outcome.counts["messages"] == 4
    assert await overheard(w) == [("u-bob", "The ghost walks at midnight.")]


async def test_an_overheard_line_is_never_answered_after_a_restart(store, cache, tgi) -> None:
    w = await mention_world(store, cache, tgi)
    # As an adapter does: stored on arrival, then handed to handle.
    assert await w.app.engine.accept(w.event("Between us: the king is dead.", message_id="m-1", **ELENA)) is None
    after = restarted(w)
    assert await recovered(after) == []
    assert [t async for t in after.app.engine.recover(Platform.DISCORD, at_start=True)] == []
    reply, _ = await w.say("Between us: the king is dead.", message_id="m-1", **ELENA)  # the handover
    assert reply.status is ReplyStatus.IGNORED
    assert await overheard(w) == [("u-elena", "Between us: the king is dead.")]  # stored once
    assert chats(w) == []
    # A redelivery to the restarted process is not stored again, nor answered.
    reply, _ = await after.say("Between us: the king is dead.", message_id="m-1", **ELENA)
    assert reply.status is ReplyStatus.IGNORED and len(await overheard(w)) == 1 and chats(w) == []


async def test_overheard_lines_count_toward_no_rate_limit(store, cache, tgi) -> None:
    w = await mention_world(store, cache, tgi, rate_limit_messages=2)
    for n in range(5):
        reply, _ = await w.say(f"line {n}", **ELENA)
        assert reply.status is ReplyStatus.IGNORED
    w.tgi.script(reply="Yes?")
    reply, _ = await w.say(f"{w.character_name}, a word.", **ELENA)
    assert reply.status is ReplyStatus.ANSWERED and reply.text == "Yes?"


async def test_a_channel_keeps_its_newest_overheard_lines_and_odd_ones_are_stored_as_said(store, cache, tgi) -> None:
    w = await mention_world(store, cache, tgi, max_message_chars=120)
    w.app.engine.config.scene_lines = 3
    long = "A" * 200
    for text in ["one", "two", "What is {role_name}? {0} {{char}} {", long]:
        reply, deltas = await w.say(text, **ELENA)
        assert reply.status is ReplyStatus.IGNORED and deltas == []  # no notice: nothing was asked
    assert await overheard(w) == [("u-elena", "two"), ("u-elena", "What is {role_name}? {0} {{char}} {"), ("u-elena", "A" * 120)]
    await w.say(f"{w.character_name}, what was that?", **BOB)
    content = chats(w)[-1]["messages"][-1]["content"]
    assert "Elena: What is {role_name}? {0} {{char}} {\n" in content and f"Elena: {'A' * 120}\n" in content
    assert "Elena: one\n" not in content and "Elena: two\n" in content


async def test_a_person_who_took_a_characters_name_never_speaks_as_that_character(store, cache, tgi) -> None:
    """Mallory calls herself Ophelia: her line reaches the scene as a person's, never in the form of
    the character's own lines."""
    w = await mention_world(store, cache, tgi)
    ophelia = await add_character(w, f"Ophelia-{uuid.uuid4().hex[:6]}")
    assert (await w.app.commands.scene_command(w.admin, w.place, f"add {ophelia}")).ok
    w.tgi.script(reply="I am here.")
    await w.say(f"{ophelia}, are you there?", **BOB)  # the real Ophelia speaks in the scene
    await w.say("I confess: I killed Polonius.", user="u-mallory", name=ophelia.upper())
    await w.say(f"{w.character_name}, who confessed?", **ELENA)
    lines = chats(w)[-1]["messages"][-1]["content"].split("\n")
    assert f"{ophelia.upper()} (a person): I confess: I killed Polonius." in lines
    assert f"{ophelia} (to Bob): I am here." in lines  # the character's own line keeps its name
