"""PluralKit, Tupperbox and other proxies: a proxied message counts once, as its author's.

A proxy bot reads a person's message ("original"), posts its text again through a webhook under
the persona's name ("copy"), and deletes the original a moment later. The proxies' API is not
asked (it may not be reachable); the rule is local:

- A webhook message that is not the bot's own is a copy when a person's message in the same
  channel, from the last ``window_s`` seconds, contains its text (a proxy strips only its tags).
  The copy is answered as that person's message (their id, so that only they can regenerate; the
  persona's name as the name the character reads); a webhook message that matches nothing is a
  bot's and is ignored.
- In a server where a copy was seen (or any message of PluralKit's or Tupperbox's application),
  each person's message is stored on arrival (as always, so it is never lost) and then held up to
  ``wait_s`` seconds: if its copy arrives or it is deleted meanwhile, it is discarded (settled,
  never answered, also not after a restart) and the copy is answered instead; else it is answered
  itself.
- Until a server's first copy is seen, originals are not held: an original already being
  answered when its copy arrives keeps its answer and the copy is ignored. Either way a proxied
  message is answered once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import discord

PROXY_WAIT_S = 5.0  # how long a person's message waits for its proxy in a server with a proxy
MATCH_WINDOW_S = 30.0  # a copy matches an original at most this old
_PER_CHANNEL = 50  # originals remembered per channel
# The applications of PluralKit and Tupperbox: a message of theirs marks the server as having a proxy.
KNOWN_PROXIES = frozenset({466378653216014359, 431544605209788416})


@dataclass(slots=True)
class Original:
    """A person's message that a proxy may copy; ``state`` says what became of it."""

    message_id: int
    channel_id: int
    author_id: int
    content: str
    addressed: bool
    at: float
    state: str = "new"  # new, held (waiting for a copy), answering, copied, deleted
    settled: asyncio.Event = field(default_factory=asyncio.Event)


class Proxies:
    """What is known about proxies: the originals of the last seconds, and the servers that have one."""

    def __init__(self, *, wait_s: float = PROXY_WAIT_S, window_s: float = MATCH_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.wait_s, self.window_s, self.clock = wait_s, window_s, clock
        self._recent: dict[int, deque[Original]] = {}
        self._guilds: set[int] = set()  # servers where a proxy's copy was seen

    def arrived(self, message: discord.Message, addressed: bool) -> Original | None:
        """Remember a person's message in a server channel (before any await: a copy may follow at once)."""
        if message.guild is None:
            return None  # proxies do not work in DMs
        original = Original(message.id, message.channel.id, message.author.id, message.content, addressed, self.clock())
        recent = self._recent.setdefault(message.channel.id, deque(maxlen=_PER_CHANNEL))
        recent.append(original)
        if len(self._recent) > 10_000:
            self._recent.pop(next(iter(self._recent)))
        return original

    def copy_of(self, message: discord.Message) -> Original | None:
        """The original that the webhook message ``message`` copies (and marks it copied), or None.

        None too when the original is being answered already (its answer counts; the copy is not
        answered again). Either way the server is known to have a proxy from now on (also after
        any message of PluralKit's or Tupperbox's application).
        """
        if message.guild is not None and getattr(message, "application_id", None) in KNOWN_PROXIES:
            self._guilds.add(message.guild.id)
        text = message.content.strip()
        if not text:
            return None
        now = self.clock()
        for original in reversed(self._recent.get(message.channel.id, ())):
            if now - original.at > self.window_s:
                break
            if original.state in ("copied", "deleted") or text not in original.content:
                continue
            if message.guild is not None:
                # A webhook that copies people is a proxy (a news feed's webhook copies nobody).
                self._guilds.add(message.guild.id)
            if original.state == "answering":
                return None
            original.state = "copied"
            original.settled.set()
            return original
        return None

    def deleted(self, channel_id: int, message_id: int) -> None:
        """A message was deleted: an original not yet answered will not be."""
        for original in self._recent.get(channel_id, ()):
            if original.message_id == message_id and original.state in ("new", "held"):
                original.state = "deleted"
                original.settled.set()

    async def answer_original(self, original: Original | None, guild_id: int | None) -> bool:
        """Whether the original itself is to be answered: in a server with a proxy, after waiting
        up to ``wait_s`` for its copy or its deletion; False when either came."""
        if original is None:
            return True
        if original.state == "new" and guild_id in self._guilds:
            original.state = "held"
            try:
                await asyncio.wait_for(original.settled.wait(), self.wait_s)
            except TimeoutError:
                pass
        if original.state in ("copied", "deleted"):
            return False
        original.state = "answering"
        return True

    def has_proxy(self, guild_id: int) -> bool:
        return guild_id in self._guilds
