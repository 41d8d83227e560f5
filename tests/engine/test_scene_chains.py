"""The characters' answers to each other (trigger ``conversation``) go with the reply that started
them: /reset, a deleted reply, Regenerate and /forget take the whole chain; a chain never outlives
its reply, never reaches a scene twice, and a character no longer in the channel does not speak."""

from __future__ import annotations

import sqlalchemy as sa

from core.commands import Actor
from core.engine import ReplyStatus
from core.events import CHARACTER_USER, Platform
from storage.tables import messages
from tests.engine.test_scenes import BOB, ELENA, chats, conversation_world

BOB_ACTOR = Actor(Platform.DISCORD, "u-bob", "Bob")


async def rows(w) -> list[tuple]:
    """The channel's stored messages: (user, role, text, status), oldest first."""
    async with w.app.store.engine.connect() as conn:
        found = await conn.execute(
            sa.select(messages.c.user_id, messages.c.role, messages.c.content, messages.c.status)
            .where(messages.c.channel_id == w.channel)
            .order_by(messages.c.id)
        )
        return [tuple(r) for r in found]


def chain_rows(found: list[tuple]) -> list[tuple]:
    return [r for r in found if r[0].startswith(CHARACTER_USER)]


async def chain(w, text: str = "speak."):
    """Bob speaks to Hamlet; Hamlet's reply names Ophelia, who answers; her answer names Hamlet, who answers."""
    reply, _ = await w.say(f"{w.character_name}, {text}", **BOB)
    await w.app.engine.shown(reply, ["shown-0"])
    answer = await w.app.engine.follow_up(reply, "shown-0")
    await answer.collect()
    assert answer.status is ReplyStatus.ANSWERED
    await w.app.engine.shown(answer, ["shown-1"])
    again = await w.app.engine.follow_up(answer, "shown-1")  # a follow-up of a follow-up
    await again.collect()
    assert again.status is ReplyStatus.ANSWERED
    assert len(chain_rows(await rows(w))) == 4
    return reply, answer


async def close(w) -> None:
    await w.app.engine.drain()
    await w.app.model.close()


async def test_reset_takes_the_chain_its_replies_started(store, cache, tgi) -> None:
    w = await conversation_world(store, cache, tgi)
    await chain(w, "my secret is violets.")
    assert (await w.app.commands.reset(BOB_ACTOR, w.place, w.character_name)).ok
    assert await rows(w) == []  # Bob's thread and the characters' answers it started
    w.tgi.script(reply="ok")
    await w.say(f"{w.ophelia}, what happened?", **ELENA)
    assert "violets" not in str(chats(w)[-1]["messages"]) and "what say you" not in str(chats(w)[-1]["messages"])
    await close(w)


async def test_a_deleted_reply_takes_the_chain_it_started(store, cache, tgi) -> None:
    w = await conversation_world(store, cache, tgi)
    reply, _ = await chain(w, "my secret is violets.")
    assert await w.app.engine.delete_reply(reply.conversation, reply.reply_message_id)  # Discord: message deleted
    left = await rows(w)
    assert chain_rows(left) == [] and [r[3] for r in left] == ["undone"]
    assert (await w.app.commands.forget(BOB_ACTOR)).ok
    assert await rows(w) == []
    await close(w)


async def test_a_regenerated_reply_takes_the_chain_the_old_text_started(store, cache, tgi) -> None:
    w = await conversation_world(store, cache, tgi)
    reply, _ = await chain(w)
    w.tgi.script(reply="I keep silent.")
    again = w.app.engine.regenerate(reply.conversation, "Bob", reply.reply_message_id)
    await again.collect()
    assert again.status is ReplyStatus.ANSWERED
    assert chain_rows(await rows(w)) == []
    w.tgi.script(reply="ok")
    await w.say(f"{w.character_name}, what did you say to Bob?", **ELENA)
    last = chats(w)[-1]["messages"][-1]["content"]
    assert "what say you" not in last and "I say yes" not in last and "I keep silent." in last
    await close(w)


async def test_forget_between_a_reply_and_its_follow_up_leaves_no_copy(store, cache, tgi) -> None:
    w = await conversation_world(store, cache, tgi)
    reply, _ = await w.say(f"{w.character_name}, my secret is violets.", **BOB)
    await w.app.engine.shown(reply, ["shown-0"])
    assert (await w.app.commands.forget(BOB_ACTOR)).ok  # the adapter's chain goes on after this
    assert await w.app.engine.follow_up(reply, "shown-0") is None
    assert await rows(w) == []
    await close(w)


async def test_a_line_said_to_another_character_reaches_later_scenes_once(store, cache, tgi) -> None:
    """Hamlet's line to Ophelia is his reply to Bob (a scene line) and her copy of it (the turn she
    answered): a later scene has it once, as the reply; her answer is said to Hamlet."""
    w = await conversation_world(store, cache, tgi)
    reply, _ = await w.say(f"{w.character_name}, speak.", **BOB)
    await w.app.engine.shown(reply, ["shown-0"])
    answer = await w.app.engine.follow_up(reply, "shown-0")
    await answer.collect()
    await w.app.engine.shown(answer, ["shown-1"])
    w.tgi.script(reply="ok")
    await w.say(f"{w.ophelia}, what happened?", **ELENA)
    hamlet, ophelia = w.character_name, w.ophelia
    assert chats(w)[-1]["messages"][-1]["content"] == (
        f"Bob: {hamlet}, speak.\n{hamlet} (to Bob): {ophelia}, what say you?\n"
        f"{ophelia} (to {hamlet}): {hamlet}, I say yes.\nElena: {ophelia}, what happened?"
    )
    await close(w)


async def test_a_character_removed_mid_chain_does_not_answer(store, cache, tgi) -> None:
    w = await conversation_world(store, cache, tgi)
    reply, _ = await w.say(f"{w.character_name}, speak.", **BOB)
    await w.app.engine.shown(reply, ["shown-0"])
    answer = await w.app.engine.follow_up(reply, "shown-0")
    assert answer is not None
    assert (await w.app.commands.scene_command(w.admin, w.place, f"remove {w.ophelia}")).ok
    await answer.collect()
    assert answer.status is ReplyStatus.IGNORED and answer.text == ""
    assert chain_rows(await rows(w)) == [] and len(chats(w)) == 1
    await close(w)


async def test_an_unbind_mid_chain_stops_it(store, cache, tgi) -> None:
    w = await conversation_world(store, cache, tgi)
    reply, _ = await w.say(f"{w.character_name}, speak.", **BOB)
    await w.app.engine.shown(reply, ["shown-0"])
    answer = await w.app.engine.follow_up(reply, "shown-0")
    assert (await w.app.commands.unbind(w.admin, w.place)).ok
    await answer.collect()
    assert answer.status is ReplyStatus.IGNORED
    assert chain_rows(await rows(w)) == [] and len(chats(w)) == 1
    await close(w)


async def test_a_removed_character_s_follow_up_left_pending_is_not_answered_at_start(store, cache, tgi) -> None:
    w = await conversation_world(store, cache, tgi)
    reply, _ = await w.say(f"{w.character_name}, speak.", **BOB)
    await w.app.engine.shown(reply, ["shown-0"])
    assert await w.app.engine.follow_up(reply, "shown-0") is not None  # stored, never answered: a crash
    assert (await w.app.commands.scene_command(w.admin, w.place, f"remove {w.ophelia}")).ok
    recovered = [t async for t in w.app.engine.recover(Platform.DISCORD.value) if t.intake.conversation.channel_id == w.channel]
    for turn in recovered:
        await turn.reply.collect()
        assert turn.reply.status is ReplyStatus.IGNORED
    assert chain_rows(await rows(w)) == [] and len(chats(w)) == 1
    await close(w)


async def test_the_characters_cached_histories_forget_a_deleted_chain(store, cache, tgi) -> None:
    """After /reset, a deleted reply or a Regenerate took a chain, the next chain's answer is the
    first exchange of Ophelia's conversation with Hamlet again: nothing of the old one from the cache."""
    for take in ("reset", "delete", "regenerate"):
        w = await conversation_world(store, cache, tgi)
        reply, _ = await chain(w)
        if take == "reset":
            assert (await w.app.commands.reset(BOB_ACTOR, w.place, w.character_name)).ok
        elif take == "delete":
            assert await w.app.engine.delete_reply(reply.conversation, reply.reply_message_id)
        else:
            again = w.app.engine.regenerate(reply.conversation, "Bob", reply.reply_message_id)
            await again.collect()  # the same text: it names Ophelia again
            assert again.status is ReplyStatus.ANSWERED
        reply, _ = await w.say(f"{w.character_name}, speak again.", **BOB)
        await w.app.engine.shown(reply, ["shown-2"])
        answer = await w.app.engine.follow_up(reply, "shown-2")
        await answer.collect()
        assert answer.status is ReplyStatus.ANSWERED, take
        turns = [m for m in chats(w)[-1]["messages"] if m["role"] != "system"]
        assert len(turns) == 1, (take, turns)
        await close(w)
