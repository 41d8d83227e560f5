"""What an operator can watch, as core sees it: a tiny metrics port and the ids of the turn being answered.

Core reports through ``metrics`` (a no-op until an adapter installs a real one with ``use``: the
bots implement it with Prometheus, ``bots.metrics``). Every label value core passes is one of a
short fixed set (a status, a step, a kind): never a person, a channel or text.

``conversation_id`` and ``turn_id`` hold the conversation and the stored message of the turn
running in the current task, for log lines (``bots.logs``); they are plain context variables.
"""

from __future__ import annotations

import contextlib
import time
from contextvars import ContextVar
from typing import Iterator, Protocol

# Whether log lines may quote what people wrote or what the model answered (PERSONAE_LOG_MESSAGE_TEXT).
message_text_in_logs = False
HIDDEN = "(text not logged: PERSONAE_LOG_MESSAGE_TEXT=false)"

conversation_id: ContextVar[str | None] = ContextVar("personae_conversation_id", default=None)
turn_id: ContextVar[int | None] = ContextVar("personae_turn_id", default=None)


class Metrics(Protocol):
    """Where core's measurements go. Implementations must be cheap and never raise."""

    def turn(self, outcome: str) -> None:
        """A turn ended with ``outcome`` (a ``ReplyStatus`` value)."""

    def first_text(self, platform: str, seconds: float) -> None:
        """From the person's message (the platform's time) to the first text of the answer shown."""

    def queue_wait(self, seconds: float) -> None:
        """A turn waited this long (behind the person's earlier turns and the cap on turns at once)."""

    def model_first_token(self, seconds: float) -> None:
        """From the model slot taken to the first text (the wait for the slot is model_slot_wait)."""

    def model_slot_wait(self, seconds: float) -> None:
        """How long a model request waited for a slot (this process's cap and the global budget)."""

    def model_slots(self, waiting: int, held: int) -> None:
        """Requests of this process starting (+1) or ending (-1) a wait for a model slot, or holding one."""

    def model_tokens_per_second(self, rate: float) -> None:
        """A streamed reply's pace after its first token (tokens counted as non-empty deltas)."""

    def appraisal(self, appraiser: str, seconds: float) -> None:
        """One exchange appraised (``appraiser`` is ``model`` or ``lexicon``)."""

    def appraisal_tokens(self, part: str, tokens: int) -> None:
        """Tokens of one appraisal request, ``part`` ``prompt`` or ``answer``."""

    def cache_lookup(self, kind: str, hit: bool) -> None:
        """A hot read of ``kind`` (binding, state, history, character) found in the cache, or not."""

    def storage(self, part: str, seconds: float) -> None:
        """One round trip to ``part`` (``database`` or ``redis``), failed or not."""

    def rate_limited(self, reason: str) -> None:
        """A message refused for its pace: ``arrival`` (in-process window), ``admission`` (the shared
        count) or ``overflow`` (too many turns waiting)."""

    def error(self, where: str, exc: BaseException | None = None) -> None:
        """Something failed at ``where`` (model, database, appraisal, ...); ``exc`` says what, if known."""


class NoMetrics:
    """The default: measures nothing."""

    def turn(self, outcome: str) -> None: ...
    def first_text(self, platform: str, seconds: float) -> None: ...
    def queue_wait(self, seconds: float) -> None: ...
    def model_first_token(self, seconds: float) -> None: ...
    def model_slot_wait(self, seconds: float) -> None: ...
    def model_slots(self, waiting: int, held: int) -> None: ...
    def model_tokens_per_second(self, rate: float) -> None: ...
    def appraisal(self, appraiser: str, seconds: float) -> None: ...
    def appraisal_tokens(self, part: str, tokens: int) -> None: ...
    def cache_lookup(self, kind: str, hit: bool) -> None: ...
    def storage(self, part: str, seconds: float) -> None: ...
    def rate_limited(self, reason: str) -> None: ...
    def error(self, where: str, exc: BaseException | None = None) -> None: ...


metrics: Metrics = NoMetrics()


def use(implementation: Metrics | None) -> Metrics:
    """Send core's measurements to ``implementation`` (None: back to measuring nothing); returns the previous one."""
    global metrics
    previous = metrics
    metrics = implementation if implementation is not None else NoMetrics()
    return previous


def current() -> Metrics:
    return metrics


@contextlib.contextmanager
def in_turn(conversation: str | None, turn: int | None) -> Iterator[None]:
    """Mark the current task as answering ``turn`` of ``conversation`` (for log lines)."""
    c, t = conversation_id.set(conversation), turn_id.set(turn)
    try:
        yield
    finally:
        try:
            conversation_id.reset(c)
            turn_id.reset(t)
        except ValueError:  # closed from another context (a generator finalised late): nothing to undo there
            pass


def quoted(text: str) -> str:
    """``text`` for a log line, or a placeholder unless message text may be logged."""
    return text if message_text_in_logs else HIDDEN


def since(started: float) -> float:
    return max(0.0, time.monotonic() - started)
