"""Where a reply is written on Discord, and under which name: a channel webhook or the bot itself.

Each character speaks with its own name and avatar through one webhook per channel, the way
PluralKit and Tupperbox give several personas a face: the bot creates (or finds again, by its name
``personae`` and by being its own) one webhook per channel, keeps it, and sends each reply with
``username`` = the character's name and ``avatar_url`` = its avatar's link. Threads use their
parent channel's webhook. Where webhooks are not allowed the reply comes from the bot itself:
DMs, channels where the bot lacks Manage Webhooks (403), a webhook that cannot be made again after
it was deleted (404), or ``PERSONAE_DISCORD_WEBHOOKS=off``. Each such case is one log line.

A ``Place`` sends the first message of a reply and gives a handle for every message it wrote
(``handle(id)``), whose ``edit``/``delete`` go through the route that message needs: the channel's
for the bot's messages, the webhook's for the webhook's (a bot cannot edit a webhook's message
through the channel). The pacing of those writes is the caller's.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

import discord

if TYPE_CHECKING:
    from core.character import Character

log = logging.getLogger(__name__)

WEBHOOK_NAME = "personae"  # the name of the bot's webhook in each channel (found again by it)
REFUSED_RETRY_S = 600.0  # a channel that refused a webhook is asked again after this long
NAME_LIMIT = 80  # Discord's limit on a webhook message's username
UNKNOWN_WEBHOOK = 10015  # Discord's error code for a deleted webhook


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a reply is shown as: the character's name and the link of its avatar (None: no picture)."""

    name: str
    avatar_url: str | None = None


class Handle(Protocol):
    """A message a Place wrote (or can write to): edited and deleted through the right route."""

    id: int

    async def edit(self, **fields: Any) -> Any: ...

    async def delete(self) -> None: ...


class Place(Protocol):
    """Where a reply is written: ``send`` posts a message, ``handle`` names one already written."""

    webhook: bool

    async def send(self, text: str, *, reference: discord.MessageReference | None = None, **fields: Any) -> Handle: ...

    def handle(self, message_id: int) -> Handle: ...


class ChannelPlace:
    """The bot's own messages in a channel (a DM, a thread, a channel without webhooks)."""

    webhook = False

    def __init__(self, channel: discord.abc.Messageable) -> None:
        self.channel = channel

    async def send(self, text: str, *, reference: discord.MessageReference | None = None, **fields: Any) -> Handle:
        if reference is not None:
            fields["reference"] = reference
        return await self.channel.send(text, **fields)  # type: ignore[return-value]

    def handle(self, message_id: int) -> Handle:
        return self.channel.get_partial_message(message_id)  # type: ignore[attr-defined,no-any-return]


class WebhookHandle:
    """A message of the bot's webhook, known by id: edited and deleted through the webhook.

    When the webhook was deleted meanwhile (404), an edit that carries text writes it as a new
    message instead (through a new webhook, or the bot) and the handle follows that message from
    then on; an edit of the button alone is skipped. One log line each time.
    """

    def __init__(
        self, webhook: discord.Webhook, message_id: int, thread: discord.abc.Snowflake | None, place: "WebhookPlace | None" = None
    ) -> None:
        self.webhook, self.id, self.thread, self.place = webhook, message_id, thread, place
        self._moved: Handle | None = None  # the message that took over after the webhook was deleted

    def _where(self) -> dict[str, Any]:
        return {"thread": self.thread} if self.thread is not None else {}

    async def edit(self, **fields: Any) -> Any:
        if self._moved is not None:
            return await self._moved.edit(**fields)
        try:
            return await self.webhook.edit_message(self.id, **fields, **self._where())
        except discord.NotFound as exc:
            if exc.code != UNKNOWN_WEBHOOK or self.place is None:
                raise  # the message itself is gone: as for the bot's own messages
            return await self._move(fields)

    async def _move(self, fields: dict[str, Any]) -> Any:
        place = self.place
        assert place is not None
        place.webhooks.forget(place.target.id, self.webhook.id)
        if fields.get("content") is None:
            log.info("Discord: the webhook of channel %s was deleted; message %s keeps its old buttons", place.target.id, self.id)
            return None
        log.info(
            "Discord: the webhook of channel %s was deleted while message %s was shown; the rest comes as a new message",
            place.target.id, self.id,
        )
        content = fields.pop("content")
        self._moved = await place.send(content, **fields)
        self.id = self._moved.id
        return None

    async def delete(self) -> None:
        if self._moved is not None:
            return await self._moved.delete()
        await self.webhook.delete_message(self.id, **self._where())

    def __repr__(self) -> str:
        return f"<WebhookHandle id={self.id} webhook={self.webhook.id}>"


class WebhookPlace:
    """A character's messages through the channel's webhook, under its name and avatar.

    A send the webhook refuses falls back to the bot in ``fallback``: a deleted webhook (404) is made
    again once first; a missing permission (403) or any other refusal marks the channel so that the
    next replies go straight to the bot (``Webhooks.refuse``).
    """

    webhook = True

    def __init__(
        self, webhooks: "Webhooks", target: discord.abc.GuildChannel, hook: discord.Webhook, identity: Identity,
        thread: discord.abc.Snowflake | None, fallback: ChannelPlace,
    ) -> None:
        self.webhooks, self.target, self.hook, self.identity = webhooks, target, hook, identity
        self.thread, self.fallback = thread, fallback

    async def send(self, text: str, *, reference: discord.MessageReference | None = None, **fields: Any) -> Handle:
        # A webhook message cannot reply to another message: ``reference`` is dropped.
        for attempt in (1, 2):
            try:
                return await self._send(text, **fields)
            except discord.NotFound:
                self.webhooks.forget(self.target.id)
                if attempt == 2:
                    self.webhooks.refuse(self.target, "its webhook was deleted and the new one was refused too")
                    break
                hook = await self.webhooks.hook_for(self.target)
                if hook is None:
                    break
                log.info("Discord: the webhook of channel %s was deleted; made a new one", self.target.id)
                self.hook = hook
            except discord.Forbidden as exc:
                self.webhooks.refuse(self.target, f"the webhook was refused (403: {exc.text or 'forbidden'})")
                break
            except discord.HTTPException as exc:
                if exc.status >= 500:
                    raise  # Discord is in trouble: as a bot message would, this fails the write
                if exc.status == 400:  # this message (a name Discord will not show, say), not the channel
                    log.warning(
                        "Discord refused a webhook message in channel %s as %r (400: %s); this one comes from the bot",
                        self.target.id, self.identity.name, exc.text or exc,
                    )
                    break
                self.webhooks.refuse(self.target, f"the webhook was refused ({exc.status}: {exc.text or exc})")
                break
        return await self.fallback.send(text, reference=reference, **fields)

    async def _send(self, text: str, **fields: Any) -> Handle:
        extra: dict[str, Any] = {"username": webhook_name(self.identity.name)}
        if self.identity.avatar_url:
            extra["avatar_url"] = self.identity.avatar_url
        if self.thread is not None:
            extra["thread"] = self.thread
        sent = await self.hook.send(text, wait=True, **extra, **fields)
        return WebhookHandle(self.hook, sent.id, self.thread, self)

    def handle(self, message_id: int) -> Handle:
        return WebhookHandle(self.hook, message_id, self.thread, self)


class Webhooks:
    """The bot's webhook of each channel: found by name or made once, kept, forgotten when deleted.

    ``refused`` channels (no Manage Webhooks permission, too many webhooks, ...) are not asked
    again for ``retry_s`` (an admin may grant the permission meanwhile); each refusal is one log line.
    """

    def __init__(self, client: discord.Client, *, enabled: bool = True, retry_s: float = REFUSED_RETRY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.enabled = enabled
        self.retry_s = retry_s
        self.clock = clock
        self._hooks: dict[int, discord.Webhook] = {}
        self._ids: set[int] = set()  # every webhook of ours seen, for telling our messages apart
        self._refused: dict[int, float] = {}  # channel -> when to ask again
        self._making: dict[int, asyncio.Lock] = {}

    def ours(self, message: discord.Message) -> bool:
        """Whether ``message`` was written by one of the bot's webhooks."""
        if message.webhook_id is None:
            return False
        if message.webhook_id in self._ids:
            return True
        app = self.client.application_id
        return app is not None and getattr(message, "application_id", None) == app

    async def place(self, channel: discord.abc.Messageable, character: "Character | None", avatar_url: str | None = None) -> Place:
        """Where a reply of ``character`` in ``channel`` goes: its webhook when there is one, else the bot."""
        fallback = ChannelPlace(channel)
        if character is None or not self.enabled:
            return fallback
        target, thread = _webhook_target(channel)
        if target is None:
            return fallback  # a DM, or a channel kind without webhooks: the bot, as always there
        hook = await self.hook_for(target)
        if hook is None:
            return fallback
        return WebhookPlace(self, target, hook, Identity(character.name, avatar_url), thread, fallback)

    async def place_of(self, message: discord.Message | discord.PartialMessage, identity: Identity | None) -> Place:
        """The place that wrote ``message`` (to edit it and write more beside it): its webhook if one of ours wrote it."""
        channel = message.channel
        fallback = ChannelPlace(channel)  # type: ignore[arg-type]
        if not isinstance(message, discord.Message) or not self.ours(message):
            return fallback
        target, thread = _webhook_target(channel)  # type: ignore[arg-type]
        if target is None:
            return fallback
        hook = self._hooks.get(target.id)
        if hook is None or hook.id != message.webhook_id:
            hook = await self.hook_for(target, wanted=message.webhook_id)
        if hook is None or hook.id != message.webhook_id:
            return fallback
        return WebhookPlace(self, target, hook, identity or Identity(message.author.display_name), thread, fallback)

    async def hook_for(self, target: discord.abc.GuildChannel, *, wanted: int | None = None) -> discord.Webhook | None:
        """The bot's webhook in ``target`` (found or made); None when the channel refuses webhooks."""
        hook = self._hooks.get(target.id)
        if hook is not None and (wanted is None or hook.id == wanted):
            return hook
        until = self._refused.get(target.id)
        if until is not None and self.clock() < until and wanted is None:
            return None
        lock = self._making.setdefault(target.id, asyncio.Lock())
        async with lock:
            hook = self._hooks.get(target.id)
            if hook is not None and (wanted is None or hook.id == wanted):
                return hook
            try:
                hook = await self._find(target, wanted)
                if hook is None and wanted is None:
                    hook = await target.create_webhook(  # type: ignore[attr-defined]
                        name=WEBHOOK_NAME, reason="characters speak here with their own name and avatar"
                    )
                    log.info("Discord: made a webhook in channel %s for the characters' replies", target.id)
            except discord.Forbidden:
                self.refuse(target, "the bot lacks the Manage Webhooks permission there")
                return None
            except discord.HTTPException as exc:
                self.refuse(target, f"Discord refused a webhook ({exc.status}: {exc.text or exc})")
                return None
            if hook is None:
                return None
            self._refused.pop(target.id, None)
            self._hooks[target.id] = hook
            self._ids.add(hook.id)
            return hook

    async def _find(self, target: discord.abc.GuildChannel, wanted: int | None) -> discord.Webhook | None:
        me = self.client.user
        app = self.client.application_id
        for hook in await target.webhooks():  # type: ignore[attr-defined]
            mine = (hook.user is not None and me is not None and hook.user.id == me.id) or (app is not None and hook.application_id == app)
            if not mine or hook.token is None:
                continue
            self._ids.add(hook.id)
            if (wanted is not None and hook.id == wanted) or (wanted is None and hook.name == WEBHOOK_NAME):
                return hook
        return None

    def forget(self, channel_id: int, webhook_id: int | None = None) -> None:
        """The channel's webhook (``webhook_id``, or whichever is kept) is gone (deleted in Discord):
        the next reply makes a new one."""
        hook = self._hooks.get(channel_id)
        if hook is not None and (webhook_id is None or hook.id == webhook_id):
            del self._hooks[channel_id]

    def refuse(self, target: discord.abc.GuildChannel, why: str) -> None:
        """No webhook in ``target`` for a while: replies come from the bot. One log line."""
        self._hooks.pop(target.id, None)
        self._refused[target.id] = self.clock() + self.retry_s
        log.warning(
            "Discord: no webhook in channel %s (%s); replies there come from the bot itself "
            "(grant the bot Manage Webhooks, or set PERSONAE_DISCORD_WEBHOOKS=off)", target.id, why,
        )


_RESERVED = re.compile(r"(discord|clyde)", re.IGNORECASE)


def webhook_name(name: str) -> str:
    """``name`` as Discord accepts a webhook message's username: at most 80 characters, and the
    words it refuses there ("discord", "clyde") broken by a zero-width space, as PluralKit does."""
    name = _RESERVED.sub(lambda m: m[0][0] + "\u200b" + m[0][1:], name.strip()) or "?"
    return name[:NAME_LIMIT]


def _webhook_target(channel: discord.abc.Messageable) -> tuple[discord.abc.GuildChannel | None, discord.abc.Snowflake | None]:
    """The channel whose webhook writes to ``channel``, and the thread to write in (threads: the parent's)."""
    if isinstance(channel, discord.Thread):
        parent = channel.parent
        if parent is None or not hasattr(parent, "create_webhook"):
            return None, None
        return parent, discord.Object(channel.id)
    if isinstance(channel, discord.abc.GuildChannel) and hasattr(channel, "create_webhook"):
        return channel, None
    return None, None
