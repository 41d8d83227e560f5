"""Discord messages in platform-free terms, and the button that regenerates a reply.

``chat_event`` turns a person's message into a ``ChatEvent`` (or None for what no character
answers); ``RegenerateButton`` is the persistent button under the newest reply of a conversation.
Showing replies (sends, paced edits) is the client's job, in ``bots.discord.client``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable

import discord

from core.events import ChatEvent, ConversationKey, Platform
from core.text import clean_text

if TYPE_CHECKING:
    from bots.discord.client import PersonaeClient

MESSAGE_LIMIT = 2000  # characters in one Discord message
NO_MENTIONS = discord.AllowedMentions.none()  # on everything the model writes
ATTACHMENT_NOTE = "\n\n-# (I can't see attachments: only the words of your message reach me.)"
NOT_YOURS = "Only the person this reply answered can regenerate it."
GONE = "Only the newest reply of a conversation can be regenerated."

_PEOPLE = (discord.MessageType.default, discord.MessageType.reply)
_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")


Ours = Callable[[discord.Message], bool]  # whether a message was written by one of the bot's webhooks


def chat_event(message: discord.Message, me: discord.abc.User, ours: Ours | None = None) -> ChatEvent | None:
    """The event for a person's message, or None for bots (this one too), system and empty messages."""
    if message.author.bot or message.author.id == me.id or message.type not in _PEOPLE:
        return None
    return _event(message, me, message.author.id, message.author.display_name, is_addressed(message, me, ours))


def proxied_event(copy: discord.Message, me: discord.abc.User, author_id: int, addressed: bool, ours: Ours | None = None) -> ChatEvent | None:
    """The event for a proxy's copy of a person's message (``bots.discord.proxies``): the person's
    (``author_id``), under the name the proxy shows; addressed if the original or the copy was."""
    if copy.type not in _PEOPLE:
        return None
    return _event(copy, me, author_id, copy.author.display_name, addressed or is_addressed(copy, me, ours))


def _event(message: discord.Message, me: discord.abc.User, author_id: int, name: str, addressed: bool) -> ChatEvent | None:
    text = clean_text(plain_text(message, me))
    if not text.strip():
        return None
    channel = message.channel
    guild = message.guild
    parent = channel.parent_id if isinstance(channel, discord.Thread) else None
    return ChatEvent(
        platform=Platform.DISCORD,
        chat_id=str(guild.id if guild is not None else channel.id),
        channel_id=str(channel.id),
        user_id=str(author_id),
        display_name=clean_text(name),
        message_id=str(message.id),
        text=text,
        private=guild is None,
        addressed=addressed,
        parent_channel_id=str(parent) if parent else None,
        sent_at=message.created_at.timestamp(),
        reply_to=replied_to(message, me),
    )


def replied_to(message: discord.Message, me: discord.abc.User) -> str | None:
    """The id of the message this one replies to in its channel, unless it is known to be a
    person's (the engine looks it up among the characters' stored replies)."""
    reference = message.reference
    if reference is None or reference.message_id is None or reference.channel_id != message.channel.id:
        return None
    target = reference.resolved if isinstance(reference.resolved, discord.Message) else reference.cached_message
    if target is not None and target.author.id != me.id and target.webhook_id is None:
        return None
    return str(reference.message_id)


def is_addressed(message: discord.Message, me: discord.abc.User, ours: Ours | None = None) -> bool:
    """The bot was mentioned (itself or its managed role) or the message replies to one of its
    messages (its own, or one a character wrote through the bot's webhook)."""
    if me.id in message.raw_mentions or any(user.id == me.id for user in message.mentions):
        return True
    guild = message.guild
    if guild is not None and guild.self_role is not None and guild.self_role.id in message.raw_role_mentions:
        return True
    reference = message.reference
    if reference is None:
        return False
    target = reference.resolved if isinstance(reference.resolved, discord.Message) else reference.cached_message
    return target is not None and (target.author.id == me.id or (ours is not None and ours(target)))


def plain_text(message: discord.Message, me: discord.abc.User) -> str:
    """The message text as the character should read it: its own mention removed, others as @names."""
    names = {user.id: user.display_name for user in message.mentions}

    def user(match: re.Match[str]) -> str:
        user_id = int(match[1])
        if user_id == me.id:
            return ""
        return f"@{names[user_id]}" if user_id in names else match[0]

    def role(match: re.Match[str]) -> str:
        found = message.guild.get_role(int(match[1])) if message.guild else None
        if found is None or (message.guild and found == message.guild.self_role):
            return ""
        return f"@{found.name}"

    text = _USER_MENTION.sub(user, message.content)
    return _ROLE_MENTION.sub(role, text).strip()


class RegenerateButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"personae:regen:(?P<character>\d+):(?P<channel>\d+):(?P<user>\d+):(?P<reply>\d+)",
):
    """A persistent button that replaces a reply with a new one; its custom_id carries the conversation.

    It keeps working after a restart: discord.py rebuilds it from the custom_id of the pressed button.
    """

    def __init__(self, conversation: ConversationKey, reply_message_id: int) -> None:
        self.conversation = conversation
        self.reply_message_id = reply_message_id
        c = conversation
        super().__init__(
            discord.ui.Button(
                label="Regenerate",
                emoji="\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}",
                style=discord.ButtonStyle.secondary,
                custom_id=f"personae:regen:{c.character_id}:{c.channel_id}:{c.user_id}:{reply_message_id}",
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str], /
    ) -> "RegenerateButton":
        conversation = ConversationKey(int(match["character"]), Platform.DISCORD, match["channel"], match["user"])
        return cls(conversation, int(match["reply"]))

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        if str(interaction.user.id) != self.conversation.user_id:
            await interaction.response.send_message(NOT_YOURS, ephemeral=True)
            return False
        return True

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client: PersonaeClient = interaction.client
        await client.regenerate(interaction, self.conversation, self.reply_message_id)


def regenerate_view(conversation: ConversationKey, reply_message_id: int) -> discord.ui.View:
    """The view put under the newest reply of a conversation."""
    view = discord.ui.View(timeout=None)
    view.add_item(RegenerateButton(conversation, reply_message_id))
    return view
