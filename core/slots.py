"""Which channel a model request is for, so that the shared model budget (``ports.ModelSlots``)
can keep one busy channel from taking all of it."""

from __future__ import annotations

import math
from contextvars import ContextVar

# Set by the turn before it asks the model (a task's copy reaches its background appraisal too).
MODEL_CHANNEL: ContextVar[str] = ContextVar("personae_model_channel", default="")


def channel_cap(cap: int, share: float) -> int:
    """The most slots one channel may hold: ``share`` of ``cap``, at least one."""
    return max(1, min(cap, math.ceil(cap * share)))


def channel_of(platform: str, channel_id: str) -> str:
    return f"{platform}:{channel_id}"
