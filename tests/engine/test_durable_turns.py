"""A person's message is stored when it arrives and answered exactly once, across a crash and a redelivery."""

from __future__ import annotations

import asyncio
import datetime as dt

import sqlalchemy as sa

from bots.compose import wire
from bots.llm.client import ModelClient
from core.commands import Place
from core.engine import NOTICE_INTERRUPTED, NOTICE_STALE, ReplyStatus
from core.events import ConversationKey, Platform
from storage.tables import messages
from tests.engine.conftest import World, build_world, built_apps, make_settings


async def rows(world: World) -> list[tuple[str, str, str | None]]:
    """Every stored message of the world's channel: (role, content, status), oldest first."""
    async with world.app.store.engine.connect() as conn:
        found = await conn.execute(
            sa.select(messages.c.role, messages.c.content, messages.c.status)
            .where(messages.c.channel_id == world.channel)
            .order_by(messages.c.id)
        )
        return [tuple(r) for r in found]


def restarted(world: World, **settings) -> World:
    """The same world after a crash: a new engine (and app) on the same database and cache."""
    client = ModelClient(world.tgi.base_url, timeout_s=5.0, concurrency=8, retries=1)
    app = wire(make_settings(llm_url=world.tgi.base_url, **settings), world.app.store, world.app.cache, client)
    built_apps.append(app)
    return World(app, world.tgi, world.character_name, world.channel, world.chat)


async def recovered(world: World, platform: str = Platform.DISCORD) -> list:
    """Recover the platform's pending messages and deliver (collect) each answer."""
    turns = [turn async for turn in world.app.engine.recover(platform)]
    for turn in turns:
        await turn.reply.collect()
    return turns


async def test_a_message_is_stored_as_pending_when_accepted_and_marked_answered_with_its_reply(world) -> None:
    world.tgi.script(reply="Speak, then.")
    event = world.event("Are you there?")
    intake = await world.app.engine.accept(event)
    assert intake is not None and intake.first
    assert await rows(world) == [("user", "Are you there?", "pending")]
    reply = world.app.engine.handle(event)
    assert await reply.collect() == "Speak, then."
    assert reply.user_message_id == intake.id
    assert await rows(world) == [("user", "Are you there?", "answered"), ("assistant", "Speak, then.", None)]


async def test_a_message_no_character_answers_is_stored_only_as_an_overheard_line(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi, trigger="mention")
    assert await world.app.engine.accept(world.event("among ourselves")) is None
    assert await world.app.engine.accept(world.event("elsewhere", channel_id="unbound")) is None
    # A line of the bound channel's scene (docs/scenes.md), never pending: nothing answers it.
    assert await rows(world) == [("user", "among ourselves", "overheard")]
    assert await recovered(world) == []


async def test_a_pending_message_is_answered_once_after_a_crash_and_its_redelivery_is_not_answered_again(world) -> None:
    event = world.event("Did you hear that?", message_id="m-crash")
    await world.app.engine.accept(event)  # the process dies before answering
    after = restarted(world)
    world.tgi.script(reply="Only the wind.")
    turns = await recovered(after)
    assert [(t.intake.text, t.reply.status, t.reply.text) for t in turns] == [
        ("Did you hear that?", ReplyStatus.ANSWERED, "Only the wind.")
    ]
    redelivered = after.app.engine.handle(event)
    assert await redelivered.collect() == "" and redelivered.status is ReplyStatus.DUPLICATE
    assert await recovered(after) == []
    assert await rows(world) == [("user", "Did you hear that?", "answered"), ("assistant", "Only the wind.", None)]
    assert world.tgi.count("/v1/chat/completions") == 1


async def test_a_redelivery_of_a_message_left_pending_is_answered_once(world) -> None:
    event = world.event("Hello again?", message_id="m-left")
    await world.app.engine.accept(event)
    after = restarted(world)
    first = after.app.engine.handle(event)
    await first.collect()
    assert first.status is ReplyStatus.ANSWERED
    second = after.app.engine.handle(event)
    await second.collect()
    assert second.status is ReplyStatus.DUPLICATE
    assert await recovered(after) == []
    assert [r[2] for r in await rows(world)] == ["answered", None]


async def test_the_same_platform_message_id_in_two_channels_is_two_messages(world) -> None:
    # Telegram numbers messages per chat: message 7 of one chat and message 7 of another are two messages.
    other = World(world.app, world.tgi, world.character_name, f"{world.channel}-b", world.chat)
    outcome = await world.app.commands.bind(world.admin, Place(Platform.DISCORD, world.chat, other.channel), world.character_name, "all")
    assert outcome.ok, outcome.message
    here = world.event("In the hall.", message_id="m-7")
    there = other.event("On the battlements.", message_id="m-7")
    accepted = [await world.app.engine.accept(here), await world.app.engine.accept(there)]
    assert all(a is not None and a.first for a in accepted) and accepted[0].id != accepted[1].id
    world.tgi.script(reply="Hush.")
    replies = [world.app.engine.handle(here), world.app.engine.handle(there)]
    for reply in replies:
        assert await reply.collect() == "Hush." and reply.status is ReplyStatus.ANSWERED
    assert [b["messages"][-1]["content"] for b in world.tgi.bodies()] == ["In the hall.", "On the battlements."]
    assert await rows(world) == [("user", "In the hall.", "answered"), ("assistant", "Hush.", None)]
    assert await rows(other) == [("user", "On the battlements.", "answered"), ("assistant", "Hush.", None)]
    # Within one channel the same id is still one message.
    again = world.app.engine.handle(here)
    assert await again.collect() == "" and again.status is ReplyStatus.DUPLICATE


async def test_recovery_does_not_answer_a_message_whose_turn_runs_in_this_process(world) -> None:
    world.tgi.script(token_delay=0.05, chunks=4)
    event = world.event("slowly", message_id="m-slow")
    reply = world.app.engine.handle(event)
    deltas = aiter(reply)
    await anext(deltas)  # the turn is streaming
    assert await recovered(world) == []
    async for _ in deltas:
        pass
    assert reply.status is ReplyStatus.ANSWERED
    assert world.tgi.count("/v1/chat/completions") == 1


async def test_a_message_left_pending_too_long_gets_one_notice_instead_of_an_answer(world) -> None:
    await world.app.engine.accept(world.event("Anyone?", message_id="m-old"))
    async with world.app.store.engine.begin() as conn:
        await conn.execute(sa.update(messages).values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)))
    after = restarted(world)
    turns = await recovered(after)
    assert [(t.reply.status, t.reply.text) for t in turns] == [(ReplyStatus.NOTICE, NOTICE_STALE)]
    assert await recovered(after) == []
    assert await rows(world) == [("user", "Anyone?", "notice")]
    assert world.tgi.count("/v1/chat/completions") == 0
    # The notice's message is not part of what the model sees next.
    world.tgi.script(reply="Yes.")
    await after.say("Now?")
    assert [m["content"] for m in world.tgi.bodies()[-1]["messages"][1:]] == ["Now?"]


async def test_the_reply_message_being_shown_is_handed_to_recovery(world) -> None:
    intake = await world.app.engine.accept(world.event("Tell me a story.", message_id="m-shown"))
    await world.app.engine.showing(intake, "987654")
    after = restarted(world)
    turns = [t async for t in after.app.engine.recover(Platform.DISCORD)]
    assert [t.shown_in for t in turns] == ["987654"]
    await turns[0].reply.collect()


async def test_a_rate_limited_message_is_settled_with_its_notice_and_left_out_of_history(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi, rate_limit_messages=1)
    await world.say("one")
    reply, _ = await world.say("two")
    assert reply.status is ReplyStatus.NOTICE
    assert [r[2] for r in await rows(world)] == ["answered", None, "notice"]
    assert await recovered(world) == []
    character = await store.characters.get_by_name(world.character_name)
    history = await store.messages.recent(ConversationKey(character.id, Platform.DISCORD, world.channel, "u1"), 10)
    assert [m.content for m in history] == ["one", tgi.reply]


async def test_shutdown_cuts_a_reply_past_the_grace_period_and_stores_what_was_said(world) -> None:
    world.tgi.script(reply="One two three four five six seven eight.", chunks=8, token_delay=0.5)
    reply = world.app.engine.handle(world.event("Count for me."))
    started = asyncio.Event()
    showing = asyncio.ensure_future(_show(reply, started))
    await started.wait()
    world.app.engine.stop_answering()
    assert await world.app.engine.finish_turns(0.0) is False
    said = await showing
    assert said.endswith(NOTICE_INTERRUPTED)
    assert reply.status is ReplyStatus.PARTIAL
    cut = said[: -len(NOTICE_INTERRUPTED)].strip()
    assert cut and cut != "One two three four five six seven eight."
    assert await rows(world) == [("user", "Count for me.", "answered"), ("assistant", cut, None)]
    # A message that arrives while the process stops is stored, and answered after the restart.
    later = world.app.engine.handle(world.event("And now?"))
    assert await later.collect() == "" and later.status is ReplyStatus.DEFERRED
    assert (await rows(world))[-1] == ("user", "And now?", "pending")


async def _show(reply, started: asyncio.Event) -> str:
    """What an adapter does: iterate the reply in one task (here: noting when the text starts)."""
    said = []
    async for delta in reply:
        said.append(delta)
        started.set()
    return "".join(said)


async def test_an_undone_exchange_is_neither_recovered_nor_merged_into_the_next_turn(world) -> None:
    # /undo (console) or deleting the reply (Discord) takes the exchange back: after a restart the
    # person's message is not pending, not in the history, and the next message is a turn of its own.
    world.tgi.script(reply="The king is dead.")
    await world.say("What news, my lord?")
    world.tgi.script(reply="(draws his sword) Aye.")
    undone, _ = await world.say("Will you avenge him?")
    assert await world.app.engine.delete_reply(undone.conversation, undone.reply_message_id)
    await world.app.engine.drain()
    assert (await rows(world))[-1] == ("user", "Will you avenge him?", "undone")
    after = restarted(world)
    assert await recovered(after) == []
    history = [(m.role, m.content) for m in await after.app.store.messages.recent(undone.conversation, 10)]
    assert history == [("user", "What news, my lord?"), ("assistant", "The king is dead.")]
    world.tgi.script(reply="I shall.")
    await after.say("Speak, my lord.")
    sent = [m["content"] for m in world.tgi.bodies()[-1]["messages"]]
    assert sent[-1] == "Speak, my lord." and not any("Will you avenge him?" in c for c in sent)
    # Its delivery is still on record: a redelivery of the undone message is not answered again.
    again = after.app.engine.handle(world.event("Will you avenge him?", message_id=undone.intake.platform_message_id))
    assert await again.collect() == "" and again.status is ReplyStatus.DUPLICATE
