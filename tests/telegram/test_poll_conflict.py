"""Another process polling the same bot (Telegram answers 409 Conflict again and again): one clear
line, and the adapter counts as not connected with that reason (so /readyz says it)."""

from __future__ import annotations

import asyncio
import logging

from bots import heartbeat
from bots.telegram.application import INTAKE, _taking_updates
from bots.telegram.intake import CONFLICT
from tests.telegram.conftest import running_bot

CONFLICT_TEXT = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"


async def test_repeated_409_conflicts_are_named_once_and_make_the_adapter_unready(store, cache, tg, tgi, caplog, tmp_path) -> None:
    caplog.set_level(logging.WARNING)
    tg.fail("getUpdates", 409, CONFLICT_TEXT, times=3)
    async with running_bot(store, cache, tg, tgi) as bot:
        heartbeat.watch("telegram", lambda: _taking_updates(bot.application), tmp_path / "beat")
        try:
            intake = bot.application.bot_data[INTAKE]
            async with asyncio.timeout(20):
                while intake.conflicted is None:
                    await asyncio.sleep(0.01)
            (down,) = heartbeat.not_connected()
            assert "another process polls this bot" in down and "PERSONAE_REDIS_URL" in down, down
            lines = [r.getMessage() for r in caplog.records if CONFLICT in r.getMessage()]
            assert len(lines) == 1, lines
            async with asyncio.timeout(20):  # the conflicts end: the poller counts as connected again
                while intake.conflicted is not None:
                    await asyncio.sleep(0.01)
            assert heartbeat.not_connected() == []
        finally:
            heartbeat.unwatch("telegram")
