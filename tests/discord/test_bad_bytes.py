"""NUL, lone surrogates and control characters from Discord stop at the adapter: the model and
PostgreSQL get clean text, and the reply shown is the reply stored."""

from __future__ import annotations

import json

import pytest

from core.engine import ReplyStatus
from bots.fakes.discord import ALICE, ROLEPLAY


# PostgreSQL here: it is the database that refuses NUL in text.
@pytest.mark.parametrize("backends", ["postgresql-redis"], indirect=True)
async def test_bad_bytes_in_a_discord_message_are_cleaned_and_the_turn_is_stored(bot) -> None:
    await bot.bind(ROLEPLAY)
    bot.tgi.script(reply="(bows)\x00 Good \ud800morrow.")
    _, reply = await bot.say(ROLEPLAY, ALICE, "Hail\x00, prince\ud800 of \x1b[1mDenmark\x07")

    assert reply is not None and reply.status is ReplyStatus.ANSWERED
    body = bot.tgi.bodies()[-1]
    assert body["messages"][-1]["content"] == "Hail, prince\ufffd of [1mDenmark"
    assert "\\u0000" not in json.dumps(body)
    (shown,) = bot.fake.bot_messages(ROLEPLAY)
    assert shown["content"] == "(bows) Good \ufffdmorrow."
    stored = [(m.role, m.content) for m in await bot.app.store.messages.recent(reply.conversation, 10)]
    assert stored == [("user", "Hail, prince\ufffd of [1mDenmark"), ("assistant", shown["content"])]
