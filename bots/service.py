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
from typing import Any, Coroutine, Mapping

from bots.compose import App, open_app
from bots.replicas import alive
from bots.samples import ensure_samples
from bots.settings import Settings
from core.errors import ConfigurationError, PersonaeError

log = logging.getLogger("personae")

# After the grace period and the cut, how long adapters get to show the last edits and close.
CLOSE_S = 10.0


async def run_service(settings: Settings) -> None:
    """Run every adapter whose token is set until SIGTERM or SIGINT, then drain."""
    if settings.discord_token is None and settings.telegram_token is None:
        raise ConfigurationError(
            "set PERSONAE_DISCORD_TOKEN and/or PERSONAE_TELEGRAM_TOKEN to run the bots "
            "(or try `personae chat` in the terminal)"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        platforms = tuple(
            name for name, token in (("Discord", settings.discord_token), ("Telegram", settings.telegram_token)) if token is not None
        )
        async with open_app(settings, platforms=platforms) as app:
            from bots.probes import watched_app

            await ensure_samples(app.store)
            # Alive while serving: another replica takes over what this one leaves pending once it is gone.
            async with watched_app(app), alive(app.cache, app.replica, settings.replica_lease_s):
                await _serve(app, settings, stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _serve(app: App, settings: Settings, stop: asyncio.Event) -> None:
    adapters_stop = asyncio.Event()
    adapters: list[asyncio.Task[None]] = []
    if settings.discord_token is not None:
        from bots.discord import run_discord

        adapters.append(asyncio.create_task(run_discord(app, stop=adapters_stop), name="Discord"))
    if settings.telegram_token is not None:
        from bots.telegram import run_telegram

        adapters.append(asyncio.create_task(run_telegram(app, stop=adapters_stop), name="Telegram"))
    stopping = asyncio.create_task(stop.wait())
    failure: PersonaeError | None = None
    try:
        done, _ = await asyncio.wait([stopping, *adapters], return_when=asyncio.FIRST_COMPLETED)
        ended = [task for task in done if task is not stopping]
        if ended:
            # An adapter ends only when it could not start or its connection is gone for good (its
            # library retries everything else): drain, then exit non-zero so the supervisor restarts us.
            failure = _adapter_failure(ended[0])
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
    if failure is not None:
        raise failure


def _adapter_failure(task: asyncio.Task[None]) -> PersonaeError:
    """The error that ends the process after the adapter ``task`` ended by itself."""
    name = task.get_name()
    error = None if task.cancelled() else task.exception()
    if isinstance(error, ConfigurationError):
        return error  # a refused token: restarting would not help
    if isinstance(error, PersonaeError):
        failure = PersonaeError(f"{error}; personae stops so that it can be restarted")
    elif error is not None:
        log.error("the %s adapter failed", name, exc_info=error)
        failure = PersonaeError(f"the {name} adapter stopped ({type(error).__name__}: {error}); personae stops so that it can be restarted")
    else:
        failure = PersonaeError(f"the {name} adapter stopped; personae stops so that it can be restarted")
    failure.__cause__ = error
    return failure


async def run_adapters(adapters: Mapping[str, Coroutine[Any, Any, None]]) -> None:
    """Run the adapters until one ends by itself, stop the others and raise why (the end of
    ``personae run`` without the drain, for a caller that holds no App)."""
    tasks = [asyncio.create_task(work, name=name) for name, work in adapters.items()]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    raise _adapter_failure(next(iter(done)))
