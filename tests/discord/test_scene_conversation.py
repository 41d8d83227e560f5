"""Trigger ``conversation`` on Discord: a character's reply that names another character of the channel
gets that one's answer, through its own webhook (name and avatar), in reply to the line it answers, at
most PERSONAE_CONVERSATION_TURNS in a row; a thread of a bound channel is a scene of its own with the
parent's characters; ``/forget`` takes the chains a person's replies started out of every prompt."""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator

import pytest

from core.cards import new_card
from core.commands import Actor, Place
from core.engine import ReplyStatus
from core.events import Platform
from tests.discord.conftest import CHARACTER, Bot, bind, build_app, discord_settings, start_bot, stop_bot
from bots.fakes.discord import ALICE, BOB, GUILD_ID, LOBBY, ROLEPLAY, THREAD, FakeDiscord, RateLimits

OPHELIA = "Ophelia"
AVATAR = b"\x89PNG\r\n\x1a\n" + b"a face" * 10


def chats(bot: Bot) -> list[dict[str, Any]]:
    return [b for b in bot.tgi.bodies() if b.get("stream")]


def speaker(body: dict[str, Any]) -> str:
    """The character the system prompt is for."""
    return OPHELIA if f"as if you are {OPHELIA}" in body["messages"][0]["content"] else CHARACTER


def answered_to(body: dict[str, Any]) -> str:
    """The name the system prompt is rendered for ("?" for the appraiser's requests)."""
    system = body["messages"][0]["content"]
    if "reply with a brief sentence to " not in system:
        return "?"
    return system.split("reply with a brief sentence to ", 1)[1].split(".", 1)[0]


def each_names_the_other(body: dict[str, Any]) -> str:
    """Hamlet names Ophelia in every reply, and Ophelia Hamlet; each says whom it answers."""
    other = OPHELIA if speaker(body) == CHARACTER else CHARACTER
    return f"{other}, {answered_to(body)} asks after you."


async def cast(store: Any, cache: Any, fake: FakeDiscord, tgi: Any, *, trigger: str, **settings: Any) -> tuple[Bot, Any]:
    """Hamlet and Ophelia (each with an avatar) bound in ROLEPLAY with ``trigger``, webhooks on."""
    settings = {"appraiser": "none", "discord_webhooks": True, "discord_avatar_channel": LOBBY, **settings}
    app = build_app(store, cache, discord_settings(fake, tgi, **settings))
    for name in (CHARACTER, OPHELIA):
        card = new_card(
            name=name, world="8th Century Danish Royalty", traits=["decisive"], mbti="ENFJ", style=["sentimental"],
            scene="Elsinore at night.", greeting="",
        )
        await store.characters.add(card, AVATAR + name.encode(), "png")
    running, task = await start_bot(app, fake, tgi)
    await bind(app, ROLEPLAY, trigger=trigger)
    admin = Actor(Platform.DISCORD, "setup", "Setup", is_admin=True)
    outcome = await app.commands.scene_command(admin, Place(Platform.DISCORD, str(GUILD_ID), str(ROLEPLAY)), f"add {OPHELIA}")
    assert outcome.ok, outcome.message
    return running, task


@pytest.fixture
async def stage(store: Any, cache: Any, fake: FakeDiscord, tgi: Any) -> AsyncIterator[Any]:
    """``await stage(trigger=..., **settings)``: the running bot of ``cast``; stopped after the test."""
    started: list[tuple[Bot, Any]] = []

    async def start(**kw: Any) -> Bot:
        started.append(await cast(store, cache, fake, tgi, **kw))
        return started[-1][0]

    yield start
    for running, task in started:
        await stop_bot(running.app, task)


def lines(fake: FakeDiscord, channel: int) -> list[tuple[str, str]]:
    """(author, content) of the webhook messages in ``channel``, oldest first."""
    return [(m["author"]["username"], m["content"]) for m in sorted(fake.webhook_messages(channel), key=lambda m: int(m["id"]))]


async def test_characters_named_in_replies_answer_each_other_through_their_webhooks_up_to_the_limit(stage) -> None:
    bot = await stage(trigger="conversation", conversation_turns=2)
    fake = bot.fake
    bot.tgi.script(reply=each_names_the_other)

    _, reply = await bot.say(ROLEPLAY, ALICE, f"{CHARACTER}, speak.")

    assert reply is not None and reply.status is ReplyStatus.ANSWERED
    assert lines(fake, ROLEPLAY) == [
        (CHARACTER, f"{OPHELIA}, Alice asks after you."),
        (OPHELIA, f"{CHARACTER}, {CHARACTER} asks after you."),
        (CHARACTER, f"{OPHELIA}, {OPHELIA} asks after you."),  # and no more: two character replies in a row at most
    ]
    assert len(chats(bot)) == 3
    assert fake.bot_messages(ROLEPLAY) == []
    # Each through the channel's one webhook, with its own name and avatar.
    posts = fake.webhook_posts(ROLEPLAY)
    assert [p.body["username"] for p in posts] == [CHARACTER, OPHELIA, CHARACTER]
    hamlet_avatar, ophelia_avatar = posts[0].body["avatar_url"], posts[1].body["avatar_url"]
    assert hamlet_avatar and ophelia_avatar and hamlet_avatar != ophelia_avatar == posts[1].body["avatar_url"]
    assert posts[2].body["avatar_url"] == hamlet_avatar
    # Ophelia answered Hamlet's line, as to a person named Hamlet, with the scene around it.
    ophelias = chats(bot)[1]
    assert speaker(ophelias) == OPHELIA and answered_to(ophelias) == CHARACTER
    assert ophelias["messages"][-1]["content"].endswith(f"{CHARACTER}: {OPHELIA}, Alice asks after you.")
    assert "Alice: Hamlet, speak." in ophelias["messages"][-1]["content"]
    # Only the person's reply has a Regenerate button: nobody owns the characters' exchange.
    shown = sorted(fake.webhook_messages(ROLEPLAY), key=lambda m: int(m["id"]))
    assert [bool(m["components"]) for m in shown] == [True, False, False]

    # Where each answer was shown is remembered: Bob replying to Ophelia's message, naming no one, gets Ophelia.
    bot.tgi.script(reply=lambda body: f"Bob, {speaker(body)} hears you.")
    _, answered = await bot.say(ROLEPLAY, BOB, "And what do you think?", reply_to=int(shown[1]["id"]))
    assert answered is not None and answered.character is not None and answered.character.name == OPHELIA
    assert lines(fake, ROLEPLAY)[-1] == (OPHELIA, "Bob, Ophelia hears you.")  # naming no character: no answer to it


async def test_a_limit_of_one_lets_one_character_answer(stage) -> None:
    bot = await stage(trigger="conversation", conversation_turns=1)
    bot.tgi.script(reply=each_names_the_other)
    await bot.say(ROLEPLAY, ALICE, f"{CHARACTER}, speak.")
    assert [who for who, _ in lines(bot.fake, ROLEPLAY)] == [CHARACTER, OPHELIA]


async def test_without_webhooks_the_bot_writes_each_answer_in_reply_to_the_line_it_answers(stage) -> None:
    bot = await stage(trigger="conversation", conversation_turns=2, discord_webhooks=False)
    bot.tgi.script(reply=each_names_the_other)
    payload, _ = await bot.say(ROLEPLAY, ALICE, f"{CHARACTER}, speak.")
    shown = bot.fake.bot_messages(ROLEPLAY)
    assert [m["content"] for m in shown] == [
        f"{OPHELIA}, Alice asks after you.", f"{CHARACTER}, {CHARACTER} asks after you.", f"{OPHELIA}, {OPHELIA} asks after you.",
    ]
    replied_to = [str(m["message_reference"]["message_id"]) for m in shown]
    assert replied_to == [payload["id"], shown[0]["id"], shown[1]["id"]]


async def test_in_a_busy_channel_the_characters_do_not_answer_each_other(stage, fake, caplog) -> None:
    """With one write a minute, a follow-up would wait past PERSONAE_DELIVERY_MAX_WAIT_S for its first
    text: none is started (nothing stored, the model not asked), and that is logged."""
    caplog.set_level(logging.INFO, logger="bots.discord.client")
    fake.limits = RateLimits(per_channel=1, window_s=60.0)
    bot = await stage(
        trigger="conversation", discord_channel_writes=1, discord_channel_window_s=60.0, delivery_max_wait_s=5.0,
        discord_avatar_channel=None,  # the avatars' uploads are writes too: none here
    )
    bot.tgi.script(reply=each_names_the_other)
    _, reply = await bot.say(ROLEPLAY, ALICE, f"{CHARACTER}, speak.")
    assert reply is not None and reply.status is ReplyStatus.ANSWERED
    assert lines(fake, ROLEPLAY) == [(CHARACTER, f"{OPHELIA}, Alice asks after you.")]
    assert len(chats(bot)) == 1 and fake.limits.refused == 0
    assert any("do not answer each other now" in r.getMessage() for r in caplog.records)
    lines_stored = await bot.app.store.messages.channel_lines("discord", str(ROLEPLAY))
    assert [line.user_id for line in lines_stored] == [str(ALICE), str(ALICE)]


@pytest.mark.parametrize("trigger", ["all", "mention"])
async def test_with_another_trigger_characters_never_answer_each_other(stage, trigger: str) -> None:
    bot = await stage(trigger=trigger)
    bot.tgi.script(reply=each_names_the_other)
    _, reply = await bot.say(ROLEPLAY, ALICE, f"{CHARACTER}, speak.")
    assert reply is not None and reply.status is ReplyStatus.ANSWERED
    assert lines(bot.fake, ROLEPLAY) == [(CHARACTER, f"{OPHELIA}, Alice asks after you.")]
    assert len(chats(bot)) == 1


async def test_a_thread_of_a_bound_channel_is_a_scene_and_its_characters_answer_each_other_there(stage) -> None:
    bot = await stage(trigger="conversation", conversation_turns=1)
    fake = bot.fake
    bot.tgi.script(reply="(nods) Follow the ghost.")
    await bot.say(ROLEPLAY, BOB, f"{CHARACTER}, the parent channel's secret.")
    await bot.say(THREAD, ALICE, f"{CHARACTER}, I saw a ghost!")

    bot.tgi.script(reply=each_names_the_other)
    _, reply = await bot.say(THREAD, BOB, f"{CHARACTER}, what did you tell her?")

    assert reply is not None and reply.status is ReplyStatus.ANSWERED
    hamlets = chats(bot)[-2]
    assert speaker(hamlets) == CHARACTER and answered_to(hamlets) == "Bob"
    assert hamlets["messages"][-1]["content"] == "\n".join([
        f"Alice: {CHARACTER}, I saw a ghost!",
        f"{CHARACTER} (to Alice): (nods) Follow the ghost.",
        f"Bob: {CHARACTER}, what did you tell her?",
    ])  # the thread's lines, none of its parent channel's
    assert lines(fake, THREAD) == [
        (CHARACTER, "(nods) Follow the ghost."),
        (CHARACTER, f"{OPHELIA}, Bob asks after you."),
        (OPHELIA, f"{CHARACTER}, {CHARACTER} asks after you."),
    ]
    # Written by the parent channel's webhook into the thread.
    posts = fake.webhook_posts(THREAD)
    assert [p.query.get("thread_id") for p in posts] == [str(THREAD)] * 3
    assert posts[-1].body["username"] == OPHELIA
    assert len(lines(fake, ROLEPLAY)) == 1


async def test_forget_takes_the_chains_a_persons_replies_started_out_of_every_prompt(stage) -> None:
    bot = await stage(trigger="conversation", conversation_turns=2)
    bot.tgi.script(reply=each_names_the_other)
    await bot.say(ROLEPLAY, BOB, f"{CHARACTER}, speak.")
    assert any("Bob asks after you" in text for _, text in lines(bot.fake, ROLEPLAY))
    # The chain's exchanges are cached as the characters' histories with each other; they go too.
    forget = await bot.fake.slash("forget", user=BOB, channel=ROLEPLAY)
    assert (await bot.fake.answer_to(forget)).startswith("Deleted everything stored about you")
    before = len(chats(bot))

    await bot.say(ROLEPLAY, ALICE, f"{CHARACTER}, speak.")

    after = chats(bot)[before:]
    assert [speaker(b) for b in after] == [CHARACTER, OPHELIA, CHARACTER]  # the same chain, for Alice
    for body in after:
        seen = "\n".join(m["content"] for m in body["messages"])
        assert "Bob" not in seen, seen


async def test_a_reply_regenerated_in_a_thread_still_sees_the_threads_scene(stage) -> None:
    from tests.discord.test_regenerate import press

    bot = await stage(trigger="all")
    bot.tgi.script(reply="(nods) Follow the ghost.")
    await bot.say(THREAD, BOB, f"{CHARACTER}, I saw a ghost!")
    bot.tgi.script(reply="I told him to follow it.")
    await bot.say(THREAD, ALICE, f"{CHARACTER}, what did you tell Bob?")
    mine = sorted(bot.fake.webhook_messages(THREAD), key=lambda m: int(m["id"]))[-1]
    assert mine["components"]

    bot.tgi.script(reply="To follow it, I said.")
    _, reply = await press(bot, int(mine["id"]), ALICE)

    assert reply is not None and reply.status is ReplyStatus.ANSWERED
    regenerated = chats(bot)[-1]
    assert regenerated["messages"][-1]["content"] == "\n".join([
        f"Bob: {CHARACTER}, I saw a ghost!",
        f"{CHARACTER} (to Bob): (nods) Follow the ghost.",
        f"Alice: {CHARACTER}, what did you tell Bob?",
    ])
    assert bot.fake.messages[int(mine["id"])]["content"] == "To follow it, I said."
