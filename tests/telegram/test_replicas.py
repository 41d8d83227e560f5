"""Telegram replicas on one PostgreSQL database and one Redis, in one test process.

Long polling: Telegram allows one ``getUpdates`` caller per bot (a second one ends the first with 409
Conflict, which the fake copies), so the replicas elect the poller with a Redis lease and the other
stands by; when the poller stops, the standby takes over. Webhook: any replica takes any update and
one person's turns keep their order. The processes version (SIGKILL, the dead replica's turns) is in
tests/replicas.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from typing import Any, AsyncIterator, Mapping

import pytest

from bots.telegram.intake import ElectedPoller
from core.events import Trigger
from core.state import Binding
from storage.cache_redis import RedisCache
from tests.conftest import TEST_REDIS_URL
from tests.telegram.conftest import Harness, running_bot
from bots.fakes.telegram import FakeTelegram
from tests.tgi_server import TGIServer

_MARK = re.compile(r"\bm\d+x\b")
GROUPS = [-1001, -1002]


def echo_marker(body: Mapping[str, Any]) -> str:
    """The double's answer names the marker of the newest user message (``m7x``), so replies can be matched."""
    messages = body.get("messages") or []
    last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "") or ""
    found = _MARK.findall(str(last))
    return f"{found[-1] if found else 'm?x'} (bows) So be it. Farewell."


# Replicas share a server database and Redis: PostgreSQL + Redis only.
pytestmark = pytest.mark.parametrize("backends", ["postgresql-redis"], indirect=True)


@pytest.fixture
async def tgi() -> AsyncIterator[TGIServer]:
    async with TGIServer(reply=echo_marker, token_delay=0.01) as server:
        yield server


@pytest.fixture
async def shared(redis_prefix: str) -> AsyncIterator[list[RedisCache]]:
    """Two RedisCache clients on one key prefix of the test's own: two replicas' view of one Redis."""
    prefix = f"{redis_prefix}{secrets.token_hex(4)}:"
    caches = [RedisCache(TEST_REDIS_URL, prefix) for _ in range(2)]
    yield caches
    for cache in caches:
        await cache.close()


class Chats:
    """People writing in two groups; each message carries a marker that the reply repeats."""

    def __init__(self, tg: FakeTelegram) -> None:
        self.tg = tg
        self.sent: list[tuple[int, str]] = []  # (chat, marker) in the order sent

    def say(self, chat: int, person: int) -> dict[str, Any]:
        marker = f"m{len(self.sent) + 1}x"
        self.sent.append((chat, marker))
        message = self.tg.message(self.tg.chats[chat], self.tg.user(person, f"P{person}"), f"Hello, prince. {marker}")
        return {"message": message}

    def replies(self, chat: int) -> list[str]:
        """The markers the bot's messages in ``chat`` answer, in the order they were sent."""
        return [m for text in self.tg.texts(chat) for m in _MARK.findall(text)]

    def answered(self) -> bool:
        return all(marker in self.replies(chat) for chat, marker in self.sent)

    def check_once_in_order(self) -> None:
        for chat in GROUPS:
            expected = [marker for c, marker in self.sent if c == chat]
            assert self.replies(chat) == expected, f"chat {chat}: replies {self.replies(chat)}, sent {expected}"


async def setup_chats(bot: Harness) -> Chats:
    character = await bot.add_character()
    for chat in GROUPS:
        bot.tg.group(chat, f"Group {chat}")
        await bot.app.store.bindings.put(Binding("telegram", str(chat), str(chat), character.id, Trigger.ALL))
    return Chats(bot.tg)


def polling(bot: Harness) -> bool:
    intake = bot.application.bot_data.get("personae.intake")
    assert isinstance(intake, ElectedPoller), intake
    return intake.polling


async def test_two_polling_replicas_elect_one_poller_and_the_standby_takes_over(store, shared, tg, tgi) -> None:
    a_stack, b_stack = contextlib.AsyncExitStack(), contextlib.AsyncExitStack()
    try:
        a = await a_stack.enter_async_context(running_bot(store, shared[0], tg, tgi, replica_id="a", replica_lease_s=1))
        await tg.wait_for(lambda: polling(a), 10, "replica a to be elected")
        b = await b_stack.enter_async_context(running_bot(store, shared[1], tg, tgi, replica_id="b", replica_lease_s=1))
        chats = await setup_chats(a)
        # b stands by through several of a's renewals (every third of a second): a's lease holds.
        polls = tg.polls
        for round_ in range(6):
            tg.push(chats.say(GROUPS[round_ % 2], 100 + round_ % 2))
        await tg.wait_for(chats.answered, 20, "every message to be answered")
        await tg.wait_for(lambda: tg.polls > polls + 3, 20, "a few more polls")
        assert polling(a) and not polling(b)
        assert tg.conflicts == 0

        # a stops (and gives its lease up): b takes over and answers what comes next.
        await a_stack.aclose()
        await tg.wait_for(lambda: polling(b), 10, "replica b to take over polling")
        for round_ in range(4):
            tg.push(chats.say(GROUPS[round_ % 2], 100 + round_ % 2))
        await tg.wait_for(chats.answered, 20, "every message to be answered after the takeover")
        await b.idle()
        chats.check_once_in_order()
        assert tg.conflicts == 0
    finally:
        await a_stack.aclose()
        await b_stack.aclose()
