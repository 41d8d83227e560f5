""""typing…" is shown while a turn waits for the model (for a slot of the model budget, or its first
token), and not for messages no character answers."""

from __future__ import annotations

import asyncio

from tests.telegram.conftest import Harness
from tests.telegram.test_private_chat import pick


async def test_typing_is_shown_until_the_first_text(bot: Harness) -> None:
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    chat = await pick(bot)
    tgi.gate = asyncio.Event()  # the model holds the reply back, as a full budget would
    tg.say(chat, {"id": chat["id"], "is_bot": False, "first_name": "Ann"}, "Good evening, my lord.")
    await tg.wait_for(lambda: tg.calls_of("sendChatAction", chat["id"]), what="typing")
    (action,) = tg.calls_of("sendChatAction", chat["id"])
    assert action.params["action"] == "typing"
    tgi.gate.set()
    await bot.idle()
    assert tg.texts(chat["id"])[-1] == tgi.reply


async def test_no_typing_for_a_group_message_nobody_answers(bot: Harness) -> None:
    tg = bot.tg
    await bot.add_character("Hamlet")
    group = tg.group(-100200)
    await bot.bind(group["id"], "Hamlet", trigger="mention")
    tg.say(group, tg.user(12, "Bea"), "just chatting, no mention")
    await bot.idle()
    assert not tg.calls_of("sendChatAction")
