"""Which channel a model request is for, so that the shared model budget (``ports.ModelSlots``)
can keep one busy channel from taking all of it."""

from __future__ import annotations

import math
from contextvars import ContextVar

# Set by the turn before it asks the model (a task's copy reaches its background appraisal too).
MODEL_CHANNEL: ContextVar[str] = ContextVar("personae_model_channel", default="")


class SlotClock:
    """When the model request of a turn got its slot (the model client sets it; the turn's
    first-token time counts from then, not from the wait for the slot)."""

    __slots__ = ("taken",)

    def __init__(self) -> None:
        self.taken: float | None = None


# Set by the turn before it asks the model; the client notes in it when the slot was taken.
SLOT_CLOCK: ContextVar[SlotClock | None] = ContextVar("personae_slot_clock", default=None)


def channel_cap(cap: int, share: float) -> int:
    """The most slots one channel may hold: ``share`` of ``cap``, at least one."""
    return max(1, min(cap, math.ceil(cap * share)))


def channel_of(platform: str, channel_id: str) -> str:
    return f"{platform}:{channel_id}"
