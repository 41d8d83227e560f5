"""How feelings move: an appraisal pulls the state toward what it read, a step at a time, and idle
time lets the emotions drift back toward the character's baseline.

Pure functions over ``RelationshipState``; ``Dynamics`` carries the settings and the clock, so tests
can move time without sleeping.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field, replace
from typing import Callable

from core.emotions import EMOTIONS, SCALE_MAX, SCALE_MIN, EmotionState
from core.state import Appraisal, RelationshipState


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def round_half_away(x: float) -> int:
    """Round to the nearest integer, halves away from zero (so a pull of 0.5 still moves a level)."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def clamp(value: int) -> int:
    return max(SCALE_MIN, min(SCALE_MAX, value))


def step_toward(current: int, appraised: int, weight: float, cap: int) -> int:
    """``current`` moved ``weight`` of the way to ``appraised``, by at most ``cap`` levels, kept on 0-10."""
    delta = round_half_away(weight * (appraised - current))
    return clamp(current + max(-cap, min(cap, delta)))


def drift(state: RelationshipState, baseline: EmotionState, now: dt.datetime, half_life_s: float) -> RelationshipState:
    """The emotions of ``state`` after the time since ``state.updated_at``: each distance to the
    baseline halves every ``half_life_s`` seconds. Intimacy does not drift: it is a relationship,
    not a mood. The result is dated ``now``."""
    elapsed = (now - state.updated_at).total_seconds()
    if elapsed <= 0:
        return state
    keep = 0.5 ** (elapsed / half_life_s)
    base = baseline.as_dict()
    values = {name: base[name] + round_half_away((level - base[name]) * keep) for name, level in state.emotion.as_dict().items()}
    return replace(state, emotion=EmotionState(**values), updated_at=now)


def blend(state: RelationshipState, appraisal: Appraisal, *, weight: float, max_emotion_step: int, max_intimacy_step: int) -> RelationshipState:
    """``state`` moved toward the appraisal on every dimension the appraisal has a reading for."""
    emotion = state.emotion.as_dict()
    for name, appraised in appraisal.emotion.items():
        emotion[name] = step_toward(emotion[name], appraised, weight, max_emotion_step)
    intimacy = state.intimacy
    if appraisal.intimacy is not None:
        intimacy = step_toward(intimacy, appraisal.intimacy, weight, max_intimacy_step)
    return replace(state, emotion=EmotionState(**emotion), intimacy=intimacy)


def same_feelings(a: RelationshipState, b: RelationshipState) -> bool:
    return a.emotion == b.emotion and a.intimacy == b.intimacy


def describe_change(before: RelationshipState, after: RelationshipState) -> str:
    """``happiness +2, anger -1, intimacy +1`` (or ``no change``)."""
    parts = []
    b, a = before.emotion.as_dict(), after.emotion.as_dict()
    for name in EMOTIONS:
        if a[name] != b[name]:
            parts.append(f"{name} {a[name] - b[name]:+d}")
    if after.intimacy != before.intimacy:
        parts.append(f"intimacy {after.intimacy - before.intimacy:+d}")
    return ", ".join(parts) or "no change"


@dataclass(frozen=True, slots=True)
class Dynamics:
    """The update rule's settings: how far one appraisal pulls (``weight``), the largest step per
    turn, and the half-life of the drift back to the baseline; ``clock`` gives the time."""

    weight: float = 0.5
    max_emotion_step: int = 2
    max_intimacy_step: int = 1
    half_life_s: float = 6 * 3600.0
    clock: Callable[[], dt.datetime] = field(default=utcnow, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.weight <= 1:
            raise ValueError(f"the appraisal weight must be above 0 and at most 1, not {self.weight}")
        if self.max_emotion_step < 0 or self.max_intimacy_step < 0:
            raise ValueError("the largest step per turn cannot be negative")
        if self.half_life_s <= 0:
            raise ValueError(f"the drift half-life must be positive, not {self.half_life_s}")

    def as_of_now(self, state: RelationshipState, baseline: EmotionState) -> RelationshipState:
        """The state as it reads now, after drifting toward ``baseline`` since it was last written."""
        return drift(state, baseline, self.clock(), self.half_life_s)

    def apply(self, state: RelationshipState, appraisal: Appraisal, baseline: EmotionState) -> RelationshipState:
        """Drift to now, then blend the appraisal in (capped, clamped); same version, dated now."""
        now = self.clock()
        current = drift(state, baseline, now, self.half_life_s)
        moved = blend(
            current,
            appraisal,
            weight=self.weight,
            max_emotion_step=self.max_emotion_step,
            max_intimacy_step=self.max_intimacy_step,
        )
        return replace(moved, updated_at=now)
