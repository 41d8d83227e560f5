"""Links to the characters' avatars, for the ``avatar_url`` of their webhook messages.

A webhook message shows its picture from a link, and personae keeps avatars in its database, not
at a public address. So the avatar is uploaded once, as an attachment of a message the bot posts
in ``PERSONAE_DISCORD_AVATAR_CHANNEL`` (a channel only the bot needs to see), and the link Discord
gives the attachment is reused. Discord's attachment links expire (the ``ex`` parameter, about a
day): a link is used until an hour before that, then the avatar is uploaded again. Without that
setting (or for a character without an avatar, or when the upload fails) the webhook's messages
show the character's name with Discord's default picture.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from typing import TYPE_CHECKING, Awaitable, Callable
from urllib.parse import parse_qs, urlparse

import discord

if TYPE_CHECKING:
    from core.character import Character

log = logging.getLogger(__name__)

KINDS = ("png", "jpg", "jpeg", "gif", "webp")  # images Discord shows as an avatar
UPLOAD_BYTES = 8 * 1024 * 1024  # under every server's upload limit
RECHECK_S = 3600.0  # a link is checked against the stored avatar (changed? expired?) this often
EXPIRY_MARGIN_S = 3600.0  # a link is replaced this long before Discord's expiry
NO_EXPIRY_S = 12 * 3600.0  # how long a link without an ``ex`` parameter is used


class AvatarLinks:
    """The avatar link of each character, uploaded once per avatar (and again before it expires)."""

    def __init__(
        self,
        client: discord.Client,
        channel_id: int | None,
        load: Callable[[int], Awaitable[tuple[bytes, str] | None]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client, self.channel_id, self.load, self.clock = client, channel_id, load, clock
        # character id -> (link or None, digest of the avatar it shows, recheck at, valid until)
        self._links: dict[int, tuple[str | None, str, float, float]] = {}
        self._told = False

    async def url(self, character: "Character") -> str | None:
        if self.channel_id is None:
            return None
        now = self.clock()
        known = self._links.get(character.id)
        if known is not None and now < known[2] and now < known[3]:
            return known[0]
        try:
            avatar = await self.load(character.id)
        except Exception:  # noqa: BLE001 - the database's own errors: no picture this time
            log.debug("could not load the avatar of character %s", character.id, exc_info=True)
            return known[0] if known is not None and now < known[3] else None
        if avatar is None or avatar[1] not in KINDS or len(avatar[0]) > UPLOAD_BYTES:
            self._links[character.id] = (None, "", now + RECHECK_S, now + RECHECK_S)
            return None
        digest = hashlib.sha256(avatar[0]).hexdigest()
        if known is not None and known[1] == digest and now < known[3]:
            self._links[character.id] = (known[0], digest, now + RECHECK_S, known[3])
            return known[0]
        link = await self._upload(character, *avatar)
        until = _expiry(link, now) if link else now + RECHECK_S
        self._links[character.id] = (link, digest, min(now + RECHECK_S, until), until)
        return link

    async def _upload(self, character: "Character", image: bytes, ext: str) -> str | None:
        try:
            channel = self.client.get_channel(self.channel_id) or await self.client.fetch_channel(self.channel_id)  # type: ignore[arg-type]
            sent = await channel.send(  # type: ignore[union-attr]
                f"avatar of {character.name}", file=discord.File(io.BytesIO(image), filename=f"avatar-{character.id}.{ext}"),
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except (discord.HTTPException, AttributeError) as exc:
            if not self._told:
                self._told = True
                log.warning(
                    "Discord: could not upload an avatar to PERSONAE_DISCORD_AVATAR_CHANNEL %s (%s); the characters "
                    "speak without their pictures until it works", self.channel_id, exc,
                )
            return None
        return sent.attachments[0].url if sent.attachments else None


def _expiry(link: str, now: float) -> float:
    """When to stop using ``link``: an hour before its ``ex`` (hex seconds), or ``NO_EXPIRY_S`` from now."""
    try:
        ex = parse_qs(urlparse(link).query).get("ex")
        if ex:
            return int(ex[0], 16) - EXPIRY_MARGIN_S
    except ValueError:
        pass
    return now + NO_EXPIRY_S
