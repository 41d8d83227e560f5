"""Stopping while the Bot API hangs: the service's close time cancels the adapter in the middle of its
stop, and the Application is still stopped and shut down (python-telegram-bot's ``shutdown`` refuses
one still running), with one line saying what was left."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from bots.compose import model_client, wire
from bots.replicas import alive
from bots.telegram import run_telegram
from tests.telegram.conftest import FAST, Harness, make_settings, running_bot


async def test_a_stop_cut_off_while_telegram_hangs_still_stops_and_shuts_down_the_application(store, cache, tg, tgi, caplog) -> None:
    caplog.set_level(logging.WARNING)
    config = make_settings(tg, tgi.base_url)
    model = model_client(config, config.llm_url)  # type: ignore[arg-type]
    app = wire(config, store, cache, model)
    stop = asyncio.Event()
    try:
        async with alive(app.cache, app.replica, config.replica_lease_s):
            adapter = asyncio.create_task(run_telegram(app, FAST, stop=stop))
            ann = tg.user(7, "Ann")
            tg.say(tg.private(ann), ann, "/help")  # an update taken: the stop has one to confirm
            await tg.wait_for(lambda: tg.calls_of("sendMessage"), timeout=30, what="the answer to /help")
            tg.hang()
            stop.set()

            def confirming() -> bool:
                return any(c.method == "getUpdates" and c.params.get("limit") == 1 for c in tg.unanswered)

            await tg.wait_for(confirming, timeout=30, what="the stop to confirm the updates taken")
            adapter.cancel()  # as `personae run` does when its close time runs out
            # Generous: the adapter lets go at once (the request timeout alone is 5 s here).
            done, _ = await asyncio.wait([adapter], timeout=60)
            assert done, "the adapter went on waiting for Telegram after it was cancelled"
            assert adapter.cancelled(), adapter.exception()
    finally:
        await app.engine.drain()
        await model.close()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [line for line in lines if line.startswith("Telegram did not answer while stopping")], lines
    assert not [line for line in lines if "still running" in line], lines


async def test_a_stop_cut_off_while_an_update_waits_for_telegram_cancels_it_without_an_error_line(store, cache, tg, tgi, caplog) -> None:
    caplog.set_level(logging.WARNING)
    entered, leave = asyncio.Event(), asyncio.Event()
    running: list[Harness] = []
    # Telegram's own timeout is not what ends the update here: the close time is.
    patient = replace(FAST, request_timeout=60.0)

    async def serve() -> None:
        async with running_bot(store, cache, tg, tgi, tuning=patient) as harness:
            running.append(harness)
            entered.set()
            await leave.wait()

    server = asyncio.create_task(serve())
    await asyncio.wait_for(entered.wait(), 60)
    application = running[0].application
    tg.hang("sendMessage")
    ann = tg.user(7, "Ann")
    tg.say(tg.private(ann), ann, "/help")
    await tg.wait_for(lambda: tg.unanswered, timeout=30, what="the answer to /help to hang")
    leave.set()
    await tg.wait_for(lambda: not application.running, timeout=30, what="Application.stop to wait for the update")
    server.cancel()  # as `personae run` does when its close time runs out
    done, _ = await asyncio.wait([server], timeout=60)  # generous: the request timeout alone is 60 s
    assert done, "the adapter went on waiting for Telegram after it was cancelled"
    assert server.cancelled(), server.exception()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [line for line in lines if line.startswith("Telegram did not answer while stopping (the updates being handled")], lines
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], errors
