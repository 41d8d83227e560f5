"""Starting and stopping: the token, the intents, the gateway, a clean close."""

from __future__ import annotations

import asyncio

import pytest

from bots.discord import DiscordTokenRejected, PersonaeClient, run_discord
from tests.discord.conftest import add_character, bind, build_app, discord_settings, start_bot, stop_bot
from bots.fakes.discord import ALICE, BOT_ID, TAVERN

WRONG_TOKEN = "not-the-right-token.AAAAAA.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

GUILDS, GUILD_MESSAGES, DIRECT_MESSAGES, MESSAGE_CONTENT = 1 << 0, 1 << 9, 1 << 12, 1 << 15


async def test_a_rejected_token_gives_one_clear_line_without_the_token(store, cache, fake, tgi, discord_logs):
    app = build_app(store, cache, discord_settings(fake, tgi, discord_token=WRONG_TOKEN))
    try:
        with pytest.raises(DiscordTokenRejected) as raised:
            await asyncio.wait_for(run_discord(app, client=PersonaeClient(app, guild_ready_timeout=0.1)), 10)
    finally:
        await app.model.close()

    message = str(raised.value)
    assert message.startswith("PERSONAE_DISCORD_TOKEN is set but Discord rejected it (401)")
    assert "\n" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert fake.requests("GET", "/users/@me")
    assert WRONG_TOKEN not in message and WRONG_TOKEN not in discord_logs.text


async def test_the_client_asks_for_exactly_the_intents_it_needs_and_never_logs_the_token(bot, discord_logs):
    (identify,) = bot.fake.identifies
    wanted = GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT
    assert identify["intents"] == wanted
    await bot.bind(TAVERN)
    await bot.say(TAVERN, ALICE, "Hello")
    assert bot.fake.token not in discord_logs.text


async def test_without_the_message_content_intent_it_reconnects_and_still_answers_mentions(store, cache, fake, tgi, discord_logs):
    fake.refuse_message_content = True  # the intent is not enabled in the developer portal
    app = build_app(store, cache, discord_settings(fake, tgi))
    await add_character(store)
    await bind(app, TAVERN, trigger="mention")
    task = asyncio.create_task(run_discord(app, client=PersonaeClient(app, guild_ready_timeout=0.1)))
    try:
        await fake.wait_for(lambda: len(fake.identifies) == 2 and fake._sockets, what="a second IDENTIFY")
        first, second = fake.identifies
        assert first["intents"] & MESSAGE_CONTENT and not second["intents"] & MESSAGE_CONTENT
        assert "enable it for this bot in the developer portal" in discord_logs.text

        await fake.say(TAVERN, ALICE, f"<@{BOT_ID}> are you there?", mentions=[BOT_ID])
        await fake.wait_for(lambda: fake.bot_messages(TAVERN), what="a reply to the mention")
    finally:
        await stop_bot(app, task)


async def test_cancelling_run_discord_closes_the_connection(store, cache, fake, tgi):
    app = build_app(store, cache, discord_settings(fake, tgi))
    running, task = await start_bot(app, fake, tgi)
    assert fake._sockets

    await stop_bot(app, task)

    assert running.client.is_closed()
    await fake.wait_for(lambda: not fake._sockets, what="the gateway connection to close")
