"""How updates arrive: redeliveries, the webhook and its secret, a rejected token, the command menu."""

from __future__ import annotations

import logging
import socket

import aiohttp
import pytest
from telegram.ext import CommandHandler

from bots.compose import model_client, wire
from bots.telegram import TelegramStartError, run_telegram
from bots.telegram.arguments import COMMANDS, HELP
from core.errors import PersonaeError
from tests.telegram.conftest import Harness, make_settings, running_bot
from bots.fakes.telegram import FakeTelegram


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_the_same_update_delivered_twice_is_answered_once(bot: Harness) -> None:
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    ann = tg.user(41, "Ann")
    chat = tg.private(ann)
    await bot.app.commands.use(*_private(ann), "Hamlet")
    update = tg.say(chat, ann, "Hello there.")
    command = tg.say(chat, ann, "/help")  # commands are not deduplicated by the engine
    await bot.idle()
    tg.redeliver(update)  # the same update_id again
    tg.redeliver(command)
    tg.push({"message": update["message"]})  # the same message under a new update_id
    await bot.idle()
    assert tgi.count("/v1/chat/completions") == 1
    assert tg.texts(chat["id"]) == [tgi.reply, HELP]


async def test_the_webhook_checks_its_secret_and_drops_redeliveries(store, cache, tg: FakeTelegram, tgi) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    async with running_bot(
        store, cache, tg, tgi,
        telegram_webhook_url=url, telegram_webhook_listen="127.0.0.1", telegram_webhook_port=port,
        telegram_webhook_secret="right-secret_1",
    ) as bot:
        assert tg.webhook is not None
        assert tg.webhook["url"] == url and tg.webhook["secret_token"] == "right-secret_1"
        assert not tg.calls_of("getUpdates") and not tg.calls_of("deleteWebhook")
        await bot.add_character("Hamlet")
        ann = tg.user(42, "Ann")
        chat = tg.private(ann)
        await bot.app.commands.use(*_private(ann), "Hamlet")
        update = tg.update({"message": tg.message(chat, ann, "Hello through the hook.")})
        async with aiohttp.ClientSession() as http:
            for headers in ({"X-Telegram-Bot-Api-Secret-Token": "wrong"}, {}):
                async with http.post(url, json=update, headers=headers) as response:
                    assert response.status == 403
            await bot.idle()
            assert tgi.count("/v1/chat/completions") == 0 and not tg.calls_of("sendMessage")

            right = {"X-Telegram-Bot-Api-Secret-Token": "right-secret_1"}
            for _ in range(2):  # Telegram retries a delivery it thinks failed
                async with http.post(url, json=update, headers=right) as response:
                    assert response.status == 200
            await bot.idle()
        assert tgi.count("/v1/chat/completions") == 1
        assert tg.texts(chat["id"]) == [tgi.reply]


async def test_a_rejected_token_gives_one_clear_line_and_never_the_token(store, cache, tg, tgi, caplog) -> None:
    token = "777000:RejectedTokenThatMustNotLeak"
    settings = make_settings(tg, tgi.base_url, telegram_token=token)
    model = model_client(settings, tgi.base_url)
    app = wire(settings, store, cache, model)
    try:
        with caplog.at_level(logging.DEBUG), pytest.raises(TelegramStartError) as caught:
            await run_telegram(app)
    finally:
        await model.close()
    message = str(caught.value)
    assert message.startswith("PERSONAE_TELEGRAM_TOKEN is set but Telegram rejected it")
    assert "\n" not in message and token not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__, "no chained traceback"
    assert isinstance(caught.value, PersonaeError)
    assert token not in caplog.text and token.split(":")[1] not in caplog.text
    assert tg.rejected == ["getMe"]


async def test_the_command_menu_is_registered_at_start(bot: Harness) -> None:
    (call,) = bot.tg.calls_of("setMyCommands")
    assert [c["command"] for c in call.params["commands"]] == [name for name, _ in COMMANDS]
    handled = {c for h in bot.application.handlers[0] if isinstance(h, CommandHandler) for c in h.commands}
    assert handled == {name for name, _ in COMMANDS}, "every command in the menu has a handler, and only those"


def _private(user: dict):
    from core.commands import Actor, Place

    uid = str(user["id"])
    return Actor("telegram", uid, user["first_name"]), Place("telegram", uid, uid, private=True)


async def test_one_persons_messages_are_answered_in_order(bot: Harness) -> None:
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    ann = tg.user(43, "Ann")
    chat = tg.private(ann)
    await bot.app.commands.use(*_private(ann), "Hamlet")
    tgi.script(reply=lambda body: f"answer to {body['messages'][-1]['content']}", first_token_delay=0.02)
    sent = [f"m{i}" for i in range(8)]
    tg.say(chat, ann, "/mood")
    for text in sent:
        tg.say(chat, ann, text)
    await bot.idle()
    assert [b["messages"][-1]["content"] for b in tgi.bodies()] == sent
    assert tg.texts(chat["id"])[1:] == [f"answer to {text}" for text in sent]
    assert tg.photos(chat["id"])[0][1].startswith("Hamlet toward Ann")  # /mood: a picture with its caption
