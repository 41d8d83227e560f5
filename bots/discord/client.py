"""The Discord client: messages to the Engine, replies streamed back as a send and paced edits.

Where a reply is written, and under which name (the channel's webhook as the character, or the
bot), is ``bots.discord.faces``; proxies' copies of people's messages are ``bots.discord.proxies``.

One ``PersonaeClient`` per process. ``run_discord(app)`` points discord.py at the configured API
and gateway, logs in and runs until cancelled. Every handled message ends with the client event
``turn_finished(message, reply)`` (``reply`` is None when no reply was asked of the Engine), which
tests and metrics can wait for.
"""

from __future__ import annotations

import asyncio
import time
import contextlib
import logging
from typing import Any, AsyncIterable, AsyncIterator, Awaitable, Callable, TypeVar

import discord
import yarl

from bots import heartbeat
from bots.compose import App
from bots.discord.chat import (
    ATTACHMENT_NOTE,
    GONE,
    MESSAGE_LIMIT,
    NO_MENTIONS,
    RegenerateButton,
    chat_event,
    proxied_event,
    regenerate_view,
)
from bots.discord.avatars import AvatarLinks
from bots.discord.faces import ChannelPlace, Handle, Identity, Place, Webhooks
from bots.discord.proxies import Proxies
from bots.discord.shards import ShardPlan, shard_plan
from bots.discord.slash import FAILED, CommandTree, build_commands, no_character_hint, sync_commands
from bots.streaming import FINAL, EditBudget, Room, StreamedMessage, Typing, first_shown, greeting_first
from bots.recovering import keep_recovering, sweep_every
from core import observe
from core.engine import NOTICE_INTERRUPTED, RecoveredTurn, Reply, ReplyStatus
from core.errors import ConfigurationError, PersonaeError
from core.locks import KeyedLocks
from core.events import ChatEvent, ConversationKey, Platform, Trigger, is_character_user
from core.state import MessageStatus

log = logging.getLogger(__name__)

EDIT_INTERVAL_S = 1.0  # at most one edit per second for one message while it streams
TYPING_EVERY_S = 8.0  # Discord shows "typing…" for 10 s per call
WINDOW_MARGIN_S = 0.1  # on top of a channel's window: requests reach Discord a little after they are counted
LIBRARY_POLL_S = 0.02  # past a bucket's reset, or while its requests are answered: look again this soon
_REMEMBERED = 10_000  # replies whose messages are remembered (regenerate, button removal)

K = TypeVar("K")
V = TypeVar("V")


class DiscordTokenRejected(ConfigurationError):
    """Discord answered 401 to the configured token."""


class DiscordUnreachable(PersonaeError):
    """Discord's API could not be reached (or answered with an error) while logging in."""


# What the bot needs in a channel: see it, read what came before, write there and in its threads.
INVITE_PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, send_messages_in_threads=True, read_message_history=True,
    attach_files=True, embed_links=True,  # the /mood picture and /character show's avatar
    manage_webhooks=True,  # characters speak through a channel webhook under their own name and avatar
)


def invite_url(application_id: int) -> str:
    """The link that adds the bot to a server with its slash commands and the permissions it needs."""
    return (
        f"https://discord.com/oauth2/authorize?client_id={application_id}"
        f"&scope=bot+applications.commands&permissions={INVITE_PERMISSIONS.value}"
    )


class DiscordConnectionLost(PersonaeError):
    """The gateway connection ended and discord.py will not reconnect (a fatal close code, or a crash)."""


def _where(data: Any) -> str:
    """The channel, guild and user of a gateway event's payload, for the log (never its content)."""
    if not isinstance(data, dict):
        return "a payload that is not an object"
    user = data.get("author") or data.get("user") or (data.get("member") or {}).get("user") or {}
    parts = [f"{name} {data.get(key)}" for name, key in (("channel", "channel_id"), ("guild", "guild_id"), ("id", "id")) if data.get(key)]
    if isinstance(user, dict) and user.get("id"):
        parts.append(f"user {user['id']}")
    return ", ".join(parts) or "no ids"


def guard_parsers(client: discord.Client) -> None:
    """Make every gateway event parser log and skip a payload it cannot read.

    discord.py runs the parsers inside its gateway loop: one malformed event (an interaction without
    a token, say) would otherwise end the connection, and with it the adapter.
    """
    parsers = client._connection.parsers  # the dict the gateway reads its parsers from

    def guarded(event: str, parse: Callable[[Any], None]) -> Callable[[Any], None]:
        def run(data: Any) -> None:
            try:
                parse(data)
            except Exception:
                log.exception("Discord sent a %s event that could not be read (%s); it was skipped", event, _where(data))

        return run

    for event, parse in list(parsers.items()):
        parsers[event] = guarded(event, parse)


# More than this many unreadable gateway frames within the window: the connection is given up (exit, restart).
UNREADABLE_LIMIT = 5
UNREADABLE_WINDOW_S = 60.0


def point_library_at(api_base: str, gateway_url: str | None) -> None:
    """Send discord.py's REST calls (webhooks and interactions included) and gateway to other servers."""
    discord.http.Route.BASE = api_base.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def intents(*, message_content: bool = True) -> discord.Intents:
    """Guilds, guild messages, DMs and (privileged) message content; nothing else."""
    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.guild_messages = True
    wanted.dm_messages = True
    wanted.message_content = message_content
    return wanted


class PersonaeClient(discord.Client):
    """Answers messages with the bound character's streamed reply; serves the slash commands."""

    def __init__(self, app: App, *, message_content: bool = True, guild_ready_timeout: float = 2.0, **options: Any) -> None:
        # A text-only bot: no warnings about missing voice libraries.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        super().__init__(
            intents=intents(message_content=message_content),
            allowed_mentions=NO_MENTIONS,
            chunk_guilds_at_startup=False,
            guild_ready_timeout=guild_ready_timeout,
            **options,
        )
        self.app = app
        self.plan: ShardPlan | None = None  # set on ShardedClient
        self.guild_ready_timeout = guild_ready_timeout
        self.tree = CommandTree(self)
        for command in build_commands():
            self.tree.add_command(command)
        self._rooms: dict[int, Room] = {}
        self._typing: dict[int, Typing] = {}
        # conversation -> (reply id, the messages showing it): the newest reply with a button
        self._offers: dict[str, tuple[int, list[Handle]]] = {}
        # Where replies are written: each channel's webhook (the character's name and avatar) or the bot.
        self.webhooks = Webhooks(self, enabled=app.settings.discord_webhooks)
        self.avatars = AvatarLinks(self, app.settings.discord_avatar_channel, app.store.characters.avatar)
        self.proxies = Proxies()
        self._told_about_attachments: dict[str, None] = {}
        self._recovery: asyncio.Task[None] | None = None
        self._handling: set[asyncio.Task[Any]] = set()  # on_message handlers in progress
        self._arrivals = KeyedLocks()  # one person's messages in a channel, stored in arrival order
        guard_parsers(self)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        """An event handler raised: log it with where it happened, and go on with the next event."""
        where = ""
        for arg in args:
            channel = getattr(arg, "channel_id", None) or getattr(getattr(arg, "channel", None), "id", None)
            user = getattr(getattr(arg, "author", None) or getattr(arg, "user", None), "id", None)
            if channel or user:
                where = f" (channel {channel}, user {user})"
                break
        log.exception("the Discord %s handler failed%s; the adapter goes on", event_method, where)

    async def setup_hook(self) -> None:
        if self.application_id is not None:
            log.info("Discord: invite the bot with %s", invite_url(self.application_id))
        self.add_dynamic_items(RegenerateButton)
        await self.prepare_shards()
        if self.plan is not None and not self.plan.syncs_commands():
            log.info("Discord: the slash commands are synced by the process running shard 0, not this one")
            return
        try:
            await sync_commands(self.tree, self.app.settings)
        except discord.HTTPException as exc:
            log.error("could not sync the slash commands with Discord (%s); the old ones stay", exc)

    async def prepare_shards(self) -> None:
        """Sharded clients learn the shard count here when it is Discord's recommendation."""

    async def on_ready(self) -> None:
        log.info("Discord: logged in as %s (%s), in %d servers", self.user, getattr(self.user, "id", "?"), len(self.guilds))
        if self._recovery is None:
            self._recovery = asyncio.create_task(keep_recovering(
                self.app.engine, Platform.DISCORD, self.deliver_recovered, sweep_s=sweep_every(self.app.settings, self.app.cache)
            ))

    async def close(self) -> None:
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
        await super().close()

    async def deliver_recovered(self, turn: RecoveredTurn) -> None:
        """Show the answer to a message a crash left unanswered: written over the half-shown reply
        if there is one, else as a reply to the message."""
        intake = turn.intake
        channel_id = int(intake.conversation.channel_id)
        channel = self.get_channel(channel_id) or await self.fetch_channel(channel_id)
        assert isinstance(channel, discord.abc.Messageable)
        deltas = aiter(turn.reply)
        first = await anext(deltas, None)
        if first is None:
            return
        shown: discord.Message | None = None
        if turn.shown_in:
            try:
                shown = await channel.fetch_message(int(turn.shown_in))
            except discord.NotFound:
                shown = None  # deleted meanwhile: the answer comes as a new message
        if shown is not None and turn.reply.status is ReplyStatus.NOTICE:
            # Too late to answer: the half-shown reply is marked, not left dangling.
            place = await self.webhooks.place_of(shown, None)
            await place.handle(shown.id).edit(content=(shown.content + NOTICE_INTERRUPTED)[:MESSAGE_LIMIT], allowed_mentions=NO_MENTIONS)
            return
        reference = discord.MessageReference(
            message_id=int(intake.platform_message_id or 0), channel_id=channel_id, fail_if_not_exists=False
        )
        reply = turn.reply
        done = asyncio.Event()
        # A character's answer to another character (trigger conversation) is nobody's to regenerate.
        offer = not is_character_user(intake.conversation.user_id)

        def button() -> discord.ui.View | None:
            if offer and done.is_set() and reply.conversation is not None and reply.reply_message_id is not None:
                return regenerate_view(reply.conversation, reply.reply_message_id)
            return None

        if shown is not None:
            place: Place = await self.webhooks.place_of(shown, await self._identity(reply))
        else:
            place = await self._place_for(channel, reply)
        shown_messages, has_button = await self._stream(
            _ended(_chain(first, deltas), done),
            channel,
            place,
            send_first=lambda text, **kw: place.send(text, reference=reference, **kw),
            reuse=[place.handle(shown.id)] if shown is not None else None,
            button=button,
            halted=lambda: turn.reply.status is ReplyStatus.LOST,
        )
        if reply.reply_message_id is not None and reply.conversation is not None and shown_messages.handles:
            await self._move_button(
                reply.conversation, reply.reply_message_id, shown_messages.handles, channel, has_button=has_button, offer=offer,
            )

    # -- chat ---------------------------------------------------------------------------------

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        """Someone deleted the newest reply of a conversation: it is taken back, and so is what it
        did to the character's feelings. A person's message deleted before it was answered (a proxy
        deletes the original it copied) is not answered."""
        self.proxies.deleted(payload.channel_id, payload.message_id)
        for key, (reply_id, shown) in list(self._offers.items()):
            if payload.message_id not in [h.id for h in shown]:
                continue
            character_id, platform, channel_id, user_id = key.split(":", 3)
            conversation = ConversationKey(int(character_id), platform, channel_id, user_id)
            try:
                if await self.app.engine.delete_reply(conversation, reply_id):
                    self._offers.pop(key, None)
            except Exception:
                log.exception("could not take back deleted reply %s", reply_id)
            self.dispatch("reply_deleted", payload.message_id)
            return

    async def finish_handling(self) -> None:
        """Wait for the messages being handled (their replies shown to the end)."""
        while self._handling:
            await asyncio.gather(*list(self._handling), return_exceptions=True)

    async def on_message(self, message: discord.Message) -> None:
        reply: Reply | None = None
        task = asyncio.current_task()
        if task is not None:
            self._handling.add(task)
            task.add_done_callback(self._handling.discard)
        try:
            assert self.user is not None
            event = self._event_of(message)
            if event is not None:
                original = self.proxies.arrived(message, event.addressed) if str(message.author.id) == event.user_id else None
                accepted = await self._store_on_arrival(event)
                if not await self.proxies.answer_original(original, message.guild.id if message.guild else None):
                    # A proxy copied (or someone deleted) it: the copy is answered instead, this never.
                    await self.app.engine.discard(event)
                    return
                if accepted is not None and accepted.status is MessageStatus.PENDING and self.room_for(message.channel).full():
                    await self._too_busy(event)
                    return
                reply = self.app.engine.handle(event)
                await self.answer(message, event, reply)
        except Exception as exc:
            observe.metrics.error("adapter", exc)
            log.exception("failed to answer message %s in channel %s", message.id, message.channel.id)
        finally:
            self.dispatch("turn_finished", message, reply)

    async def _too_busy(self, event: ChatEvent) -> None:
        """The channel's line of replies waiting to be written is longer than PERSONAE_DELIVERY_MAX_WAIT_S:
        the message is settled unanswered (no restart answers it later) and logged, not queued."""
        room = self.room_for_id(int(event.channel_id))
        await self.app.engine.discard(event)
        log.warning(
            "dropped message %s in Discord channel %s: %d replies already wait about %.0f s to be written "
            "(PERSONAE_DELIVERY_MAX_WAIT_S=%.0f)",
            event.message_id, event.channel_id, room.waiting, room.expected_wait(), room.max_wait_s,
        )

    def _event_of(self, message: discord.Message) -> ChatEvent | None:
        """The event of a person's message, or of a proxy's copy of one (as that person's); None for
        the rest: bots, the bot's own webhook, a webhook message that copies nobody's message."""
        assert self.user is not None
        if message.webhook_id is not None:
            if self.webhooks.ours(message):
                return None
            original = self.proxies.copy_of(message)
            if original is None:
                return None
            return proxied_event(message, self.user, original.author_id, original.addressed, self.webhooks.ours)
        return chat_event(message, self.user, self.webhooks.ours)

    async def _identity(self, reply: Reply) -> Identity | None:
        """The name and avatar the reply's character speaks with (None: no character, the bot's own)."""
        if reply.character is None:
            return None
        return Identity(reply.character.name, await self.avatar_url(reply))

    async def _place_for(self, channel: discord.abc.Messageable, reply: Reply) -> Place:
        """Where ``reply`` is written in ``channel``: the character's webhook, or the bot for a notice
        (no character; or the model server failed before any text: not the character's words)."""
        if reply.character is None or reply.status in (ReplyStatus.FAILED, ReplyStatus.NOTICE):
            return ChannelPlace(channel)
        try:
            return await self.webhooks.place(channel, reply.character, await self.avatar_url(reply))
        except Exception:  # noqa: BLE001 - whatever the webhook lookup hit, the reply still goes out
            log.exception("Discord: could not pick a webhook in channel %s; the bot writes the reply", getattr(channel, "id", "?"))
            return ChannelPlace(channel)

    async def avatar_url(self, reply: Reply) -> str | None:
        """The link of the character's avatar for its webhook messages (None: Discord's default picture)."""
        if reply.character is None or not self.webhooks.enabled:
            return None
        try:
            return await self.avatars.url(reply.character)
        except Exception:  # noqa: BLE001 - a picture is never worth a reply
            log.exception("Discord: could not get the avatar link of %s", reply.character.name)
            return None

    async def _store_on_arrival(self, event: ChatEvent) -> Any:
        """Store the message (pending) before it waits behind the person's earlier ones: if this
        process dies meanwhile, another replica (or the restart) answers it; Discord never sends it
        again. One person's messages are stored in the order they came."""
        async with self._arrivals.hold(f"{event.channel_id}:{event.user_id}"):
            try:
                return await self.app.engine.accept(event)
            except Exception:  # noqa: BLE001 - the database's own errors: handle stores it again, or says so
                log.debug("storing Discord message %s on arrival failed", event.message_id, exc_info=True)
                return None

    async def answer(self, message: discord.Message, event: ChatEvent, reply: Reply) -> None:
        """Show the Engine's reply to ``message``: typing until its first text is written, then a send
        and the edits the channel can spare; then, with trigger ``conversation``, the answers of the
        characters it names (``_follow_ups``)."""
        channel = message.channel
        finished = asyncio.Event()

        def button() -> discord.ui.View | None:
            # Known once the Engine's iteration ended: the stored reply's id goes into the button.
            if finished.is_set() and reply.conversation is not None and reply.reply_message_id is not None:
                return regenerate_view(reply.conversation, reply.reply_message_id)
            return None

        shown, has_button = await self._show(
            reply, channel, self._deltas(reply, message, finished), reference=message.to_reference(fail_if_not_exists=False),
            typing=await self._may_answer(event), button=button,
        )
        if reply.status is ReplyStatus.NO_CHARACTER:
            await message.reply(await no_character_hint(self.app, event), allowed_mentions=NO_MENTIONS)
        elif reply.reply_message_id is not None and reply.conversation is not None and shown.handles:
            await self._move_button(
                reply.conversation, reply.reply_message_id, shown.handles, channel, has_button=has_button,
            )
            await self._follow_ups(reply, shown.handles, channel)

    async def _show(
        self,
        reply: Reply,
        channel: discord.abc.Messageable,
        deltas: AsyncIterable[str],
        *,
        reference: discord.MessageReference,
        typing: bool,
        button: Callable[[], discord.ui.View | None] = lambda: None,
    ) -> tuple[StreamedMessage[Handle], int | None]:
        """Stream a new reply into ``channel`` as its character (``_place_for``), its first message
        in reply to ``reference``: in the room's line of replies (and with "typing…" if ``typing``)
        until its first text is written. Returns ``_stream``'s rendering and button message."""
        room = self.room_for(channel)
        leave = room.enter()
        stop_typing = self.typing_for(channel).hold() if typing else (lambda: None)
        place = _LazyPlace(lambda: self._place_for(channel, reply))

        async def send_first(text: str, **kw: Any) -> Handle:
            sent = await place.send(text, reference=reference, **kw)
            if reply.intake is not None and reply.status is ReplyStatus.PENDING:
                # A crash from here on leaves this message half-shown: recovery writes the answer over it.
                await self.app.engine.showing(reply.intake, str(sent.id))
            return sent

        def on_first() -> None:
            leave()
            stop_typing()
            first_shown(reply, "discord")

        try:
            return await self._stream(
                deltas, channel, place, send_first=send_first, button=button, on_first=on_first,
                halted=lambda: reply.status is ReplyStatus.LOST,
            )
        finally:
            leave()
            stop_typing()

    async def _follow_ups(self, reply: Reply, handles: list[Handle], channel: discord.abc.Messageable) -> None:
        """With trigger ``conversation``: the character a reply names answers it (``Engine.follow_up``),
        then the one that answer names, at most PERSONAE_CONVERSATION_TURNS in a row. Each answer is
        written as its character (its webhook; the bot where there is none), in reply to the last
        message of the line it answers, in the room's line like any reply. None starts while the
        channel's line of replies waits past PERSONAE_DELIVERY_MAX_WAIT_S (the people come first)."""
        while handles:
            room = self.room_for(channel)
            if room.full():
                log.info(
                    "Discord channel %s is busy (%d replies waiting): the characters do not answer each other now",
                    getattr(channel, "id", "?"), room.waiting,
                )
                return
            try:
                answer = await self.app.engine.follow_up(reply, str(handles[-1].id))
            except Exception:  # noqa: BLE001 - the database's own errors: the reply itself was shown
                log.exception("Discord: could not store a character's answer to another in channel %s", getattr(channel, "id", "?"))
                return
            if answer is None:
                return
            reply = answer
            reference = discord.MessageReference(
                message_id=handles[-1].id, channel_id=channel.id, fail_if_not_exists=False  # type: ignore[attr-defined]
            )
            shown, _ = await self._show(reply, channel, greeting_first(reply), reference=reference, typing=True)
            if reply.reply_message_id is None or reply.conversation is None or not shown.handles:
                return
            # No Regenerate button: nobody's own exchange (its "person" is the other character).
            await self._move_button(reply.conversation, reply.reply_message_id, shown.handles, channel, has_button=None, offer=False)
            handles = shown.handles

    async def _may_answer(self, event: ChatEvent) -> bool:
        """Whether the Engine will probably answer (then typing is shown); the Engine still decides."""
        binding = await self.app.engine.binding_for(event)
        return binding is not None and (binding.trigger is Trigger.ALL or event.addressed or event.private)

    async def _deltas(self, reply: Reply, message: discord.Message, finished: asyncio.Event) -> AsyncIterator[str]:
        """The reply's deltas (the greeting first, on first contact); once per conversation, a note that attachments were not read."""
        said = False
        async for delta in greeting_first(reply):
            said = True
            yield delta
        finished.set()
        if said and message.attachments and reply.conversation is not None:
            key = reply.conversation.cache_key()
            if key not in self._told_about_attachments:
                _remember(self._told_about_attachments, key, None)
                yield ATTACHMENT_NOTE

    async def _stream(
        self,
        deltas: AsyncIterable[str],
        channel: discord.abc.Messageable,
        place: Place,
        *,
        send_first: Callable[..., Awaitable[Handle]],
        reuse: list[Handle] | None = None,
        button: Callable[[], discord.ui.View | None] = lambda: None,
        on_first: Callable[[], None] | None = None,
        halted: Callable[[], bool] | None = None,
    ) -> tuple[StreamedMessage[Handle], int | None]:
        """Render ``deltas`` in ``place`` (paced by ``channel``'s budget): ``reuse``'d messages are
        edited first, then ``send_first``, then plain sends.

        ``StreamedMessage`` decides when to write and what; these writes only say how. The write
        that completes the reply's last message also carries ``button()`` (no edit of its own).
        Returns the rendering and the id of the message that got the button.
        """
        reuse = list(reuse or ())
        sent = 0
        has_button: int | None = None
        typing = self.typing_for(channel)

        def extras(final: bool) -> dict[str, Any]:
            view = button() if final else None
            return {"allowed_mentions": NO_MENTIONS} if view is None else {"allowed_mentions": NO_MENTIONS, "view": view}

        async def send(text: str, *, final: bool = False) -> Handle:
            nonlocal sent, has_button
            sent += 1
            kw = extras(final)
            if reuse:
                target: Handle = reuse.pop(0)
                await target.edit(content=text, **kw)
            elif sent == 1:
                target = await send_first(text, **kw)
            else:
                target = await place.send(text, **kw)
            typing.nudge()  # a reply was written: Discord hides the bot's "typing…", which others may still need
            if "view" in kw:
                has_button = target.id
            return target

        async def edit(target: Handle, text: str, *, final: bool = False) -> None:
            nonlocal has_button
            kw = extras(final)
            await target.edit(content=text, **kw)
            if "view" in kw:
                has_button = target.id

        shown: StreamedMessage[Handle] = StreamedMessage(
            limit=MESSAGE_LIMIT, send=send, edit=edit, interval=EDIT_INTERVAL_S, room=self.room_for(channel),
            on_first=on_first, halted=halted, needs_final=lambda: button() is not None,
        )
        await shown.run(deltas)
        return shown, has_button

    def room_for(self, channel: discord.abc.Messageable) -> Room:
        """The room of one channel, shared by every reply shown in it: its send and edit buckets
        (separate on Discord), each following what discord.py learned of the bucket."""
        return self.room_for_id(channel.id)  # type: ignore[attr-defined]

    def room_for_id(self, channel_id: int) -> Room:
        room = self._rooms.get(channel_id)
        if room is None:
            if len(self._rooms) > _REMEMBERED:
                self._rooms.clear()  # losing old windows only risks a 429, which discord.py absorbs
            count, per = self.app.settings.discord_channel_writes, self.app.settings.discord_channel_window_s
            sends = EditBudget(
                count, per, margin=WINDOW_MARGIN_S,
                follow=library_bucket(self.http, "POST", "/channels/{channel_id}/messages", channel_id),
            )
            edits = EditBudget(
                count, per, margin=WINDOW_MARGIN_S,
                follow=library_bucket(self.http, "PATCH", "/channels/{channel_id}/messages/{message_id}", channel_id),
            )
            room = self._rooms[channel_id] = Room(sends, edits, spare=1, max_wait_s=self.app.settings.delivery_max_wait_s)
        return room

    def typing_for(self, channel: discord.abc.Messageable) -> Typing:
        """One "typing…" per channel, kept up while any reply there waits for its first text."""
        channel_id = channel.id  # type: ignore[attr-defined]
        typing = self._typing.get(channel_id)
        if typing is None:
            if len(self._typing) > _REMEMBERED:
                self._typing = {k: t for k, t in self._typing.items() if t.holders > 0}
            typing = self._typing[channel_id] = Typing(lambda: _show_typing(channel), TYPING_EVERY_S)
        return typing

    # -- regenerate ---------------------------------------------------------------------------

    async def _move_button(
        self,
        conversation: ConversationKey,
        reply_id: int,
        handles: list[Handle],
        channel: discord.abc.Messageable,
        *,
        has_button: int | None,
        offer: bool = True,
    ) -> None:
        """Remember the reply as the conversation's newest; put the Regenerate button under its last
        message if its final write could not carry it (through the route that message needs: the
        webhook's or the channel's; either counts against the channel's edits). The previous reply
        keeps its button: pressed, it answers that only the newest reply can be regenerated (and
        loses it then), which costs no write in a busy channel. ``offer=False``: no button (a
        character's answer to another character, which no person may regenerate)."""
        _remember(self._offers, conversation.cache_key(), (reply_id, list(handles)))
        # A reply to one of these messages goes to this reply's character (a scene may have several).
        await self.app.engine.remember_shown(conversation, reply_id, [str(h.id) for h in handles])
        last = handles[-1]
        if offer and last.id != has_button:
            edits = self.room_for(channel).edits
            await edits.take(FINAL)
            try:
                write = last.edit(view=regenerate_view(conversation, reply_id))
            finally:
                edits.started()
            await write

    async def regenerate(self, interaction: discord.Interaction, conversation: ConversationKey, reply_id: int) -> None:
        """The author pressed Regenerate: stream a new reply into the messages that showed the old one."""
        await interaction.response.defer()
        thread = interaction.channel if isinstance(interaction.channel, discord.Thread) else None
        reply = self.app.engine.regenerate(
            conversation, interaction.user.display_name, reply_id,
            parent_channel_id=str(thread.parent_id) if thread is not None and thread.parent_id else None,
        )
        try:
            await self._regenerate(interaction, conversation, reply_id, reply)
        except Exception:
            log.exception("regenerating reply %s failed", reply_id)
            with contextlib.suppress(discord.HTTPException):
                await interaction.followup.send(FAILED, ephemeral=True)
        finally:
            self.dispatch("regenerate_finished", interaction, reply)

    async def _regenerate(
        self, interaction: discord.Interaction, conversation: ConversationKey, reply_id: int, reply: Reply
    ) -> None:
        pressed = interaction.message
        assert pressed is not None
        deltas = aiter(reply)
        first = await anext(deltas, None)
        # A delta that arrives once the status is final is a notice, not new text: keep the old reply.
        if first is None or reply.status in (ReplyStatus.FAILED, ReplyStatus.NOTICE):
            async for _ in deltas:
                pass
            if reply.status is ReplyStatus.NOT_FOUND:
                place = await self.webhooks.place_of(pressed, None)
                await place.handle(pressed.id).edit(view=None)
                await interaction.followup.send(GONE, ephemeral=True)
            elif reply.text:
                await interaction.followup.send(reply.text, ephemeral=True)
            return
        channel = pressed.channel
        # The pressed message's writer (the character's webhook, or the bot) writes the new text.
        place = await self.webhooks.place_of(pressed, await self._identity(reply))
        offer = self._offers.get(conversation.cache_key())
        ids = [h.id for h in offer[1]] if offer is not None and offer[0] == reply_id else [pressed.id]
        old = [place.handle(i) for i in ids]
        if pressed.webhook_id is not None and not place.webhook:
            # Written by a webhook that is gone (deleted in Discord): nobody can edit it any more.
            log.info("Discord: message %s was written by a deleted webhook; the new reply comes as a new message", pressed.id)
            place, old = await self._place_for(channel, reply), []
        done = asyncio.Event()

        def button() -> discord.ui.View | None:
            if done.is_set() and reply.reply_message_id is not None:
                return regenerate_view(conversation, reply.reply_message_id)
            return None

        shown, has_button = await self._stream(
            _ended(_chain(first, deltas), done), channel, place, send_first=place.send, reuse=old, button=button,
            halted=lambda: reply.status is ReplyStatus.LOST,
        )
        stale = old[len(shown.handles) :]
        for message in stale:
            try:
                await message.delete()
            except discord.HTTPException as exc:
                log.debug("could not delete a stale reply message: %s", exc)
        if reply.reply_message_id is not None and shown.handles:
            await self._move_button(conversation, reply.reply_message_id, shown.handles, channel, has_button=has_button)


class ShardedClient(PersonaeClient, discord.AutoShardedClient):
    """A PersonaeClient that runs a set of shards (PERSONAE_DISCORD_SHARDS of
    PERSONAE_DISCORD_SHARD_COUNT) over one gateway connection each."""

    def __init__(self, app: App, plan: ShardPlan, **options: Any) -> None:
        known = plan.count is not None
        super().__init__(
            app, shard_count=plan.count, shard_ids=list(plan.ids) if known and plan.ids is not None else None, **options
        )
        self.plan = plan

    async def prepare_shards(self) -> None:
        plan = self.plan
        assert plan is not None
        if plan.count is not None:
            runs = "all" if plan.ids is None else ", ".join(map(str, plan.ids))
            log.info("Discord: %d shard%s (PERSONAE_DISCORD_SHARD_COUNT); this process runs %s", plan.count, "" if plan.count == 1 else "s", runs)
            return
        count, _, _ = await self.http.get_bot_gateway()
        if plan.ids is None:
            return  # discord.py asks /gateway/bot itself and runs every shard
        outside = [i for i in plan.ids if i >= count]
        if outside:
            raise ConfigurationError(
                f"PERSONAE_DISCORD_SHARDS names shard {outside[0]}, but Discord recommends {count} shard"
                f"{'' if count == 1 else 's'} (0-{count - 1}): set PERSONAE_DISCORD_SHARD_COUNT to the count every replica uses"
            )
        self.shard_count, self.shard_ids = count, list(plan.ids)
        self.plan = ShardPlan(count, plan.ids)
        log.info("Discord: %d shards recommended; this process runs %s", count, ", ".join(map(str, plan.ids)))


def make_client(app: App, **options: Any) -> PersonaeClient:
    """The client PERSONAE_DISCORD_SHARD_COUNT and PERSONAE_DISCORD_SHARDS ask for: one unsharded
    connection when neither is set, else a ShardedClient."""
    plan = shard_plan(app.settings.discord_shard_count, app.settings.discord_shards)
    return PersonaeClient(app, **options) if plan is None else ShardedClient(app, plan, **options)


def _connected(client: PersonaeClient) -> bool:
    """For the heartbeat: every gateway connection of ``client`` is open and ready."""
    if not client.is_ready():
        return False
    if isinstance(client, discord.AutoShardedClient):
        shards = client.shards
        return bool(shards) and all(not shard.is_closed() for shard in shards.values())
    return client.ws is not None and client.ws.open


async def _show_typing(channel: discord.abc.Messageable) -> None:
    """Show "typing…" once (Discord shows it for 10 s, or until the bot writes in the channel)."""
    await channel._state.http.send_typing(channel.id)  # type: ignore[attr-defined]


def library_bucket(http: Any, method: str, path: str, channel_id: int) -> Callable[[int], tuple[float, int] | None]:
    """discord.py's own account of one route's rate limit in a channel, for ``EditBudget(follow=...)``.

    discord.py reads Discord's bucket headers (``X-RateLimit-Bucket``, ``-Limit``, ``-Remaining``,
    ``-Reset-After``) and keys its limits by bucket hash and channel: message sends (POST) and edits
    (PATCH) are separate buckets. Returns None until discord.py has seen the bucket's headers (the
    caller's own window is then the conservative fallback), else (wait, free) given ``unstarted``
    writes granted but not yet handed to discord.py.
    """
    route = discord.http.Route(method, path, channel_id=channel_id, message_id=0)

    def follow(unstarted: int) -> tuple[float, int] | None:
        try:
            key = route.key
            bucket = http._bucket_hashes.get(key)
            limit = http._buckets.get(f"{bucket or key}:{route.major_parameters}")
            if limit is None or limit.limit <= 1:
                return None  # not learned yet
            now = limit._loop.time()
            expired = limit.expires is not None and now > limit.expires
            free = (limit.limit if expired else limit.remaining) - unstarted
            if free > 0:
                return 0.0, free
            if limit.expires is None or expired:
                return LIBRARY_POLL_S, 0  # requests in flight: their answers will say
            return limit.expires - now + LIBRARY_POLL_S, 0
        except (AttributeError, TypeError):  # another discord.py inside: our own window alone
            return None

    return follow


async def _ended(deltas: AsyncIterator[str], done: asyncio.Event) -> AsyncIterator[str]:
    async for delta in deltas:
        yield delta
    done.set()


class _LazyPlace:
    """A Place picked at the first write, once the Engine has said which character answers."""

    def __init__(self, pick: Callable[[], Awaitable[Place]]) -> None:
        self._pick = pick
        self._place: Place | None = None
        self._picking = asyncio.Lock()

    @property
    def webhook(self) -> bool:
        return self._place is not None and self._place.webhook

    async def _get(self) -> Place:
        async with self._picking:
            if self._place is None:
                self._place = await self._pick()
            return self._place

    async def send(self, text: str, *, reference: discord.MessageReference | None = None, **fields: Any) -> Handle:
        return await (await self._get()).send(text, reference=reference, **fields)

    def handle(self, message_id: int) -> Handle:
        assert self._place is not None, "a message is named only after the first write"
        return self._place.handle(message_id)


async def _chain(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    yield first
    async for delta in rest:
        yield delta


def _remember(store: dict[K, V], key: K, value: V) -> None:
    """Insert into a dict kept to the newest ``_REMEMBERED`` entries."""
    store.pop(key, None)
    store[key] = value
    if len(store) > _REMEMBERED:
        del store[next(iter(store))]


# -- running --------------------------------------------------------------------------------


async def run_discord(app: App, *, client: PersonaeClient | None = None, stop: asyncio.Event | None = None) -> None:
    """Run the Discord adapter until ``stop`` is set (or cancelled), then close the connection; once
    ``stop`` is set, the messages being answered finish first.

    Raises ``DiscordTokenRejected`` (one line, no secret in it) when Discord refuses the token. When
    the message content intent is not enabled for the application, it reconnects without it (the
    bot then only sees mentions, replies to it, and DMs).
    """
    settings = app.settings
    if settings.discord_token is None:
        raise DiscordTokenRejected("PERSONAE_DISCORD_TOKEN is not set")
    token = settings.discord_token.get_secret_value()
    point_library_at(settings.discord_api_base, settings.discord_gateway_url)
    client = client or make_client(app)
    if stop is not None:
        adapter = asyncio.create_task(run_discord(app, client=client))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([adapter, stopping], return_when=asyncio.FIRST_COMPLETED)
            if adapter.done():
                return adapter.result()
            await client.finish_handling()
        finally:
            stopping.cancel()
            adapter.cancel()
            await asyncio.gather(adapter, stopping, return_exceptions=True)
        return None
    running = [client]

    def connected() -> bool:  # for the heartbeat: the gateway connections are open and ready
        return _connected(running[-1])

    heartbeat.watch("discord", connected, settings.heartbeat_file)
    try:
        await _run(client, token)
    except discord.PrivilegedIntentsRequired:
        log.warning(
            "Discord refused the message content intent: enable it for this bot in the developer portal "
            "(Bot > Privileged Gateway Intents). Until then the bot only sees mentions, replies to it and DMs."
        )
        running.append(make_client(app, message_content=False, guild_ready_timeout=client.guild_ready_timeout))
        await _run(running[-1], token)
    finally:
        heartbeat.unwatch("discord")


async def _run(client: PersonaeClient, token: str) -> None:
    async with client:
        # Logging in is the one step where a network failure means "wrong setting or no network": say
        # so in a line. Once connected, discord.py reconnects by itself.
        try:
            await client.login(token)
        except discord.LoginFailure:
            raise DiscordTokenRejected(
                "PERSONAE_DISCORD_TOKEN is set but Discord rejected it (401): copy the token again from the "
                "developer portal (Bot > Reset Token)"
            ) from None
        except (OSError, asyncio.TimeoutError) as exc:
            raise DiscordUnreachable(
                f"cannot reach Discord at {discord.http.Route.BASE} ({_reason(exc)}); check the network "
                "(or PERSONAE_DISCORD_API_BASE)"
            ) from None
        except discord.HTTPException as exc:
            raise DiscordUnreachable(
                f"Discord at {discord.http.Route.BASE} answered {exc.status} while logging in; try again later "
                "(or check PERSONAE_DISCORD_API_BASE)"
            ) from None
        unreadable: list[float] = []  # when the gateway sent a frame discord.py could not read
        while True:
            try:
                await client.connect()
                return
            except discord.ConnectionClosed as exc:
                # discord.py reconnects by itself after every close it can recover from; this one it cannot.
                raise DiscordConnectionLost(
                    f"the Discord gateway closed the connection for good (code {exc.code}{': ' + exc.reason if exc.reason else ''})"
                ) from exc
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                # A frame that is not JSON, or not of the shape discord.py reads, ends its connection
                # loop: connect again (a fresh session), unless it keeps happening.
                now = time.monotonic()
                unreadable = [t for t in unreadable if now - t < UNREADABLE_WINDOW_S] + [now]
                if len(unreadable) > UNREADABLE_LIMIT:
                    raise DiscordConnectionLost(
                        f"the Discord gateway kept sending frames that could not be read ({type(exc).__name__}: {exc})"
                    ) from exc
                log.warning("the Discord gateway sent a frame that could not be read (%s: %s); connecting again", type(exc).__name__, exc)
                if client.ws is not None:
                    with contextlib.suppress(Exception):
                        await client.ws.close(code=4000)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, ConnectionRefusedError) or "Connect call failed" in text or "refused" in text.lower():
        return "connection refused"
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    return text.splitlines()[0] if text else type(exc).__name__
