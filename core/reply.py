"""What a turn gives back: ``Reply`` (iterate it for text deltas), its ``ReplyStatus``, and the notices."""

from __future__ import annotations

import contextlib
from enum import StrEnum
from typing import TYPE_CHECKING, AsyncIterator, Callable

from core import observe

if TYPE_CHECKING:
    from core.character import Character
    from core.events import ConversationKey
    from core.state import Intake

NOTICE_UNAVAILABLE = "(The story pauses here: the model server is not answering. Please try again in a moment.)"
NOTICE_CUT = " …(the reply was cut short: the model server stopped answering)"
NOTICE_INTERRUPTED = " …(interrupted)"
NOTICE_BUDGET = " …"  # ends a reply cut at the token budget, shown and stored alike
NOTICE_RATE = "(You are sending messages faster than I can answer. Please wait a minute.)"
NOTICE_TOO_LONG = "(That message is too long for me: please keep it under {limit:,} characters.)"
NOTICE_STALE = "(Sorry, where were we? I lost the thread for a while: please say that again.)"
NOTICE_STORAGE_HELD = "(I cannot keep notes right now: I will answer this as soon as I can.)"
NOTICE_STORAGE = "(I cannot keep notes right now, so I cannot answer: please try again in a few minutes.)"


class ReplyStatus(StrEnum):
    PENDING = "pending"
    ANSWERED = "answered"  # a complete reply
    PARTIAL = "partial"  # some text, then the model server failed (or shutdown cut it); a notice ends it
    FAILED = "failed"  # the model server failed before any text; the text is a notice
    NOTICE = "notice"  # no model call: a rate-limit, message-too-long, too-late or storage notice
    RATE_LIMITED = "rate_limited"  # over the limit after the notice: silence
    DUPLICATE = "duplicate"  # a redelivered message: no reply
    IGNORED = "ignored"  # not for this bot (unbound channel, not addressed, empty)
    NO_CHARACTER = "no_character"  # a private chat where the person has not picked a character
    NOT_FOUND = "not_found"  # regenerate: there is no newest reply to replace
    DEFERRED = "deferred"  # stored, but the process is shutting down: answered after the restart
    LOST = "lost"  # the conversation's lock was lost mid-reply (a paused process): another replica answers; show nothing more


class Reply:
    """The answer to one event: iterate it for text deltas; afterwards ``status``, ``text`` and ids say what happened."""

    def __init__(self, run: Callable[["Reply"], AsyncIterator[str]]) -> None:
        self._run = run
        self.status = ReplyStatus.PENDING
        self.text = ""
        self.character: Character | None = None
        # Several characters play in the channel: where one bot speaks for all (Telegram), the
        # reply opens with the character's name (``heading``).
        self.ensemble = False
        # Character replies in a row this one ends (0: it answers a person; core.addressing.next_speaker).
        self.chain = 0
        self.conversation: ConversationKey | None = None
        # The conversation is in a thread of this channel, whose characters play there (None: not a thread, or not known).
        self.parent_channel_id: str | None = None
        self.intake: Intake | None = None  # the person's message as stored on arrival
        self.user_message_id: int | None = None
        self.reply_message_id: int | None = None
        # Set before the first delta on first contact: the character's greeting, shown before the reply.
        self.greeting: str | None = None
        # Why the model server gave no (complete) reply, in a line an operator can act on.
        self.problem: str | None = None

        # Set by the engine when the turn starts to wait (time.monotonic()), for the queue-wait metric.
        self.queued_at: float | None = None
        # The platform's time of the person's message (time.time()), and whether text was shown since.
        self.arrived_at: float | None = None
        self.shown = False

    @property
    def heading(self) -> str | None:
        """The character's name, to show on a line before the reply's text when several characters
        share one bot's voice (None: one character, or a notice)."""
        if not self.ensemble or self.character is None:
            return None
        return self.character.name

    def __aiter__(self) -> AsyncIterator[str]:
        return self._counted()

    async def _counted(self) -> AsyncIterator[str]:
        try:
            async with contextlib.aclosing(self._run(self)) as deltas:  # type: ignore[type-var]
                async for delta in deltas:
                    yield delta
        finally:
            if self.status is not ReplyStatus.PENDING:
                observe.metrics.turn(self.status.value)

    async def collect(self) -> str:
        """Run the turn to the end and return the whole text."""
        async for _ in self:
            pass
        return self.text
