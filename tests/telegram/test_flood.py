"""A flood from one person in a group: limited by when the messages were sent, and the line is bounded."""

from __future__ import annotations

import asyncio
import logging

from core.engine import NOTICE_RATE
from tests.telegram.conftest import running_bot

GROUP = -100555


async def test_a_flood_in_a_group_is_rate_limited_while_it_waits_behind_a_slow_reply(store, cache, tg, tgi, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="bots.telegram.updates")
    async with running_bot(store, cache, tg, tgi, rate_limit_messages=3, max_waiting_per_person=10) as bot:
        await bot.add_character("Hamlet")
        await bot.bind(GROUP, "Hamlet", "all")
        processor = bot.application.update_processor
        # The first reply is held until the whole flood has arrived: before, the rate count was taken
        # as each turn started, so a flood waiting behind slow replies was never over the limit.
        tgi.gate = asyncio.Event()
        group, flo, cal = tg.group(GROUP), tg.user(51, "Flo"), tg.user(52, "Cal")
        for i in range(30):
            tg.say(group, flo, f"message {i}")
        await tg.wait_for(
            lambda: processor.dropped == 20 and tgi.count("/v1/chat/completions") == 1, 10, "the flood to arrive"
        )
        tg.say(group, cal, "Good evening, Hamlet.")
        tgi.gate.set()
        await bot.idle()

        assert tgi.count("/v1/chat/completions") == 3 + 1  # three of Flo's, one of Cal's
        texts = tg.texts(GROUP)
        assert texts.count(NOTICE_RATE) == 1
        assert texts.count(tgi.reply) == 4
        assert [m["reply_to_message"]["from"]["id"] for m in tg.bot_messages(GROUP)].count(51) == 4  # 3 answers, 1 notice
        drops = [r for r in caplog.records if r.name == "bots.telegram.updates" and "dropped update" in r.getMessage()]
        assert len(drops) == 20 and "20 dropped since start" in drops[-1].getMessage()

