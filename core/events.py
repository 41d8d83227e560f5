"""What happened on a platform, in platform-free terms, and the keys that identify conversations."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Platform(StrEnum):
    DISCORD = "discord"
    TELEGRAM = "telegram"
    CONSOLE = "console"


class Trigger(StrEnum):
    """When a bound character answers in a channel."""

    ALL = "all"  # every message
    MENTION = "mention"  # only when mentioned or replied to
    # every message, and the characters of a scene answer each other when one names another, up to
    # PERSONAE_CONVERSATION_TURNS replies in a row (core.addressing.next_speaker)
    CONVERSATION = "conversation"


# The user id under which a character answers another character's line (trigger ``conversation``):
# ``character:<id of the speaking character>``; its feelings toward that character are kept there.
CHARACTER_USER = "character:"


def character_user(character_id: int) -> str:
    """The user id of character ``character_id`` as the one another character answers."""
    return f"{CHARACTER_USER}{character_id}"


def is_character_user(user_id: str) -> bool:
    """Whether ``user_id`` is a character's (``character_user``), not a person's."""
    return user_id.startswith(CHARACTER_USER)


@dataclass(frozen=True, slots=True)
class ChatEvent:
    """One incoming chat message, as an adapter saw it.

    ``chat_id`` is the Discord guild or Telegram chat; ``channel_id`` the Discord channel (a thread's
    parent goes in ``parent_channel_id``) or, on Telegram, the chat again. ``addressed`` says the
    bot was mentioned or replied to. ``message_id`` is the platform's id, used to drop redeliveries.
    ``sent_at`` is when the platform says it was sent (seconds since the epoch; None: when the engine
    sees it): the rate limit counts arrivals, not answers, so a queue cannot hide a flood.
    ``reply_to`` is the platform id of the message this one replies to, when that message is the
    bot's own (or one of its webhooks'): the engine finds which character's reply it was.
    """

    platform: Platform
    chat_id: str
    channel_id: str
    user_id: str
    display_name: str
    message_id: str
    text: str
    private: bool = False
    addressed: bool = False
    parent_channel_id: str | None = None
    sent_at: float | None = None
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """The history the model sees: one person's thread with one character in one channel."""

    character_id: int
    platform: str
    channel_id: str
    user_id: str

    def cache_key(self) -> str:
        return f"{self.character_id}:{self.platform}:{self.channel_id}:{self.user_id}"


@dataclass(frozen=True, slots=True)
class PersonKey:
    """Whose state it is: one character's feelings toward one person on one platform."""

    character_id: int
    platform: str
    user_id: str

    def cache_key(self) -> str:
        return f"{self.character_id}:{self.platform}:{self.user_id}"
