"""Records the domain keeps: bindings, a person's relationship state, stored messages, audit rows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum

from core.emotions import EmotionState
from core.events import ConversationKey, Trigger


@dataclass(frozen=True, slots=True)
class Binding:
    """A character assigned to a channel (or a private chat: the person's chosen character)."""

    platform: str
    chat_id: str
    channel_id: str
    character_id: int
    trigger: Trigger = Trigger.ALL
    scene: str | None = None  # None: the character's default scene
    private: bool = False


@dataclass(frozen=True, slots=True)
class RelationshipState:
    """One character's emotions and intimacy toward one person; ``version`` guards concurrent updates."""

    character_id: int
    platform: str
    user_id: str
    emotion: EmotionState
    intimacy: int
    version: int = 0
    updated_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def to_json(self) -> dict:
        return {
            "emotion": self.emotion.as_dict(),
            "intimacy": self.intimacy,
            "version": self.version,
            "updated_at": self.updated_at.timestamp(),
        }

    @classmethod
    def from_json(cls, character_id: int, platform: str, user_id: str, data: dict) -> "RelationshipState":
        return cls(
            character_id=character_id,
            platform=platform,
            user_id=user_id,
            emotion=EmotionState(**data["emotion"]),
            intimacy=data["intimacy"],
            version=data["version"],
            updated_at=dt.datetime.fromtimestamp(data["updated_at"], dt.UTC),
        )


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message of a conversation as the database keeps it."""

    id: int
    role: str
    content: str
    tokens: int
    created_at: dt.datetime
    platform_message_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelLine:
    """A line of a channel's scene as stored: a person's message (answered, or overheard: said to no
    character) or a character's reply, from any conversation of the channel (``display_name`` is
    the person's, on their own lines)."""

    id: int
    character_id: int
    user_id: str
    role: str  # "user" or "assistant"
    content: str
    tokens: int
    display_name: str | None = None


class MessageStatus(StrEnum):
    """Where a person's stored message stands."""

    PENDING = "pending"  # stored on arrival, not answered yet
    ANSWERED = "answered"  # a reply is stored after it
    FAILED = "failed"  # the model server gave no reply
    NOTICE = "notice"  # answered with a notice (rate limit, or too late to answer), not by the model
    UNDONE = "undone"  # its reply was taken back (/undo): out of the history, never answered again
    # Said in a bound channel to no character (trigger ``mention``): a line of the channel's scene
    # only, out of every history, never answered (docs/scenes.md).
    OVERHEARD = "overheard"


@dataclass(frozen=True, slots=True)
class Intake:
    """A person's message as stored when it arrived; ``first`` is False for a redelivery of a stored one."""

    id: int
    conversation: ConversationKey
    text: str
    tokens: int
    platform_message_id: str | None
    display_name: str
    created_at: dt.datetime
    status: MessageStatus = MessageStatus.PENDING
    first: bool = True
    owner: str | None = None  # the replica answering it while pending (None: stored without one)


@dataclass(frozen=True, slots=True)
class StateChange:
    """An audit row: how a person's state changed, by which appraiser, after which message."""

    character_id: int
    platform: str
    user_id: str
    before: RelationshipState
    after: RelationshipState
    appraiser: str
    message_id: int | None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Exchange:
    """A finished exchange, handed to the state-update step with all it needs to appraise it."""

    character_id: int
    platform: str
    channel_id: str
    user_id: str
    display_name: str
    scene: str
    state_before: RelationshipState
    history: tuple[tuple[str, str], ...]  # (role, content) of the turns before this exchange
    user_text: str
    reply_text: str
    user_message_id: int
    reply_message_id: int
    regenerated: bool = False


@dataclass(frozen=True, slots=True)
class Appraisal:
    """What an appraiser read from an exchange: emotion levels (0-10) and intimacy it has evidence for.

    ``emotion`` may name only some of the six emotions (English names); ``intimacy`` is None when
    the exchange said nothing about it. ``reason`` is a short account for the audit trail.
    """

    appraiser: str
    emotion: dict[str, int] = field(default_factory=dict)
    intimacy: int | None = None
    reason: str = ""

    @property
    def empty(self) -> bool:
        return not self.emotion and self.intimacy is None
