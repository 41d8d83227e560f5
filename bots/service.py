"""``personae run``: the Discord and Telegram adapters in one process, on one App."""

from __future__ import annotations

import asyncio
import logging

from bots.compose import open_app
from bots.samples import ensure_samples
from bots.settings import Settings
from core.errors import ConfigurationError

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
        adapters = []
        if settings.discord_token is not None:
            from bots.discord import run_discord

            adapters.append(run_discord(app))
        if settings.telegram_token is not None:
            from bots.telegram import run_telegram

            adapters.append(run_telegram(app))
        await asyncio.gather(*adapters)
