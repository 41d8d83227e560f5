"""One bad event does not stop the adapter; a connection gone for good stops the process (non-zero)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bots.discord import run_discord
from bots.discord.client import PersonaeClient
from bots.service import run_adapters
from core.engine import ReplyStatus
from core.errors import PersonaeError
from tests.discord.conftest import add_character, build_app, discord_settings
from bots.fakes.discord import ALICE, ROLEPLAY


async def test_a_malformed_interaction_is_logged_and_the_adapter_goes_on(bot, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="bots.discord.client")
    await bot.bind(ROLEPLAY)
    # An application command without its token (and most else): discord.py cannot build an Interaction.
    await bot.fake.dispatch(
        "INTERACTION_CREATE", {"id": "42", "type": 2, "application_id": "5", "channel_id": str(ROLEPLAY), "user": {"id": str(ALICE)}}
    )
    _, reply = await bot.say(ROLEPLAY, ALICE, "Are you still there?")
    assert reply is not None and reply.status is ReplyStatus.ANSWERED
    assert bot.client.is_ready() and not bot.client.is_closed()
    (record,) = [r for r in caplog.records if "could not be read" in r.getMessage()]
    assert "INTERACTION_CREATE" in record.getMessage()
    assert f"channel {ROLEPLAY}" in record.getMessage() and f"user {ALICE}" in record.getMessage()


async def test_a_gateway_closed_for_good_stops_the_process_with_one_line(store, cache, fake, tgi) -> None:
    app = build_app(store, cache, discord_settings(fake, tgi))
    await add_character(store)
    client = PersonaeClient(app, guild_ready_timeout=0.1)
    service = asyncio.create_task(run_adapters({"Discord": run_discord(app, client=client)}))
    try:
        await fake.wait_for(lambda: client.is_ready(), timeout=10, what="the client to be ready")
        await fake.close_gateway(4013, "Invalid intent(s).")
        with pytest.raises(PersonaeError) as caught:
            await asyncio.wait_for(service, 20)
    finally:
        service.cancel()
        await app.engine.drain()
        await app.model.close()
    message = str(caught.value)
    assert "closed the connection for good (code 4013" in message
    assert "personae stops so that it can be restarted" in message
    assert "\n" not in message


@pytest.mark.parametrize("frame", ["not json", "[1, 2]"], ids=["not-json", "a-list"])
async def test_an_unreadable_gateway_frame_is_one_line_and_the_adapter_connects_again(bot, caplog, frame: str) -> None:
    caplog.set_level(logging.WARNING, logger="bots.discord.client")
    await bot.bind(ROLEPLAY)
    identified = len(bot.fake.identifies)
    for ws in list(bot.fake._sockets):
        await ws.send_str(frame)  # discord.py's connection loop cannot read this: it ends
    await bot.fake.wait_for(lambda: len(bot.fake.identifies) > identified, timeout=20, what="a fresh IDENTIFY")
    await bot.fake.wait_for(lambda: bot.client.is_ready() and bot.fake._sockets, timeout=20, what="the gateway back")
    _, reply = await bot.say(ROLEPLAY, ALICE, "Are you still there?")
    assert reply is not None and reply.status is ReplyStatus.ANSWERED
    (record,) = [r for r in caplog.records if "could not be read" in r.getMessage()]
    assert "connecting again" in record.getMessage() and record.exc_info is None
