"""The bot's update handlers: each turns one kind of update into a call on the engine or the command layer.

Handlers resolve who is asking (``Actor``: group admin via ``getChatMember``, owner via settings)
and where (``Place``); every permission decision is then made by ``core.commands``.

A character's avatar comes as a photo, with the answer as its caption, when a person picks the
character (``/use``, or its button) and on ``/character show``; the ``/characters`` list stays
text and buttons (one photo per character would flood the chat).
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Awaitable, Callable

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Message, MessageEntity, Update
from telegram.constants import ChatType
from telegram.error import BadRequest, TelegramError
from telegram.ext import ContextTypes, filters

from bots.compose import App
from bots.telegram.admins import ChatAdmins
from bots.telegram.arguments import HELP, after_command, parse_bind, parse_edit, parse_fields, split_word
from bots.telegram.replies import Replies, parse_regenerate_data, prepend
from core.commands import Actor, Outcome, Place
from core.engine import NOTICE_UNAVAILABLE, RecoveredTurn, Reply, ReplyStatus
from core.errors import InvalidInput
from core.events import ChatEvent, Platform, Trigger
from core.text import clean_text

log = logging.getLogger(__name__)

Context = ContextTypes.DEFAULT_TYPE
PLATFORM = Platform.TELEGRAM.value
USE = "use"
FORGET = "forget"
MAX_BUTTONS = 30
PICK_FIRST = "Pick a character first: tap one below, or type /use NAME."
PHOTO_KINDS = ("png", "jpg", "jpeg", "webp")  # avatars sent as a photo; others are not shown
PHOTO_BYTES = 10 * 1024 * 1024  # Telegram's limit for an uploaded photo
CAPTION_LIMIT = 1024  # characters in a photo's caption
# The updates a character may answer: new text messages that are not commands (edits are not answered again).
CHAT_TEXT = filters.UpdateType.MESSAGE & filters.TEXT & ~filters.COMMAND


class Handlers:
    """Handlers for one bot; they share the engine, the reply renderer and the admin cache."""

    def __init__(self, app: App, replies: Replies, *, admin_ttl: float = 60.0) -> None:
        self.app = app
        self.commands = app.commands
        self.replies = replies
        self.admins = ChatAdmins(admin_ttl)

    # -- who and where ---------------------------------------------------------------------

    @staticmethod
    def place(update: Update) -> Place:
        chat = update.effective_chat
        assert chat is not None
        return Place(PLATFORM, str(chat.id), str(chat.id), private=chat.type == ChatType.PRIVATE)

    async def actor(self, update: Update, context: Context, *, check_admin: bool = False) -> Actor:
        """Who is asking; with ``check_admin`` in a group, whether they administer it."""
        user, chat, message = update.effective_user, update.effective_chat, update.effective_message
        assert user is not None and chat is not None
        owner = self.app.is_owner(PLATFORM, str(user.id))
        admin = False
        if chat.type != ChatType.PRIVATE:
            if message is not None and message.sender_chat is not None and message.sender_chat.id == chat.id:
                admin = True  # an anonymous admin writing as the group itself
            elif check_admin and not owner:
                admin = await self.admins.is_admin(context.bot, chat.id, user.id)
        return Actor(PLATFORM, str(user.id), clean_text(user.full_name), is_admin=admin, is_owner=owner)

    # -- conversation ----------------------------------------------------------------------

    async def on_message(self, update: Update, context: Context) -> None:
        """A text message: the bound (or chosen) character may answer it."""
        message = update.effective_message
        event = chat_event(message, context.bot) if message is not None else None
        if event is None or message is None:
            return
        typing = await self._may_answer(event)
        if typing and self.replies.room(message.chat.id, private=event.private).full():
            await self._too_busy(event)
            return
        reply = self.app.engine.handle(event)
        ids = await self.replies.answer(
            reply,
            message.chat.id,
            message.chat.type,
            reply_to=None if event.private else message.message_id,
            thread_id=message.message_thread_id if message.is_topic_message else None,
            shown=lambda message_id: self._showing(reply, message_id),
            typing=typing,
        )
        await self.app.engine.shown(reply, [str(i) for i in ids])
        await self._follow_ups(reply, ids, message)
        if reply.status is ReplyStatus.NO_CHARACTER:
            await self._offer_characters(update, context, PICK_FIRST)

    async def _follow_ups(self, reply: Reply, ids: list[int], message: Message) -> None:
        """With trigger ``conversation``: the character a reply names answers it, then the one that
        answer names, at most PERSONAE_CONVERSATION_TURNS in a row. None starts while the chat's line
        of replies waits past PERSONAE_DELIVERY_MAX_WAIT_S (the people come first)."""
        thread_id = message.message_thread_id if message.is_topic_message else None
        chat_id = message.chat.id
        while ids:
            room = self.replies.room(chat_id, private=False)
            if room.full():
                log.info("Telegram chat %s is busy (%d replies waiting): the characters do not answer each other now", chat_id, room.waiting)
                return
            try:
                answer = await self.app.engine.follow_up(reply, str(ids[-1]))
            except Exception:  # noqa: BLE001 - the database's own errors: the reply itself was shown
                log.exception("Telegram: could not store a character's answer to another in chat %s", chat_id)
                return
            if answer is None:
                return
            reply = answer
            ids = await self.replies.answer(
                reply, chat_id, message.chat.type, reply_to=ids[-1], thread_id=thread_id,
                shown=lambda message_id, shown_reply=reply: self._showing(shown_reply, message_id),
            )
            await self.app.engine.shown(reply, [str(i) for i in ids])

    async def _too_busy(self, event: ChatEvent) -> None:
        """The chat's line of replies waiting to be written is longer than PERSONAE_DELIVERY_MAX_WAIT_S:
        the message is settled unanswered (no restart answers it later) and logged, not queued."""
        room = self.replies.room(int(event.chat_id), private=event.private)
        await self.app.engine.discard(event)
        log.warning(
            "dropped message %s in Telegram chat %s: %d replies already wait about %.0f s to be written "
            "(PERSONAE_DELIVERY_MAX_WAIT_S=%.0f)",
            event.message_id, event.chat_id, room.waiting, room.expected_wait(), room.max_wait_s,
        )

    async def _may_answer(self, event: ChatEvent) -> bool:
        """Whether the Engine will probably answer (then "typing…" is shown); the Engine still decides."""
        if event.private:
            return True  # a private chat's messages are answered (with the character chosen there)
        binding = await self.app.engine.binding_for(event)
        return binding is not None and (binding.trigger is Trigger.ALL or event.addressed)

    async def _showing(self, reply: Reply, message_id: int) -> None:
        if reply.intake is not None and reply.status is ReplyStatus.PENDING:
            # A crash from here on leaves this message half-shown: recovery writes the answer over it.
            await self.app.engine.showing(reply.intake, str(message_id))

    async def deliver_recovered(self, turn: RecoveredTurn) -> None:
        """Show the answer to a message a crash left unanswered: over the half-shown reply if there
        is one (too late to answer: the notice replies to it), else in reply to the message."""
        c = turn.intake.conversation
        chat_id = int(c.channel_id)
        private = c.channel_id == c.user_id  # a private chat's id is its person's id
        chat_type = ChatType.PRIVATE if private else ChatType.GROUP
        if turn.shown_in is not None and not turn.late:
            await self.replies.answer(turn.reply, chat_id, chat_type, reuse=[int(turn.shown_in)])
            return
        if turn.shown_in is not None:
            # Too late to answer: the notice goes in reply to the half-shown message, which marks it.
            await self.replies.answer(turn.reply, chat_id, chat_type, reply_to=int(turn.shown_in))
            return
        reply_to = None if private or not turn.intake.platform_message_id else int(turn.intake.platform_message_id)
        ids = await self.replies.answer(turn.reply, chat_id, chat_type, reply_to=reply_to)
        await self.app.engine.shown(turn.reply, [str(i) for i in ids])

    # -- buttons ---------------------------------------------------------------------------

    async def on_use_button(self, update: Update, context: Context) -> None:
        """A character button (``use:<id>``): pick that character in this private chat."""
        query = update.callback_query
        assert query is not None and query.data is not None
        try:
            character = await self.app.engine.hot.character(int(query.data.split(":", 1)[1]))
        except ValueError:
            character = None
        if character is None or query.message is None:
            await query.answer("That character is no longer here.", show_alert=True)
            return
        outcome = await self.commands.use(await self.actor(update, context), self.place(update), character.name)
        await query.answer(outcome.message[:200] if not outcome.ok else f"Now talking to {character.name}.")
        chat_id = query.message.chat.id
        if not await self._with_avatar(outcome, lambda photo, caption: context.bot.send_photo(chat_id, photo, caption=caption)):
            await context.bot.send_message(chat_id, outcome.message)

    async def on_regenerate_button(self, update: Update, context: Context) -> None:
        """The regenerate button: only the reply's author may press it; the new reply replaces the old."""
        query = update.callback_query
        assert query is not None and query.data is not None and query.from_user is not None
        if query.message is None:
            await query.answer()
            return
        chat = query.message.chat
        parsed = parse_regenerate_data(query.data, chat.id)
        if parsed is None:
            await query.answer("This button no longer works.", show_alert=True)
            return
        reply_id, conversation = parsed
        if str(query.from_user.id) != conversation.user_id:
            await query.answer("Only the person this reply answered can regenerate it.", show_alert=True)
            return
        reply = self.app.engine.regenerate(conversation, query.from_user.full_name, reply_id)
        deltas = aiter(reply)
        first = await anext(deltas, None)
        # Answered once the outcome is known; a slow model may make the query too old to answer.
        with contextlib.suppress(BadRequest):
            if first is None or first == NOTICE_UNAVAILABLE:
                async for _ in deltas:
                    pass
                if reply.status is ReplyStatus.NOT_FOUND:
                    await query.answer("Only the newest reply can be regenerated.", show_alert=True)
                else:
                    await query.answer(NOTICE_UNAVAILABLE[:200], show_alert=True)
                return
            await query.answer()
        ids = await self.replies.replace(
            reply, prepend(first, deltas), chat.id, chat.type, reply_message_id=reply_id, shown_in=query.message.message_id
        )
        await self.app.engine.shown(reply, [str(i) for i in ids])

    async def on_forget_button(self, update: Update, context: Context) -> None:
        """The confirmation of /forget (``forget:<user id>``): only that person may press it."""
        query = update.callback_query
        assert query is not None and query.data is not None and query.from_user is not None
        if query.data != f"{FORGET}:{query.from_user.id}":
            await query.answer("This button is for someone else.", show_alert=True)
            return
        outcome = await self.commands.forget(await self.actor(update, context))
        await query.answer()
        if query.message is not None:
            try:
                await query.edit_message_text(outcome.message)
            except TelegramError:
                await context.bot.send_message(query.message.chat.id, outcome.message)

    # -- commands everyone uses ------------------------------------------------------------

    async def on_start(self, update: Update, context: Context) -> None:
        """/start: a greeting and, in a private chat, the characters to pick from."""
        message = update.effective_message
        assert message is not None
        if message.chat.type != ChatType.PRIVATE:
            await self._say(update, HELP)
            return
        await self._offer_characters(update, context, "Hello! I play characters. Pick one to talk to (/help lists everything I can do):")

    async def on_help(self, update: Update, context: Context) -> None:
        await self._say(update, HELP)

    async def on_characters(self, update: Update, context: Context) -> None:
        """/characters: the list (buttons to pick one in a private chat)."""
        message = update.effective_message
        assert message is not None
        if message.chat.type == ChatType.PRIVATE:
            await self._offer_characters(update, context, "Pick a character:")
        else:
            await self._say(update, (await self.commands.list_characters(await self.actor(update, context, check_admin=True))).message)

    async def on_use(self, update: Update, context: Context) -> None:
        name = after_command(_text(update))
        if not name:
            await self._say(update, "Say which character: /use NAME (see /characters).")
            return
        await self._say(update, await self.commands.use(await self.actor(update, context), self.place(update), name), avatar=True)

    async def on_mood(self, update: Update, context: Context) -> None:
        """/mood: a picture of the character's feelings toward the person (bars and their recent
        course), with the text as its caption."""
        from bots.mood_picture import mood_png

        outcome = await self.commands.mood(await self.actor(update, context), self.place(update), after_command(_text(update)) or None)
        message = update.effective_message
        try:
            picture = await mood_png(outcome)
        except Exception:  # noqa: BLE001 - the text alone still answers
            log.exception("could not draw the mood picture")
            picture = None
        if picture is None or message is None or len(outcome.message) > 1024:
            await self._say(update, outcome)
            return
        await message.reply_photo(
            picture, filename="mood.png", caption=outcome.message, do_quote=message.chat.type != ChatType.PRIVATE
        )

    async def on_reset(self, update: Update, context: Context) -> None:
        name = after_command(_text(update)) or None
        await self._say(update, await self.commands.reset(await self.actor(update, context), self.place(update), name))

    async def on_memory(self, update: Update, context: Context) -> None:
        """/memory lists what the character here remembers about the person; /memory forget N deletes one."""
        sub, rest = split_word(after_command(_text(update)))
        actor, place = await self.actor(update, context), self.place(update)
        if sub == "forget":
            await self._say(update, await self.commands.forget_memory(actor, place, rest))
        elif sub:
            await self._say(update, "Say /memory to see what the character remembers, or /memory forget N to delete one.")
        else:
            await self._say(update, await self.commands.memory(actor, place))

    async def on_forget(self, update: Update, context: Context) -> None:
        """/forget asks for a confirmation first: it cannot be undone."""
        user, message = update.effective_user, update.effective_message
        assert user is not None and message is not None
        button = InlineKeyboardButton("Yes, delete everything about me", callback_data=f"{FORGET}:{user.id}")
        await message.reply_text(
            "This deletes your conversations and every character's feelings and memories about you, here and everywhere on Telegram. Sure?",
            reply_markup=InlineKeyboardMarkup([[button]]),
        )

    # -- admin commands --------------------------------------------------------------------

    async def on_bind(self, update: Update, context: Context) -> None:
        name, trigger = parse_bind(after_command(_text(update)))
        if not name:
            await self._say(update, "Say which character: /bind NAME [mention|all].")
            return
        actor = await self.actor(update, context, check_admin=True)
        await self._say(update, await self.commands.bind(actor, self.place(update), name, trigger))

    async def on_unbind(self, update: Update, context: Context) -> None:
        actor = await self.actor(update, context, check_admin=True)
        await self._say(update, await self.commands.unbind(actor, self.place(update)))

    async def on_scene(self, update: Update, context: Context) -> None:
        actor = await self.actor(update, context, check_admin=True)
        await self._say(update, await self.commands.scene_command(actor, self.place(update), after_command(_text(update))))

    async def on_character(self, update: Update, context: Context) -> None:
        """/character create|import|edit|list|show|delete ..."""
        sub, rest = split_word(after_command(_text(update)))
        actor = await self.actor(update, context, check_admin=True)
        place = self.place(update)
        try:
            if sub == "create":
                outcome = await self.commands.create_character(actor, place, parse_fields(rest))
            elif sub == "edit":
                name, changes = parse_edit(rest)
                outcome = await self.commands.edit_character(actor, place, name, changes)
            elif sub == "list":
                outcome = await self.commands.list_characters(actor)
            elif sub == "show":
                outcome = await self.commands.show_character(actor, rest)
            elif sub == "delete":
                outcome = await self.commands.delete_character(actor, place, rest)
            elif sub == "import":
                outcome = await self._import(update, context, actor, place, rest)
            else:
                outcome = Outcome(False, "Use /character create, import, edit, list, show or delete (see /help).")
        except InvalidInput as exc:
            outcome = Outcome(False, f"{str(exc)[:1].upper()}{str(exc)[1:]}. See /help for the syntax.")
        await self._say(update, outcome, avatar=sub == "show")

    async def on_lore(self, update: Update, context: Context) -> None:
        """/lore list|show|add|edit|remove ...: the lorebook of the character here (or character=NAME)."""
        actor = await self.actor(update, context, check_admin=True)
        await self._say(update, await self.commands.lore(actor, self.place(update), after_command(_text(update))))

    async def on_card_document(self, update: Update, context: Context) -> None:
        """A card file (PNG, CharX or JSON) sent with the caption ``/character import``."""
        message = update.effective_message
        addressee = re.match(r"/character@(\w+)", (message.caption or "") if message else "")
        if addressee and addressee.group(1).lower() != (context.bot.username or "").lower():
            return  # a card for another bot in the same group
        actor = await self.actor(update, context, check_admin=True)
        await self._say(update, await self._import(update, context, actor, self.place(update), ""))

    async def _import(self, update: Update, context: Context, actor: Actor, place: Place, inline: str) -> Outcome:
        message = update.effective_message
        assert message is not None
        document = message.document or (message.reply_to_message.document if message.reply_to_message else None)
        if document is None:
            if inline.startswith("{"):
                return await self.commands.import_character(actor, place, inline)
            return Outcome(
                False, "Send the card as a file (PNG, CharX or JSON) with the caption /character import, or reply to one with it."
            )
        if not actor.privileged:
            # Refused before the file is read: don't download files for people who may not import.
            return await self.commands.import_character(actor, place, b"")
        limit = self.commands.max_card_bytes
        if document.file_size is not None and document.file_size > limit:
            return Outcome(False, f"That file is {document.file_size:,} bytes; a card may be at most {limit:,}.")
        try:
            file = await context.bot.get_file(document.file_id)
            if file.file_size is not None and file.file_size > limit:
                return Outcome(False, f"That file is {file.file_size:,} bytes; a card may be at most {limit:,}.")
            raw = bytes(await file.download_as_bytearray())
        except TelegramError as exc:
            log.warning("could not download a card file: %s", exc)
            return Outcome(False, "I could not download that file from Telegram. Please try again.")
        if len(raw) > limit:
            return Outcome(False, f"That file is {len(raw):,} bytes; a card may be at most {limit:,}.")
        return await self.commands.import_character(actor, place, raw, document.file_name)

    async def on_unknown_command(self, update: Update, context: Context) -> None:
        await self._say(update, "I do not know that command. /help lists what I can do.")

    # -- output ----------------------------------------------------------------------------

    async def _say(self, update: Update, what: Outcome | str, *, avatar: bool = False) -> None:
        """Answer the message; with ``avatar``, a successful outcome about a character comes with its picture."""
        message = update.effective_message
        if message is None:
            return
        quote = message.chat.type != ChatType.PRIVATE
        if avatar and isinstance(what, Outcome):
            sent = await self._with_avatar(what, lambda photo, caption: message.reply_photo(photo, caption=caption, do_quote=quote))
            if sent:
                return
        text = what if isinstance(what, str) else what.message
        await message.reply_text(text[:4096], do_quote=quote)

    async def _with_avatar(self, outcome: Outcome, send_photo: Callable[[InputFile, str], Awaitable[object]]) -> bool:
        """Send the outcome's character's avatar through ``send_photo`` with the outcome's text as its caption
        (a long text follows as a message). False, with nothing sent, when there is no avatar Telegram can show."""
        if not outcome.ok or outcome.character is None:
            return False
        avatar = await self.commands.character_avatar(outcome.character)
        if avatar is None or avatar[1] not in PHOTO_KINDS or len(avatar[0]) > PHOTO_BYTES:
            return False
        text = outcome.message
        caption = text if len(text) <= CAPTION_LIMIT else outcome.character.name
        try:
            sent = await send_photo(InputFile(avatar[0], filename=f"avatar.{avatar[1]}"), caption)
        except BadRequest as exc:  # an image Telegram will not take as a photo: the text alone
            log.info("Telegram refused the avatar of %s as a photo: %s", outcome.character.name, exc)
            return False
        if caption != text and isinstance(sent, Message):
            await sent.reply_text(text[:4096], do_quote=False)
        return True

    async def _offer_characters(self, update: Update, context: Context, intro: str) -> None:
        message = update.effective_message
        assert message is not None
        characters = (await self.commands.list_characters(await self.actor(update, context))).characters
        if not characters:
            await message.reply_text(f"{intro}\nThere are no characters yet.")
            return
        rows = [[InlineKeyboardButton(c.name, callback_data=f"{USE}:{c.id}")] for c in characters[:MAX_BUTTONS]]
        more = f"\n({len(characters) - MAX_BUTTONS} more: /use NAME)" if len(characters) > MAX_BUTTONS else ""
        await message.reply_text(intro + more, reply_markup=InlineKeyboardMarkup(rows))


def chat_event(message: Message, bot: Bot) -> ChatEvent | None:
    """The event for a person's text message (None for a message with no author or no text)."""
    if message.from_user is None or not message.text:
        return None
    private = message.chat.type == ChatType.PRIVATE
    return ChatEvent(
        platform=Platform.TELEGRAM,
        chat_id=str(message.chat.id),
        channel_id=str(message.chat.id),
        user_id=str(message.from_user.id),
        display_name=clean_text(message.from_user.full_name),
        message_id=str(message.message_id),
        text=clean_text(_strip_mentions(message, bot.username)),
        private=private,
        addressed=private or _addresses_bot(message, bot),
        sent_at=message.date.timestamp() if message.date else None,
        reply_to=_replied_to_bot(message, bot),
    )


def _replied_to_bot(message: Message, bot: Bot) -> str | None:
    """The id of the bot's message this one replies to (a character's reply, perhaps), or None."""
    replied = message.reply_to_message
    if replied is None or replied.from_user is None or replied.from_user.id != bot.id or replied.forum_topic_created:
        return None
    return str(replied.message_id)


def _addresses_bot(message: Message, bot: Bot) -> bool:
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == bot.id:
        if not replied.forum_topic_created:  # in forums every message "replies" to the topic's start
            return True
    username = (bot.username or "").lower()
    for entity, text in message.parse_entities([MessageEntity.MENTION, MessageEntity.TEXT_MENTION]).items():
        if entity.type == MessageEntity.MENTION and text[1:].lower() == username:
            return True
        if entity.type == MessageEntity.TEXT_MENTION and entity.user is not None and entity.user.id == bot.id:
            return True
    return False


def _text(update: Update) -> str:
    message = update.effective_message
    return clean_text(message.text or message.caption or "") if message else ""


def _strip_mentions(message: Message, username: str | None) -> str:
    """The message text without @-mentions of this bot (the rest is what the person said)."""
    text = message.text or ""
    if not username:
        return text
    spans = [
        (entity.offset, entity.length)
        for entity, mention in message.parse_entities([MessageEntity.MENTION]).items()
        if mention[1:].lower() == username.lower()
    ]
    if not spans:
        return text
    # Entity offsets count UTF-16 code units; cut in that space so emoji before a mention are safe.
    units = text.encode("utf-16-le", "surrogatepass")  # a lone surrogate is cleaned by the caller
    for offset, length in sorted(spans, reverse=True):
        units = units[: offset * 2] + units[(offset + length) * 2 :]
    return units.decode("utf-16-le", "surrogatepass").strip()
