"""``personae run`` killed (SIGKILL) mid-reply and started again: every message answered exactly once."""

from __future__ import annotations

import asyncio
import signal

from redis.asyncio import Redis

from bots.fakes.discord import ALICE, ROLEPLAY, TOKEN as DISCORD_TOKEN, FakeDiscord
from bots.fakes.telegram import FakeTelegram
from tests.test_service_drain import GROUP, REPLY, prepared_database, stored
from tests.tgi_server import TGIServer
from tests.throwaway import PersonaeProcess, throwaway_redis


async def test_a_reply_cut_by_sigkill_is_completed_in_place_after_the_restart(tmp_path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'personae.db'}"
    await prepared_database(url)
    async with (
        throwaway_redis() as redis,
        FakeDiscord() as discord_api,
        FakeTelegram() as tg,
        TGIServer(reply=REPLY, chunks=12, token_delay=0.4) as tgi,
    ):
        env = {
            "PERSONAE_DATABASE_URL": url,
            "PERSONAE_REDIS_URL": redis.url,  # where the half-shown reply's id survives the crash
            "PERSONAE_LLM_URL": tgi.base_url,
            "PERSONAE_APPRAISER": "none",
            "PERSONAE_DISCORD_TOKEN": DISCORD_TOKEN,
            "PERSONAE_DISCORD_API_BASE": discord_api.api_base,
            "PERSONAE_DISCORD_GATEWAY_URL": discord_api.gateway_url,
            "PERSONAE_DISCORD_SYNC": "off",
            # The bot's own messages: recovery through a webhook is tests/discord/test_recovery.py's.
            "PERSONAE_DISCORD_WEBHOOKS": "off",
            "PERSONAE_TELEGRAM_TOKEN": tg.token,
            "PERSONAE_TELEGRAM_API_BASE": tg.base_url,
            "PERSONAE_TELEGRAM_FILE_BASE": tg.file_base_url,
            "PERSONAE_TELEGRAM_WEBHOOK_URL": "",
        }
        first = PersonaeProcess(env)
        await first.start()
        try:
            await discord_api.wait_for(lambda: discord_api._sockets, timeout=60, what="the Discord client to connect")
            await tg.wait_for(lambda: tg.holding, timeout=60, what="the Telegram poller to wait for updates")
            ann = tg.user(81, "Ann")
            message = tg.message(tg.group(GROUP), ann, "Who goes there?")
            tg.push({"message": message})
            said = await discord_api.say(ROLEPLAY, ALICE, "Who goes there?")
            await tg.wait_for(lambda: tg.texts(GROUP), timeout=30, what="the Telegram reply to start")
            await discord_api.wait_for(lambda: discord_api.bot_messages(ROLEPLAY), timeout=30, what="the Discord reply to start")
            # Killed before it noted where a reply is shown, the bot could not know: the kill comes after.
            await half_shown_noted(redis.url, 2)
            first.signal(signal.SIGKILL)
            await first.wait(30)
        finally:
            await first.close()
        tgi.script(reply=REPLY)  # the model answers at once now

        second = PersonaeProcess(env)
        await second.start()
        try:
            await tg.wait_for(lambda: tg.texts(GROUP) == [REPLY], timeout=60, what="the Telegram reply to be completed")
            await discord_api.wait_for(
                lambda: [m["content"] for m in discord_api.bot_messages(ROLEPLAY)] == [REPLY], timeout=60,
                what="the Discord reply to be completed",
            )
            # The platforms deliver both messages again: neither is answered a second time.
            await discord_api.wait_for(lambda: discord_api._sockets, timeout=30, what="the Discord client")
            tg.push({"message": message})
            await discord_api.dispatch("MESSAGE_CREATE", said)
            await tg.wait_for(lambda: tg.pending == 0 and tg.holding, timeout=30, what="the redelivery to be fetched")
            second.signal(signal.SIGTERM)
            assert await second.wait(60) == 0, second.log[-3000:]
        finally:
            await second.close()
        assert tg.texts(GROUP) == [REPLY]
        assert [m["content"] for m in discord_api.bot_messages(ROLEPLAY)] == [REPLY]
    rows = await stored(url)
    for platform in ("discord", "telegram"):
        assert [(r[1], r[2], r[3]) for r in rows if r[0] == platform] == [
            ("user", "Who goes there?", "answered"), ("assistant", REPLY, None)
        ]


async def half_shown_noted(url: str, count: int, timeout: float = 30.0) -> None:
    """Wait until ``count`` replies have their half-shown platform message noted (``core.hot.shown_key``)."""
    client = Redis.from_url(url)
    try:
        async with asyncio.timeout(timeout):
            while len([key async for key in client.scan_iter(match="personae:w:*")]) < count:
                await asyncio.sleep(0.05)
    finally:
        await client.aclose()
