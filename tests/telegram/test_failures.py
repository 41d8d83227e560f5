"""A failing handler is logged with its chat and the adapter goes on; Telegram gone for good ends the process."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bots.service import run_adapters
from bots.telegram import build_application
from bots.telegram.application import serving, watch_polling
from core.errors import PersonaeError
from tests.telegram.conftest import FAST, running_bot

GROUP = -100444


async def test_a_handler_that_raises_is_logged_with_its_chat_and_the_adapter_goes_on(store, cache, tg, tgi, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="bots.telegram.application")
    async with running_bot(store, cache, tg, tgi) as bot:
        await bot.add_character("Hamlet")
        await bot.bind(GROUP, "Hamlet", "all")
        handle = bot.app.engine.handle

        def breaking(event):
            if event.text == "break":
                raise RuntimeError("a bug in a handler")
            return handle(event)

        bot.app.engine.handle = breaking  # type: ignore[method-assign]
        group, ann = tg.group(GROUP), tg.user(61, "Ann")
        tg.say(group, ann, "break")
        tg.say(group, ann, "Are you there?")
        await bot.idle()
        assert tg.texts(GROUP) == [tgi.reply]
        (record,) = [r for r in caplog.records if "handling a Telegram update failed" in r.getMessage()]
        assert f"chat {GROUP}, user 61" in record.getMessage() and "a bug in a handler" in record.getMessage()


async def test_polling_that_cannot_reach_telegram_for_too_long_stops_the_process(store, cache, tg, tgi) -> None:
    async with running_bot(store, cache, tg, tgi, telegram_give_up_s=0.5) as bot:
        watch = asyncio.create_task(run_adapters({"Telegram": watch_polling(bot.application, bot.app.settings)}))
        await tg.stop()  # the Bot API is gone: every poll is refused
        with pytest.raises(PersonaeError) as caught:
            await asyncio.wait_for(watch, 20)
    message = str(caught.value)
    assert "Telegram could not be reached" in message and "PERSONAE_TELEGRAM_GIVE_UP_S=0.5" in message
    assert "personae stops so that it can be restarted" in message and "\n" not in message


async def test_a_reachable_telegram_is_not_given_up_on(store, cache, tg, tgi) -> None:
    async with running_bot(store, cache, tg, tgi, telegram_give_up_s=0.5) as bot:
        watch = asyncio.create_task(watch_polling(bot.application, bot.app.settings))
        # Several give-up periods of idle long polling (each poll ends within FAST.poll_timeout).
        for _ in range(3):
            calls = len(tg.calls_of("getUpdates"))
            await tg.wait_for(lambda: len(tg.calls_of("getUpdates")) > calls + 1, 10, "two more polls")
        assert not watch.done()
        watch.cancel()
