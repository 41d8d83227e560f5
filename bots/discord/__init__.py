"""The Discord adapter: role-play in channels and DMs, slash commands, streamed replies (discord.py 2.x)."""

from bots.discord.client import DiscordTokenRejected, PersonaeClient, run_discord

__all__ = ["DiscordTokenRejected", "PersonaeClient", "run_discord"]
