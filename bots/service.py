"""``personae run``: the Discord and Telegram adapters in one process, on one App, stopped gracefully.

SIGTERM (``docker stop``, Kubernetes) and SIGINT drain: new messages are still stored but answered
after the restart, the replies in flight may finish within PERSONAE_SHUTDOWN_GRACE_S (then they
are cut short, marked and stored), and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from bots.compose import App, open_app
from bots.samples import ensure_samples
from bots.settings import Settings
from core.errors import PersonaeError

log = logging.getLogger("personae")

# After the grace period and the cut, how long adapters get to show the last edits and close.
CLOSE_S = 10.0


async def run_service(settings: Settings) -> None:
    """Run every adapter whose token is set until SIGTERM or SIGINT, then drain."""
    if settings.discord_token is None and settings.telegram_token is None:
        raise PersonaeError(
            "set PERSONAE_DISCORD_TOKEN and/or PERSONAE_TELEGRAM_TOKEN to run the bots "
            "(or try `personae chat` in the terminal)"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with open_app(settings) as app:
            await ensure_samples(app.store)
            await _serve(app, settings, stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _serve(app: App, settings: Settings, stop: asyncio.Event) -> None:
    adapters_stop = asyncio.Event()
    adapters: list[asyncio.Task[None]] = []
    if settings.discord_token is not None:
        from bots.discord import run_discord

        adapters.append(asyncio.create_task(run_discord(app, stop=adapters_stop), name="discord"))
    if settings.telegram_token is not None:
        from bots.telegram import run_telegram

        adapters.append(asyncio.create_task(run_telegram(app, stop=adapters_stop), name="telegram"))
    log.info("personae is running (%d adapter%s)", len(adapters), "" if len(adapters) == 1 else "s")
    stopping = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([stopping, *adapters], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopping:
                task.result()  # an adapter that could not start or died: its error ends the process
        log.info("stopping: finishing %d repl%s in flight", app.engine.turns_running, "y" if app.engine.turns_running == 1 else "ies")
        app.engine.stop_answering()
        adapters_stop.set()
        if not await app.engine.finish_turns(settings.shutdown_grace_s):
            log.warning("replies still running after %g s were cut short and stored", settings.shutdown_grace_s)
        _, late = await asyncio.wait(adapters, timeout=CLOSE_S)
        for task in late:
            task.cancel()
        for task in adapters:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        log.info("stopped")
    finally:
        stopping.cancel()
        for task in adapters:
            task.cancel()
        await asyncio.gather(stopping, *adapters, return_exceptions=True)
