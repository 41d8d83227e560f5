"""A flood from one person in a channel: the line of waiting turns is bounded, one notice, the rest dropped."""

from __future__ import annotations

import asyncio
import logging

from core.engine import NOTICE_RATE
from tests.discord.conftest import add_character, build_app, discord_settings, start_bot, stop_bot
from bots.fakes.discord import ALICE, BOB, ROLEPLAY


async def test_a_flood_in_a_channel_gets_one_notice_and_the_line_stays_bounded(store, cache, fake, tgi, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="core.engine")
    app = build_app(store, cache, discord_settings(fake, tgi, rate_limit_messages=3, max_waiting_per_person=10))
    await add_character(store)
    bot, task = await start_bot(app, fake, tgi)
    try:
        await bot.bind(ROLEPLAY)
        tgi.gate = asyncio.Event()  # the first reply waits until the whole flood has arrived
        for i in range(30):
            await fake.say(ROLEPLAY, ALICE, f"message {i}")
        await fake.wait_for(
            lambda: app.engine.turns_dropped == 20 and tgi.count("/v1/chat/completions") == 1,
            what="the flood to arrive",
        )
        assert app.engine.turns_waiting == 10
        await fake.say(ROLEPLAY, BOB, "Good evening.")
        tgi.gate.set()
        await fake.wait_for(
            lambda: app.engine.turns_waiting == 0 and len(fake.bot_messages(ROLEPLAY)) == 5, what="the turns to end"
        )
        await app.engine.drain()

        contents = [m["content"] for m in fake.bot_messages(ROLEPLAY)]
        assert contents.count(NOTICE_RATE) == 1
        assert contents.count(tgi.reply) == 4  # three of Alice's, one of Bob's
        assert tgi.count("/v1/chat/completions") == 4
        drops = [r for r in caplog.records if "dropped a message from" in r.getMessage()]
        assert len(drops) == 20 and "20 dropped since start" in drops[-1].getMessage()
    finally:
        await stop_bot(app, task)


async def test_a_message_whose_reply_would_wait_too_long_to_be_written_is_settled_and_logged(store, cache, fake, tgi, caplog) -> None:
    """The channel may send one message a minute here: a second message would wait past
    PERSONAE_DELIVERY_MAX_WAIT_S for its reply's first text, so it is dropped with one log line and
    settled unanswered (no restart answers it later), not queued."""
    caplog.set_level(logging.WARNING, logger="bots.discord.client")
    app = build_app(store, cache, discord_settings(
        fake, tgi, discord_channel_writes=1, discord_channel_window_s=60.0, delivery_max_wait_s=5.0,
    ))
    await add_character(store)
    bot, task = await start_bot(app, fake, tgi)
    try:
        await bot.bind(ROLEPLAY)
        _, first = await bot.say(ROLEPLAY, ALICE, "Who goes there?")
        assert first is not None and first.reply_message_id is not None
        payload, second = await bot.say(ROLEPLAY, BOB, "And who are you?")

        assert second is None  # never handed to the engine
        assert len(fake.bot_messages(ROLEPLAY)) == 1
        assert app.engine.turns_dropped == 1
        (line,) = [r.getMessage() for r in caplog.records if "dropped message" in r.getMessage()]
        assert payload["id"] in line and "PERSONAE_DELIVERY_MAX_WAIT_S" in line
        assert not [turn async for turn in app.engine.recover("discord", at_start=True)]  # settled: nothing to answer later
    finally:
        await stop_bot(app, task)
