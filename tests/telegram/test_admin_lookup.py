"""Telegram's admin lookup (bots/telegram/admins.py): a failed ``getChatMember`` counts as "not an
admin" and is not remembered, and an answer is remembered for the TTL and no longer. The gaps the
mutation run found (docs/testing.md): answering "yes" on a failure, or never expiring, went unnoticed."""

from __future__ import annotations

import types

import pytest
from telegram.constants import ChatMemberStatus

from bots.telegram import admins
from core.commands import ADMIN_ONLY
from tests.telegram.conftest import Harness

GROUP = -100456


async def test_a_failed_admin_lookup_refuses_and_the_next_try_asks_again(bot: Harness) -> None:
    tg = bot.tg
    await bot.add_character("Hamlet")
    group, ada = tg.group(GROUP), tg.user(33, "Ada")
    tg.members[(GROUP, 33)] = "administrator"
    tg.fail("getChatMember", 400, "Bad Request: chat not found")
    tg.say(group, ada, "/bind@persona_bot Hamlet")
    await bot.idle()
    assert tg.texts(GROUP) == [ADMIN_ONLY]
    assert await bot.app.store.bindings.get("telegram", str(GROUP)) is None

    tg.say(group, ada, "/bind@persona_bot Hamlet")
    await bot.idle()
    assert tg.texts(GROUP)[-1] == "Hamlet now plays here and answers mentions and replies."
    assert len(tg.calls_of("getChatMember")) == 2, "the failure was not cached"


class Members:
    """Telegram's getChatMember answers, by (chat, user), and how many times it was asked."""

    def __init__(self) -> None:
        self.status: dict[tuple[int, int], str] = {}
        self.asked = 0

    async def get_chat_member(self, chat_id: int, user_id: int) -> types.SimpleNamespace:
        self.asked += 1
        return types.SimpleNamespace(status=self.status.get((chat_id, user_id), ChatMemberStatus.MEMBER))


async def test_an_admin_answer_is_remembered_for_the_ttl_and_asked_again_once_it_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(admins, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    bot, chat_admins = Members(), admins.ChatAdmins(ttl=60.0)
    bot.status[(GROUP, 7)] = ChatMemberStatus.ADMINISTRATOR
    assert await chat_admins.is_admin(bot, GROUP, 7)
    bot.status[(GROUP, 7)] = ChatMemberStatus.MEMBER  # demoted
    now[0] = 1059.9
    assert await chat_admins.is_admin(bot, GROUP, 7) and bot.asked == 1
    now[0] = 1060.0  # the remembered answer has run out
    assert not await chat_admins.is_admin(bot, GROUP, 7) and bot.asked == 2
