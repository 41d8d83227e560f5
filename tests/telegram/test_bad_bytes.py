"""NUL, lone surrogates and control characters from Telegram stop at the adapter: the model and
PostgreSQL get clean text, and the reply is stored."""

from __future__ import annotations

import json

import pytest

from core.events import ConversationKey

GROUP = -100333


@pytest.mark.parametrize("backends", ["postgresql-redis"], indirect=True)  # PostgreSQL refuses NUL in text
async def test_bad_bytes_in_a_telegram_message_are_cleaned_and_the_turn_is_stored(bot) -> None:
    tg, tgi = bot.tg, bot.tgi
    hamlet = await bot.add_character("Hamlet")
    await bot.bind(GROUP, "Hamlet", "all")
    group, ann = tg.group(GROUP), tg.user(71, "An\x00n\x1b")
    tg.say(group, ann, "Hail\x00, prince\ud800 of \x1b[1mDenmark\x7f\r\nnext line")
    await bot.idle()

    assert tg.texts(GROUP) == [tgi.reply]
    body = tgi.bodies()[-1]
    assert body["messages"][-1]["content"] == "Hail, prince\ufffd of [1mDenmark\nnext line"
    assert "\\u0000" not in json.dumps(body) and "\\u001b" not in json.dumps(body)
    assert "Ann" in body["messages"][0]["content"]  # the display name, cleaned, in the system prompt
    conversation = ConversationKey(hamlet.id, "telegram", str(GROUP), "71")
    stored = [(m.role, m.content) for m in await bot.app.store.messages.recent(conversation, 10)]
    assert stored == [("user", "Hail, prince\ufffd of [1mDenmark\nnext line"), ("assistant", tgi.reply)]
