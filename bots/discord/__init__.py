"""The Discord adapter: role-play in channels and DMs, slash commands, streamed replies (discord.py 2.x)."""

from bots.discord.client import DiscordTokenRejected, DiscordUnreachable, PersonaeClient, invite_url, run_discord

__all__ = ["DiscordTokenRejected", "DiscordUnreachable", "PersonaeClient", "invite_url", "run_discord"]
