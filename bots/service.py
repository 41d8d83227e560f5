"""``personae run``: the Discord and Telegram adapters in one process, on one App."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine, Mapping

from bots.compose import open_app
from bots.samples import ensure_samples
from bots.settings import Settings
from core.errors import ConfigurationError, PersonaeError

log = logging.getLogger("personae")


async def run_service(settings: Settings) -> None:
    """Run every adapter whose token is set until interrupted."""
    if settings.discord_token is None and settings.telegram_token is None:
        raise ConfigurationError(
            "set PERSONAE_DISCORD_TOKEN and/or PERSONAE_TELEGRAM_TOKEN to run the bots "
            "(or try `personae chat` in the terminal)"
        )
    platforms = tuple(
        name for name, token in (("Discord", settings.discord_token), ("Telegram", settings.telegram_token)) if token is not None
    )
    async with open_app(settings, platforms=platforms) as app:
        await ensure_samples(app.store)
        adapters: dict[str, Coroutine[Any, Any, None]] = {}
        if settings.discord_token is not None:
            from bots.discord import run_discord

            adapters["Discord"] = run_discord(app)
        if settings.telegram_token is not None:
            from bots.telegram import run_telegram

            adapters["Telegram"] = run_telegram(app)
        await run_adapters(adapters)


async def run_adapters(adapters: Mapping[str, Coroutine[Any, Any, None]]) -> None:
    """Run the adapters until one of them ends, then stop the others and raise PersonaeError.

    An adapter ends only when its connection is gone for good (its library retries everything
    else), so the process exits non-zero and the supervisor (Docker, Kubernetes) restarts it.
    """
    tasks = {asyncio.create_task(work, name=f"{name} adapter"): name for name, work in adapters.items()}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    task = next(iter(done))
    name = tasks[task]
    error = None if task.cancelled() else task.exception()
    if isinstance(error, ConfigurationError):
        raise error  # a refused token: restarting would not help
    if isinstance(error, PersonaeError):
        raise PersonaeError(f"{error}; personae stops so that it can be restarted") from error
    if error is not None:
        log.error("the %s adapter failed", name, exc_info=error)
        raise PersonaeError(f"the {name} adapter stopped ({type(error).__name__}: {error}); personae stops so that it can be restarted") from error
    raise PersonaeError(f"the {name} adapter stopped; personae stops so that it can be restarted")
