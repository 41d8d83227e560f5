"""SIGTERM and SIGINT drain ``personae run``: the replies in flight finish, are stored, and the process exits 0."""

from __future__ import annotations

import signal

import pytest
import sqlalchemy as sa

from core.cards import new_card
from core.events import Trigger
from core.state import Binding
from storage import migrate
from storage.database import SqlStore
from storage.tables import messages
from bots.fakes.discord import ALICE, ROLEPLAY, GUILD_ID, TOKEN as DISCORD_TOKEN, FakeDiscord
from bots.fakes.telegram import FakeTelegram
from tests.tgi_server import TGIServer
from tests.throwaway import PersonaeProcess

REPLY = "(bows slowly) Good morrow, friend; the night is long and the castle is cold."
GROUP = -100777


async def prepared_database(url: str) -> None:
    """A migrated database with a character bound to the Discord channel and the Telegram group."""
    await migrate.upgrade(url)
    store = await SqlStore.open(url)
    try:
        hamlet = await store.characters.add(new_card(name="Hamlet", world="Elsinore", traits=["brooding"], mbti="INFP", style=["poetic"]))
        await store.bindings.put(Binding("discord", str(GUILD_ID), str(ROLEPLAY), hamlet.id, Trigger.ALL))
        await store.bindings.put(Binding("telegram", str(GROUP), str(GROUP), hamlet.id, Trigger.ALL))
    finally:
        await store.close()


async def stored(url: str) -> list[tuple[str, str, str, str | None]]:
    store = await SqlStore.open(url)
    try:
        async with store.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(messages.c.platform, messages.c.role, messages.c.content, messages.c.status).order_by(messages.c.id)
            )
            return [tuple(r) for r in rows]
    finally:
        await store.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_stop_signal_lets_the_replies_in_flight_finish_stores_them_and_exits_0(tmp_path, sig) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'personae.db'}"
    await prepared_database(url)
    async with FakeDiscord() as discord_api, FakeTelegram() as tg, TGIServer(reply=REPLY, chunks=12, token_delay=0.4) as tgi:
        env = {
            "PERSONAE_DATABASE_URL": url,
            "PERSONAE_LLM_URL": tgi.base_url,
            "PERSONAE_APPRAISER": "none",
            "PERSONAE_SHUTDOWN_GRACE_S": "30",
            "PERSONAE_DISCORD_TOKEN": DISCORD_TOKEN,
            "PERSONAE_DISCORD_API_BASE": discord_api.api_base,
            "PERSONAE_DISCORD_GATEWAY_URL": discord_api.gateway_url,
            "PERSONAE_DISCORD_SYNC": "off",
            # The bot's own messages: recovery through a webhook is tests/discord/test_recovery.py's.
            "PERSONAE_DISCORD_WEBHOOKS": "off",
            "PERSONAE_TELEGRAM_TOKEN": tg.token,
            "PERSONAE_TELEGRAM_API_BASE": tg.base_url,
            "PERSONAE_TELEGRAM_FILE_BASE": tg.file_base_url,
        }
        for unset in ("PERSONAE_REDIS_URL", "PERSONAE_TELEGRAM_WEBHOOK_URL"):
            env[unset] = ""
        service = PersonaeProcess(env)
        await service.start()
        try:
            await discord_api.wait_for(lambda: discord_api._sockets, timeout=60, what="the Discord client to connect")
            await tg.wait_for(lambda: tg.holding, timeout=60, what="the Telegram poller to wait for updates")
            ann = tg.user(61, "Ann")
            tg.push({"message": tg.message(tg.group(GROUP), ann, "Who goes there?")})
            await discord_api.say(ROLEPLAY, ALICE, "Who goes there?")
            # Both replies have started to show: the process is asked to stop mid-sentence.
            await tg.wait_for(lambda: tg.texts(GROUP), timeout=30, what="the Telegram reply to start")
            await discord_api.wait_for(lambda: discord_api.bot_messages(ROLEPLAY), timeout=30, what="the Discord reply to start")
            service.signal(sig)
            assert await service.wait(90) == 0, service.log[-3000:]
        finally:
            await service.close()
        assert tg.texts(GROUP) == [REPLY]
        assert [m["content"] for m in discord_api.bot_messages(ROLEPLAY)] == [REPLY]
    rows = await stored(url)
    for platform in ("discord", "telegram"):
        assert [(r[1], r[2], r[3]) for r in rows if r[0] == platform] == [
            ("user", "Who goes there?", "answered"), ("assistant", REPLY, None)
        ]


async def test_a_stop_while_telegram_does_not_answer_ends_in_bounded_time_and_exits_0(tmp_path) -> None:
    """The Bot API hangs (takes requests, answers none) while a reply is being shown, then SIGTERM:
    python-telegram-bot's stop waits for Telegram, the close time runs out, and the Application must
    still be stopped and shut down: one line says what was left, and the process exits 0."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'personae.db'}"
    await prepared_database(url)
    async with FakeTelegram() as tg, TGIServer(reply=REPLY, chunks=12, token_delay=0.4) as tgi:
        env = {
            "PERSONAE_DATABASE_URL": url,
            "PERSONAE_LLM_URL": tgi.base_url,
            "PERSONAE_APPRAISER": "none",
            "PERSONAE_SHUTDOWN_GRACE_S": "2",
            "PERSONAE_TELEGRAM_TOKEN": tg.token,
            "PERSONAE_TELEGRAM_API_BASE": tg.base_url,
            "PERSONAE_TELEGRAM_FILE_BASE": tg.file_base_url,
            "PERSONAE_DISCORD_TOKEN": "",
            "PERSONAE_REDIS_URL": "",
            "PERSONAE_TELEGRAM_WEBHOOK_URL": "",
        }
        service = PersonaeProcess(env)
        await service.start()
        try:
            await tg.wait_for(lambda: tg.holding, timeout=60, what="the Telegram poller to wait for updates")
            ann = tg.user(61, "Ann")
            tg.push({"message": tg.message(tg.group(GROUP), ann, "Who goes there?")})
            await tg.wait_for(lambda: tg.texts(GROUP), timeout=30, what="the Telegram reply to start")
            tg.hang()
            await tg.wait_for(lambda: tg.unanswered, timeout=30, what="the bot to call the hanging Bot API")
            service.signal(signal.SIGTERM)
            # Generous: the shutdown grace, the close time and the request timeouts are far below it.
            status = await service.wait(120)
            log = service.log
        finally:
            await service.close()
        assert status == 0, log[-3000:]
        assert "unexpected" not in log, log[-3000:]
        assert "Telegram did not answer while stopping" in log, log[-3000:]
        # That one line is all: no update handler left to fail once the Bot API's client is closed.
        assert " ERROR " not in log, log[-3000:]
        assert tg.unanswered, "the Bot API was never called while it hung"
    rows = await stored(url)
    # The message is kept: answered with the cut reply, or pending and answered after the restart.
    assert [(r[1], r[2]) for r in rows][:1] == [("user", "Who goes there?")], rows
