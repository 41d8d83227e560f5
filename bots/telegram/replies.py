"""Showing engine replies in Telegram chats: drafts in private chats, send-then-edit in groups.

Model text goes out with no parse mode (it is not Markdown or HTML we checked), cut into messages
of at most 4,096 characters. The newest reply carries a "regenerate" button for its author (a
character's answer to another character has none: no person owns it).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import AsyncIterator, Awaitable, Callable

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity, ReplyParameters
from telegram.constants import ChatAction, ChatType, MessageLimit
from telegram.error import BadRequest, TelegramError

from bots.streaming import FINAL, EditBudget, Room, StreamedMessage, Typing, first_shown, greeting_first
from bots.telegram.drafts import DraftStream
from bots.telegram.updates import Recent
from core.engine import Reply, ReplyStatus
from core.events import ConversationKey, Platform, is_character_user
from core.text import split_message

log = logging.getLogger(__name__)

LIMIT = MessageLimit.MAX_TEXT_LENGTH  # 4,096 characters
REGENERATE = "regen"
TYPING_EVERY_S = 4.5  # Telegram shows "typing…" for 5 s per sendChatAction
WINDOW_MARGIN_S = 0.25  # on top of a chat's windows: requests reach Telegram a little after they are counted


async def headed(reply: Reply, deltas: AsyncIterator[str]) -> AsyncIterator[str]:
    """``deltas``, opened by the character's name on a line of its own when several characters
    share this bot in the chat (``Reply.heading``: known once the reply's first text comes)."""
    first = True
    async for delta in deltas:
        if first:
            first = False
            if reply.heading:
                yield reply.heading + "\n"
        yield delta


def heading_entities(reply: Reply, text: str) -> list[MessageEntity] | None:
    """The name line in bold, when ``text`` opens with the reply's heading (sent as an entity: the
    model's text itself goes out with no parse mode)."""
    heading = reply.heading
    if not heading or not text.startswith(heading + "\n"):
        return None
    return [MessageEntity(MessageEntity.BOLD, 0, len(heading.encode("utf-16-le")) // 2)]


def regenerate_data(reply_message_id: int, conversation: ConversationKey) -> str:
    """Callback data of a regenerate button (the chat is the message's own): well under 64 bytes."""
    return f"{REGENERATE}:{reply_message_id}:{conversation.character_id}:{conversation.user_id}"


def parse_regenerate_data(data: str, chat_id: int) -> tuple[int, ConversationKey] | None:
    """The reply id and conversation a regenerate button stands for, or None if the data is not one
    (an old button of a character's answer to another carried ``regen:ID:CHAR:character:N``)."""
    try:
        kind, reply_id, character_id, user_id = data.split(":")
        if kind != REGENERATE:
            return None
        return int(reply_id), ConversationKey(int(character_id), Platform.TELEGRAM.value, str(chat_id), user_id)
    except ValueError:
        return None


def is_not_modified(exc: BadRequest) -> bool:
    """Telegram's answer to an edit that changes nothing: the message already shows that text."""
    return "not modified" in exc.message.lower()


async def prepend(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    if first:
        yield first
    async for delta in rest:
        yield delta


class Replies:
    """Renders replies at the pace Telegram allows; one instance per bot, shared by all chats.

    Private chats stream through drafts until the Bot API refuses one; from then on (for the life of
    the process) they stream like groups: a message, then edits at most once per ``edit_interval``.
    Every chat is a ``Room`` with one bucket for sends and edits alike: one per ``chat_interval`` in
    any chat, and in a group also ``group_per_minute``.
    """

    def __init__(
        self,
        bot: Bot,
        *,
        edit_interval: float = 1.0,
        draft_interval: float = 1.0,
        group_per_minute: int = 20,
        chat_interval: float = 1.0,
        max_wait_s: float = 30.0,
    ) -> None:
        self.bot = bot
        self.edit_interval = edit_interval
        self.draft_interval = draft_interval
        self.group_per_minute = group_per_minute
        self.chat_interval = chat_interval
        self.max_wait_s = max_wait_s
        self.drafts_available = True
        self._rooms: Recent[int, Room] = Recent(10_000)
        self._drafts: Recent[int, EditBudget] = Recent(10_000)
        self._typing: Recent[tuple[int, int | None], Typing] = Recent(10_000)
        self._pieces: Recent[tuple[int, int], list[int]] = Recent(10_000)  # (chat, reply id) -> message ids
        self._draft_ids = itertools.count(1)

    # -- entry points -----------------------------------------------------------------------

    async def answer(
        self,
        reply: Reply,
        chat_id: int,
        chat_type: str,
        *,
        reply_to: int | None = None,
        thread_id: int | None = None,
        shown: Callable[[int], Awaitable[None]] | None = None,
        reuse: list[int] | None = None,
        typing: bool = False,
    ) -> list[int]:
        """Stream ``reply`` into the chat; returns the ids of the messages it ended up in.

        ``shown(message_id)`` is told of the first message sent while the reply is still streaming
        (a crash would leave it half-shown); ``reuse``: messages to write over first (that half).
        ``typing``: show "typing…" until the first text is written (a turn may wait for the model
        budget, then for the chat's turn to write).
        """
        room = self.room(chat_id, private=chat_type == ChatType.PRIVATE)
        leave = room.enter()
        stop_typing = self._typing_in(chat_id, thread_id).hold() if typing else (lambda: None)

        def first() -> None:
            leave()
            stop_typing()
            first_shown(reply, "telegram")

        try:
            deltas = greeting_first(reply)
            if chat_type == ChatType.PRIVATE and self.drafts_available and not reuse:
                ids = await self._through_drafts(reply, deltas, chat_id, first)
            else:
                ids = await self._through_edits(
                    reply, deltas, chat_id, reply_to=reply_to, thread_id=thread_id, reuse=reuse, shown=shown, first=first
                )
        finally:
            leave()
            stop_typing()
        self._remember(reply, chat_id, ids)
        return ids

    async def replace(
        self, reply: Reply, deltas: AsyncIterator[str], chat_id: int, chat_type: str, *, reply_message_id: int, shown_in: int
    ) -> list[int]:
        """Stream a regenerated reply over the messages of reply ``reply_message_id`` (``shown_in`` has its button)."""
        old = self._pieces.get((chat_id, reply_message_id))
        reuse = list(old) if old and old[-1] == shown_in else [shown_in]
        ids = await self._through_edits(reply, deltas, chat_id, reuse=reuse)
        for leftover in reuse[len(ids) :]:
            try:
                await self.bot.delete_message(chat_id, leftover)
            except TelegramError as exc:
                log.info("could not delete an old piece of a regenerated reply: %s", exc)
        self._remember(reply, chat_id, ids)
        return ids

    def room(self, chat_id: int, *, private: bool) -> Room:
        """The chat's room: one bucket for its sends and edits (a group's ~20 a minute, 1 a second in any chat)."""
        room = self._rooms.get(chat_id)
        if room is None:
            second = (1, self.chat_interval)
            if private:
                bucket = EditBudget(*second, margin=WINDOW_MARGIN_S)
            else:
                bucket = EditBudget(self.group_per_minute, 60.0, also=(second,), margin=WINDOW_MARGIN_S)
            room = Room(bucket, spare=0 if private else max(1, self.group_per_minute // 4), max_wait_s=self.max_wait_s)
            self._rooms.put(chat_id, room)
        return room

    def _typing_in(self, chat_id: int, thread_id: int | None) -> Typing:
        typing = self._typing.get((chat_id, thread_id))
        if typing is None:
            typing = Typing(
                lambda: self.bot.send_chat_action(chat_id, ChatAction.TYPING, message_thread_id=thread_id), TYPING_EVERY_S
            )
            self._typing.put((chat_id, thread_id), typing)
        return typing

    # -- how -------------------------------------------------------------------------------

    async def _through_drafts(self, reply: Reply, deltas: AsyncIterator[str], chat_id: int, first: Callable[[], None]) -> list[int]:
        draft_id = next(self._draft_ids)

        async def send_draft(text: str) -> object:
            sent = await self.bot.send_message_draft(chat_id, draft_id, text)
            first()
            return sent

        budget = self._drafts.get(chat_id)
        if budget is None:
            budget = EditBudget(1, self.draft_interval)
            self._drafts.put(chat_id, budget)
        stream = DraftStream(send_draft=send_draft, budget=budget, limit=LIMIT)
        if not await stream.run(deltas):
            log.warning("Telegram refused a message draft; private replies are shown by editing messages from now on")
            self.drafts_available = False
            return await self._through_edits(reply, prepend(stream.text, deltas), chat_id, first=first)
        text = stream.text.strip()
        if not text or reply.status is ReplyStatus.LOST:
            return []
        pieces = split_message(text, LIMIT)
        ids = []
        room = self.room(chat_id, private=True)
        for i, piece in enumerate(pieces):
            markup = self._button(reply) if i == len(pieces) - 1 else None
            await room.sends.take(FINAL)
            room.sends.started()
            sent = await self.bot.send_message(chat_id, piece, reply_markup=markup)
            first()
            ids.append(sent.message_id)
        return ids

    async def _through_edits(
        self,
        reply: Reply,
        deltas: AsyncIterator[str],
        chat_id: int,
        *,
        reply_to: int | None = None,
        thread_id: int | None = None,
        reuse: list[int] | None = None,
        shown: Callable[[int], Awaitable[None]] | None = None,
        first: Callable[[], None] | None = None,
    ) -> list[int]:
        """Send, then edit as the chat's room allows; ``reuse``: messages to write over first.
        ``StreamedMessage`` decides when and what; these writes say how (the final one carries the button)."""
        reusable = list(reuse or [])
        deltas = headed(reply, deltas)  # the name line, when several characters share this bot here
        finished = False
        typing = self._typing.get((chat_id, thread_id))

        async def send(text: str, *, final: bool = False) -> int:
            if reusable:
                message_id = reusable.pop(0)
                await edit(message_id, text, final=final)
                return message_id
            opening = not streamed.handles
            sent = await self.bot.send_message(
                chat_id,
                text,
                reply_parameters=ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to and opening else None,
                message_thread_id=thread_id,
                reply_markup=self._button(reply) if final else None,
                entities=heading_entities(reply, text),
            )
            if typing is not None:
                typing.nudge()  # the bot wrote: Telegram hides "typing…", which others may still need
            if opening and shown is not None and not finished:
                await shown(sent.message_id)
            return sent.message_id

        async def edit(message_id: int, text: str, *, final: bool = False) -> None:
            try:
                await self.bot.edit_message_text(
                    text, chat_id, message_id, reply_markup=self._button(reply) if final else None,
                    entities=heading_entities(reply, text),
                )
            except BadRequest as exc:
                if not is_not_modified(exc):
                    log.warning("could not edit a reply in chat %s: %s", chat_id, exc)

        async def tracked() -> AsyncIterator[str]:
            nonlocal finished
            async for delta in deltas:
                yield delta
            finished = True

        streamed: StreamedMessage[int] = StreamedMessage(
            limit=LIMIT,
            send=send,
            edit=edit,
            interval=self.edit_interval,
            room=self.room(chat_id, private=chat_id > 0),
            on_first=first,
            halted=lambda: reply.status is ReplyStatus.LOST,
            needs_final=lambda: self._button(reply) is not None,
        )
        return await streamed.run(tracked())

    # -- helpers ---------------------------------------------------------------------------

    def _button(self, reply: Reply) -> InlineKeyboardMarkup | None:
        """The Regenerate button of a stored reply to a person; none for a character's answer to
        another (trigger ``conversation``): no person owns that exchange."""
        if reply.reply_message_id is None or reply.conversation is None or is_character_user(reply.conversation.user_id):
            return None
        data = regenerate_data(reply.reply_message_id, reply.conversation)
        return InlineKeyboardMarkup([[InlineKeyboardButton("↻ Regenerate", callback_data=data)]])

    def _remember(self, reply: Reply, chat_id: int, ids: list[int]) -> None:
        if reply.reply_message_id is not None and ids:
            self._pieces.put((chat_id, reply.reply_message_id), ids)
