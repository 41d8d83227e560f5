"""The interfaces core needs from the outside world: storage, cache, model server.

``storage`` implements the repositories and caches; the model client lives in ``bots.llm``.
A single composition root (``bots.compose``) wires them into an ``Engine``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncContextManager, AsyncIterator, Mapping, Protocol, Sequence

from core.character import Character
from core.events import ConversationKey, PersonKey
from core.state import Appraisal, Binding, ChannelLine, Exchange, Intake, MessageStatus, RelationshipState, StateChange, StoredMessage

if TYPE_CHECKING:
    from core.memory import Line, Memory, NewMemory


class CharacterRepository(Protocol):
    async def add(self, card: dict[str, Any], avatar: bytes | None = None, avatar_ext: str | None = None) -> Character:
        """Store a new character from a normalised card, with its avatar image (and its file
        extension, e.g. ``png``) if it has one; Conflict if the name is taken (any case)."""

    async def get(self, character_id: int) -> Character | None:
        """The character without its avatar (this is on the chat path; see ``avatar``)."""

    async def get_by_name(self, name: str) -> Character | None:
        """Find a character by name, ignoring case."""

    async def list(self) -> list[Character]:
        """All characters, ordered by name."""

    async def replace(
        self, character_id: int, card: dict[str, Any], avatar: bytes | None = None, avatar_ext: str | None = None
    ) -> Character:
        """Store an edited card (and a new avatar, if given; else the stored one stays);
        NotFound if gone, Conflict if renamed onto another's name."""

    async def avatar(self, character_id: int) -> tuple[bytes, str] | None:
        """The avatar image and its extension, or None when the character has none (or is gone)."""

    async def delete(self, character_id: int) -> bool:
        """Delete a character with its bindings, states, audit rows and messages."""


class BindingRepository(Protocol):
    async def get(self, platform: str, channel_id: str) -> Binding | None:
        """The channel's first binding (the oldest), or None."""

    async def list(self, platform: str, channel_id: str) -> list[Binding]:
        """Every character bound to the channel, oldest binding first (a scene may have several)."""

    async def put(self, binding: Binding) -> None:
        """Make ``binding`` the channel's one binding (others of the channel go)."""

    async def add(self, binding: Binding) -> None:
        """Add ``binding`` to the channel's (or update that character's own); the others stay."""

    async def remove(self, platform: str, channel_id: str, character_id: int) -> bool:
        """Take one character out of the channel."""

    async def delete(self, platform: str, channel_id: str) -> bool:
        """Unbind every character of the channel."""

    async def channels(self, platform: str, limit: int) -> list[str]:
        """Up to ``limit`` of the platform's channels (not private chats) with a character bound, most recently bound first."""


class RelationshipRepository(Protocol):
    async def get(self, key: PersonKey) -> RelationshipState | None: ...

    async def get_or_create(self, initial: RelationshipState) -> RelationshipState:
        """The stored state, or ``initial`` inserted as version 0 when there is none (race-safe)."""

    async def update(self, change: StateChange) -> bool:
        """Write ``change.after`` and its audit row in one transaction.

        Only succeeds if the stored version still equals ``change.before.version``;
        ``change.after.version`` must be one more. Returns False when someone else wrote first.
        """

    async def changes(self, key: PersonKey, limit: int = 20) -> list[StateChange]:
        """Audit rows for one person's state, newest first."""


class MessageRepository(Protocol):
    async def recent(self, conversation: ConversationKey, limit: int) -> list[StoredMessage]:
        """The newest ``limit`` messages of a conversation, oldest first; messages still pending
        and those answered by a notice are not part of it."""

    async def position(self, conversation: ConversationKey, message_id: int) -> int:
        """How many of the person's messages in the conversation's history (answered or failed) have
        ids up to ``message_id``, itself included: the number of its exchange, from stored data."""

    async def accept(
        self, conversation: ConversationKey, text: str, tokens: int, platform_message_id: str, display_name: str,
        owner: str | None = None, *, answering: int | None = None,
    ) -> Intake | None:
        """Store a person's message as pending, claimed by replica ``owner``, in one round trip; for a
        redelivery (same platform, channel and platform message id) the stored one, with ``first`` False.

        ``answering``: the message is a character's answer to the stored reply of that id (trigger
        ``conversation``): it is stored only if that reply is still there, checked in the same
        statement, so that nothing that deletes the reply together with the chains it started
        (``undo_exchange``, ``replace_reply``, ``delete_conversation``, ``Store.forget_person``) can
        leave a copy behind; None when it is gone (always a stored Intake without ``answering``)."""

    async def pending_before(self, conversation: ConversationKey, message_id: int, limit: int = 20) -> list[Intake]:
        """The messages of ``conversation`` older than ``message_id`` still pending, oldest first."""

    async def claim(self, message_id: int, owner_was: str | None, owner: str) -> bool:
        """Move a pending message from replica ``owner_was`` to ``owner`` (a takeover); False when it
        is no longer pending or another replica claimed it first."""

    async def finish(
        self, intake: Intake, status: MessageStatus, reply: tuple[str, int] | None, greeting: tuple[str, int] | None = None
    ) -> tuple[int, int | None, int | None] | None:
        """Mark a pending message ``status`` and store its reply, in one transaction.

        With ``greeting`` (first contact) the greeting is stored before the message. Returns the ids
        (message, reply, greeting), or None when the message is no longer pending (answered
        elsewhere, or deleted): then nothing was stored.
        """

    async def overhear(
        self, conversation: ConversationKey, text: str, tokens: int, platform_message_id: str, display_name: str, keep: int
    ) -> int | None:
        """Store a person's message in a bound channel that no character answers as an overheard line
        (``MessageStatus.OVERHEARD``): part of the channel's scene (``channel_lines``), of no history,
        never answered nor pending. The channel keeps its newest ``keep`` overheard lines (older ones
        are deleted in the same transaction). The new line's id; None for a redelivery."""

    async def pending(self, platform: str, after_id: int = 0, limit: int = 100) -> list[Intake]:
        """The oldest messages of ``platform`` still waiting for an answer, with ids above ``after_id``."""

    async def add_exchange(
        self,
        conversation: ConversationKey,
        user: tuple[str, int, str | None],
        reply: tuple[str, int] | None,
    ) -> tuple[int, int | None]:
        """Store the user message (text, tokens, platform id) and the reply (text, tokens) at once.

        Returns the new message ids (the reply's is None when there is no reply).
        """

    async def add_greeting(self, conversation: ConversationKey, content: str, tokens: int) -> int:
        """Store the character's greeting as the conversation's first assistant turn; returns its id."""

    async def delete_message(self, message_id: int) -> bool:
        """Delete one stored message (the newest reply, taken back)."""

    async def undo_exchange(self, conversation: ConversationKey, reply_message_id: int) -> bool:
        """Take back one exchange at once: delete the reply (with the characters' answers to each other
        it started, trigger ``conversation``) and mark the person's messages it answered (those after
        the reply before it) UNDONE, so that neither the history nor recovery has them.
        False when ``reply_message_id`` is not a reply of ``conversation``."""

    async def replace_reply(self, message_id: int, content: str, tokens: int) -> bool:
        """Replace the text of a stored reply (regenerate); the characters' answers to each other the
        old text started (trigger ``conversation``) are deleted in the same transaction."""

    async def delete_conversation(self, conversation: ConversationKey) -> int:
        """Delete the conversation's history (/reset; the person's overheard lines stay), and the
        characters' answers to each other its replies started; how many messages were deleted."""

    async def channel_lines(
        self, platform: str, channel_id: str, *, before_id: int | None = None, exclude: ConversationKey | None = None,
        limit: int = 40,
    ) -> list[ChannelLine]:
        """The newest ``limit`` lines of the channel's history across its conversations (every
        person, every character), oldest first: with ids below ``before_id``, without ``exclude``'s
        own lines (overheard lines stay, whoever said them). Only this channel's: a private chat is
        a channel of its own. A character's copy of another's line it answered (a user row of a
        ``character:ID`` conversation) is left out while that line's reply is stored and recorded as
        shown there: the reply is the line, said once."""

    async def last_partner(self, platform: str, channel_id: str, user_id: str) -> int | None:
        """The character the person's newest answered message in the channel went to."""

    async def mark_shown(self, reply_message_id: int, platform: str, channel_id: str, platform_message_ids: list[str]) -> None:
        """Remember the platform messages a stored reply was shown in (gone with the reply)."""

    async def reply_author(self, platform: str, channel_id: str, platform_message_id: str) -> int | None:
        """The character whose stored reply was shown in that platform message, if any."""

    async def shown_reply(self, platform: str, channel_id: str, platform_message_id: str) -> int | None:
        """The id of the stored reply shown in that platform message (``mark_shown``), if any."""


class EventRepository(Protocol):
    async def mark_processed(self, platform: str, event_id: str) -> bool:
        """Record a platform event; True the first time, False for a redelivery."""

    async def prune(self, older_than: dt.datetime) -> int: ...


class MemoryRepository(Protocol):
    """Long-term memories per conversation scope (character, platform, channel, person), and how far
    each conversation's history has been condensed into them (``core.memory``)."""

    async def list(self, conversation: ConversationKey) -> list["Memory"]:
        """The conversation's memories, oldest first."""

    async def of_person(self, character_id: int, platform: str, user_id: str) -> dict[str, list["Memory"]]:
        """A character's memories of a person in every channel, by channel id (admins' view)."""

    async def uncondensed(self, conversation: ConversationKey, keep: int, limit: int) -> tuple[int, list["Line"]]:
        """The condensed mark (the last history ``seq`` condensed, 0 for none) and, oldest first, at
        most ``limit`` history messages after it that are no longer among the newest ``keep``."""

    async def condensed(
        self, conversation: ConversationKey, mark: int, through: int, add: Sequence["NewMemory"], remove: Sequence[int]
    ) -> bool:
        """In one transaction: move the condensed mark from ``mark`` to ``through``, store ``add`` and
        delete the memories ``remove``; False (nothing written) when the mark is no longer ``mark``."""

    async def delete(self, conversation: ConversationKey, memory_id: int) -> bool:
        """Delete one memory of the conversation; False when it is not there."""

    async def reset(self, conversation: ConversationKey) -> None:
        """The conversation's history was deleted (/reset): its condensed mark starts over; the
        memories stay."""


class Store(Protocol):
    """The database: the source of truth."""

    characters: CharacterRepository
    bindings: BindingRepository
    relationships: RelationshipRepository
    messages: MessageRepository
    events: EventRepository
    memories: MemoryRepository

    async def forget_person(self, platform: str, user_id: str) -> dict[str, int]:
        """Delete a person's messages, states, audit rows and memories for every character; counts per kind.

        Their messages include, with trigger ``conversation``, the characters' answers to each other
        that the person's replies started (and those answers' own answers), counted as messages."""

    async def close(self) -> None: ...


@dataclass(slots=True)
class Admission:
    """What the cache says about an incoming event: first delivery? how many in the rate window?"""

    first: bool
    count: int
    values: list[bytes | None] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AdmitRequest:
    """What ``Cache.admit`` does, asked of ``Cache.hold`` so that it rides in the same round trip."""

    dedupe_key: str | None  # None: the database alone keeps the record of deliveries
    dedupe_ttl: float
    rate_key: str
    rate_window: float


class Held(Protocol):
    """A locked conversation: the values read when the lock was taken, and writes to apply on release."""

    values: list[bytes | None]
    admission: Admission | None  # set when the lock was asked to admit an event too

    def stage(self, key: str, value: bytes | None, ttl: float) -> None:
        """Write ``value`` (None deletes) when the lock is released, in the same round trip."""

    async def still_held(self) -> bool:
        """False once the lock is known lost (its lease ran out, e.g. the process was paused, and
        another holder may have it): the holder must stop, and show and store nothing more. Cheap
        while the lease is fresh; asks the cache only past it. True when the cache cannot tell."""


class Cache(Protocol):
    """Hot copies, locks, dedupe keys and rate-limit counters. Losing it loses no data.

    Implementations never raise for an outage: reads miss, writes are dropped, and a lock falls
    back to a local one, so callers go to the database.
    """

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def set_many(self, items: Mapping[str, bytes], ttl: float) -> None: ...

    async def delete(self, *keys: str) -> None: ...

    async def delete_prefix(self, prefix: str) -> None:
        """Delete every key that starts with ``prefix`` (used by /forget; not on the hot path)."""

    async def admit(
        self, dedupe_key: str | None, dedupe_ttl: float, rate_key: str, rate_window: float, read: Sequence[str] = ()
    ) -> Admission:
        """In one round trip: set ``dedupe_key`` if absent (if given), count one hit in ``rate_key``'s window,
        and read ``read``."""

    def hold(
        self, lock_key: str, *, ttl: float, read: Sequence[str] = (), admit: AdmitRequest | None = None
    ) -> AsyncContextManager[Held]:
        """Lock ``lock_key`` (in arrival order within this process) and read ``read`` in one round
        trip; with ``admit``, the event's dedupe key and rate count go in that round trip too
        (``Held.admission``). Staged writes go out with the release."""

    # Whether other processes see this cache (Redis): then replicas elect and watch each other.
    shared: bool

    async def lease(self, key: str, owner: str, ttl: float) -> bool | None:
        """Take ``key`` for ``owner`` for ``ttl`` seconds, or extend it if ``owner`` holds it already;
        False when someone else holds it, None when the cache cannot tell (Redis is away)."""

    async def release(self, key: str, owner: str) -> None:
        """Give ``key`` up if ``owner`` holds it."""

    async def close(self) -> None: ...


class ModelSlots(Protocol):
    """The model budget of the whole deployment: at most a cap of requests in flight per model
    server across every replica, one channel at most a share of it, and low-priority requests
    (appraisals) only while no reply waits. A slot is a lease its holder renews while it holds it:
    a replica that dies gives its slots back when their leases run out.

    Implementations never raise for a cache outage: the request then goes ahead on the process's
    own cap alone.
    """

    def slot(self, server: str, channel: str, *, low: bool = False) -> AsyncContextManager[None]:
        """Wait for a slot on ``server`` for a request of ``channel`` and hold it for the block."""

    async def close(self) -> None: ...


class ChatModel(Protocol):
    """A model server with the OpenAI-style chat API (TGI, vLLM, SGLang, llama.cpp)."""

    def stream(
        self, messages: Sequence[Mapping[str, str]], *, max_tokens: int, temperature: float, stop: Sequence[str] = ()
    ) -> AsyncIterator[str]:
        """Yield text deltas. Raises ModelError; retries before the first delta are the client's job."""

    async def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        json_schema: Mapping[str, Any] | None = None,
        analysis_first: bool = False,
    ) -> str:
        """A whole (non-streamed) answer, optionally constrained to a JSON schema where supported; sent
        in the same prompt layout as ``stream`` (for BD-RP the raw training string).

        ``analysis_first``: the answer is free text that ends in the JSON object (the shape the
        BeyondDialogue alignment tasks were trained on); a constraint may only shape that object.
        """

    async def count_tokens(self, text: str) -> int:
        """Tokens in ``text``: the server's tokenizer when it has one, else a conservative estimate."""

    async def close(self) -> None: ...


class Appraiser(Protocol):
    """Reads the emotions a character shows, and its intimacy with the person, from an exchange."""

    name: str  # written to the audit rows ("lexicon", "model")

    async def appraise(self, exchange: Exchange, character: Character) -> Appraisal | None:
        """What the exchange shows (None or an empty Appraisal: nothing to go on). Never raises for
        a bad answer from a model: that is logged and reads as None."""


class StateUpdater(Protocol):
    """The step that moves a person's emotions and intimacy after an exchange."""

    async def after_exchange(self, exchange: Exchange) -> None:
        """Appraise a delivered exchange and write the new state (a regenerated reply first undoes
        what the reply it replaced did)."""

    async def reply_deleted(self, conversation: ConversationKey, reply_message_id: int) -> None:
        """The newest reply of ``conversation`` was deleted: take back what it changed."""

    def as_of_now(self, state: RelationshipState, character: Character) -> RelationshipState:
        """The stored state as it reads now (emotions drift back toward the baseline while idle)."""
