"""Showing engine replies in Telegram chats: drafts in private chats, send-then-edit in groups.

Model text goes out with no parse mode (it is not Markdown or HTML we checked), cut into messages
of at most 4,096 characters. The newest reply carries a "regenerate" button for its author.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import AsyncIterator, Awaitable, Callable

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity, ReplyParameters
from telegram.constants import ChatAction, ChatType, MessageLimit
from telegram.error import BadRequest, TelegramError

from bots.streaming import EditBudget, StreamedMessage, first_shown, greeting_first
from bots.telegram.drafts import DraftStream
from bots.telegram.updates import Recent
from core.engine import Reply, ReplyStatus
from core.events import ConversationKey, Platform
from core.text import split_message

log = logging.getLogger(__name__)

LIMIT = MessageLimit.MAX_TEXT_LENGTH  # 4,096 characters
REGENERATE = "regen"
TYPING_EVERY_S = 4.5  # Telegram shows "typing…" for 5 s per sendChatAction


async def typing_until_first(
    deltas: AsyncIterator[str], show: Callable[[], Awaitable[object]], every_s: float = TYPING_EVERY_S
) -> AsyncIterator[str]:
    """``deltas``, with "typing…" kept up (``show`` every ``every_s``) until the first one arrives."""

    async def keep_typing() -> None:
        while True:
            try:
                await show()
            except TelegramError as exc:
                log.debug("typing indicator failed: %s", exc)
                return
            await asyncio.sleep(every_s)

    typing = asyncio.get_running_loop().create_task(keep_typing())
    try:
        async for delta in deltas:
            typing.cancel()
            yield delta
    finally:
        typing.cancel()


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
    """The reply id and conversation a regenerate button stands for, or None if the data is not one."""
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
    Each group chat has one ``EditBudget`` of ``group_per_minute`` sends and edits.
    """

    def __init__(
        self,
        bot: Bot,
        *,
        edit_interval: float = 1.0,
        draft_interval: float = 1.0,
        group_per_minute: int = 20,
    ) -> None:
        self.bot = bot
        self.edit_interval = edit_interval
        self.draft_interval = draft_interval
        self.group_per_minute = group_per_minute
        self.drafts_available = True
        self._budgets: Recent[int, EditBudget] = Recent(10_000)
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
        ``typing``: show "typing…" until the first text (a turn may wait for the model budget).
        """
        deltas = greeting_first(reply, lambda text: self.bot.send_message(chat_id, text, message_thread_id=thread_id), "telegram")
        if typing:
            deltas = typing_until_first(
                deltas, lambda: self.bot.send_chat_action(chat_id, ChatAction.TYPING, message_thread_id=thread_id)
            )
        if chat_type == ChatType.PRIVATE and self.drafts_available and not reuse:
            ids = await self._through_drafts(reply, deltas, chat_id)
        else:
            group = chat_type != ChatType.PRIVATE
            ids = await self._through_edits(
                reply, deltas, chat_id, group=group, reply_to=reply_to, thread_id=thread_id, reuse=reuse, shown=shown
            )
        self._remember(reply, chat_id, ids)
        return ids

    async def replace(
        self, reply: Reply, deltas: AsyncIterator[str], chat_id: int, chat_type: str, *, reply_message_id: int, shown_in: int
    ) -> list[int]:
        """Stream a regenerated reply over the messages of reply ``reply_message_id`` (``shown_in`` has its button)."""
        old = self._pieces.get((chat_id, reply_message_id))
        reuse = list(old) if old and old[-1] == shown_in else [shown_in]
        ids = await self._through_edits(reply, deltas, chat_id, reuse=reuse, group=chat_type != ChatType.PRIVATE)
        for leftover in reuse[len(ids) :]:
            try:
                await self.bot.delete_message(chat_id, leftover)
            except TelegramError as exc:
                log.info("could not delete an old piece of a regenerated reply: %s", exc)
        self._remember(reply, chat_id, ids)
        return ids

    # -- how -------------------------------------------------------------------------------

    async def _through_drafts(self, reply: Reply, deltas: AsyncIterator[str], chat_id: int) -> list[int]:
        draft_id = next(self._draft_ids)

        async def send_draft(text: str) -> object:
            sent = await self.bot.send_message_draft(chat_id, draft_id, text)
            first_shown(reply, "telegram")
            return sent

        stream = DraftStream(
            send_draft=send_draft,
            budget=self._budget(chat_id, private=True),
            limit=LIMIT,
        )
        if not await stream.run(deltas):
            log.warning("Telegram refused a message draft; private replies are shown by editing messages from now on")
            self.drafts_available = False
            return await self._through_edits(reply, prepend(stream.text, deltas), chat_id, group=False)
        text = stream.text.strip()
        if not text or reply.status is ReplyStatus.LOST:
            return []
        pieces = split_message(text, LIMIT)
        ids = []
        for i, piece in enumerate(pieces):
            markup = self._button(reply) if i == len(pieces) - 1 else None
            sent = await self.bot.send_message(chat_id, piece, reply_markup=markup)
            ids.append(sent.message_id)
        return ids

    async def _through_edits(
        self,
        reply: Reply,
        deltas: AsyncIterator[str],
        chat_id: int,
        *,
        group: bool,
        reply_to: int | None = None,
        thread_id: int | None = None,
        reuse: list[int] | None = None,
        shown: Callable[[int], Awaitable[None]] | None = None,
    ) -> list[int]:
        """Send, then edit at a paced rate (the group's budget too); ``reuse``: messages to write over first."""
        reusable = list(reuse or [])
        deltas = headed(reply, deltas) if group else deltas
        finished = False
        buttoned: list[int] = []  # the message that got the button with its final text

        def complete_in_one() -> bool:
            # The whole reply is known and fits in one message: its button can ride on this call.
            return finished and len(streamed.text.strip()) <= LIMIT

        async def send(text: str) -> int:
            if reusable:
                message_id = reusable.pop(0)
                await edit(message_id, text)
                return message_id
            first = not streamed.handles
            markup = self._button(reply) if first and complete_in_one() else None
            sent = await self.bot.send_message(
                chat_id,
                text,
                reply_parameters=ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to and first else None,
                message_thread_id=thread_id,
                reply_markup=markup,
                entities=heading_entities(reply, text),
            )
            if markup is not None:
                buttoned[:] = [sent.message_id]
            if first and shown is not None and not finished:
                await shown(sent.message_id)
            return sent.message_id

        async def edit(message_id: int, text: str) -> None:
            markup = self._button(reply) if complete_in_one() else None
            try:
                await self.bot.edit_message_text(
                    text, chat_id, message_id, reply_markup=markup, entities=heading_entities(reply, text)
                )
            except BadRequest as exc:
                if not is_not_modified(exc):
                    log.warning("could not edit a reply in chat %s: %s", chat_id, exc)
                    return
            if markup is not None:
                buttoned[:] = [message_id]

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
            budget=self._budget(chat_id, private=False) if group else None,
            on_first=lambda: first_shown(reply, "telegram"),
            halted=lambda: reply.status is ReplyStatus.LOST,
        )
        ids = await streamed.run(tracked())
        button = self._button(reply)
        if button is not None and ids and buttoned != [ids[-1]]:
            # The final text was shown before the reply was stored, or spans several messages:
            # add the button to the last one on its own.
            if group:
                await self._budget(chat_id, private=False).take()
            try:
                await self.bot.edit_message_reply_markup(chat_id, ids[-1], reply_markup=button)
            except BadRequest as exc:
                if not is_not_modified(exc):
                    log.warning("could not add the regenerate button in chat %s: %s", chat_id, exc)
        return ids

    # -- helpers ---------------------------------------------------------------------------

    def _button(self, reply: Reply) -> InlineKeyboardMarkup | None:
        if reply.reply_message_id is None or reply.conversation is None:
            return None
        data = regenerate_data(reply.reply_message_id, reply.conversation)
        return InlineKeyboardMarkup([[InlineKeyboardButton("↻ Regenerate", callback_data=data)]])

    def _budget(self, chat_id: int, *, private: bool) -> EditBudget:
        budget = self._budgets.get(chat_id)
        if budget is None:
            budget = EditBudget(1, self.draft_interval) if private else EditBudget(self.group_per_minute, 60.0)
            self._budgets.put(chat_id, budget)
        return budget

    def _remember(self, reply: Reply, chat_id: int, ids: list[int]) -> None:
        if reply.reply_message_id is not None and ids:
            self._pieces.put((chat_id, reply.reply_message_id), ids)
