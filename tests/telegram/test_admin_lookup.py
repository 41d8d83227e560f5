"""A failed ``getChatMember`` counts as "not an admin" and is not remembered (bots/telegram/admins.py):
the gap the mutation run found (docs/testing.md), where answering "yes" on a failure went unnoticed."""

from __future__ import annotations

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
