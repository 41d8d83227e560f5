"""The six emotions and the intimacy level a character feels toward one person."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping

from core.errors import InvalidInput

EMOTIONS: tuple[str, ...] = ("happiness", "sadness", "disgust", "fear", "surprise", "anger")
EMOTIONS_ZH: dict[str, str] = {
    "happiness": "快乐",
    "sadness": "悲伤",
    "disgust": "厌恶",
    "fear": "恐惧",
    "surprise": "惊讶",
    "anger": "愤怒",
}
SCALE_MIN, SCALE_MAX = 0, 10


def check_level(name: str, value: object) -> int:
    """Return ``value`` as an int on the 0-10 scale, or raise InvalidInput naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value.strip()) <= 4:
            value = int(value.strip())
        else:
            shown = repr(value)
            shown = shown if len(shown) <= 40 else shown[:39] + "…"
            raise InvalidInput(f"{name} must be a whole number from 0 to 10, not {shown}")
    if not SCALE_MIN <= value <= SCALE_MAX:
        shown = str(value) if abs(value) < 10**12 else "a number that large"
        raise InvalidInput(f"{name} must be from 0 to 10, not {shown}")
    return value


@dataclass(frozen=True, slots=True)
class EmotionState:
    """Six emotions, each an integer 0-10, in the order the BeyondDialogue prompt lists them."""

    happiness: int = 0
    sadness: int = 0
    disgust: int = 0
    fear: int = 0
    surprise: int = 0
    anger: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, check_level(f.name, getattr(self, f.name)))

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> "EmotionState":
        """Build from ``{"happiness": 1, ...}``; unknown names are an error, missing ones are 0."""
        unknown = [k for k in values if k not in EMOTIONS]
        if unknown:
            raise InvalidInput(
                f"unknown emotion {unknown[0]!r}; the emotions are {', '.join(EMOTIONS)}"
            )
        return cls(**{k: values[k] for k in EMOTIONS if k in values})  # type: ignore[arg-type]

    @classmethod
    def parse(cls, text: str) -> "EmotionState":
        """Parse ``happiness=1,sadness=8,...`` as typed on a command line (missing ones are 0)."""
        return cls.from_mapping(parse_emotion_pairs(text))

    def with_changes(self, changes: Mapping[str, object]) -> "EmotionState":
        """This state with the named emotions set to new levels; the others keep theirs."""
        return EmotionState.from_mapping({**self.as_dict(), **changes})

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in EMOTIONS}

    def render(self, language: str = "en") -> str:
        """The prompt's emotion line: ``happiness: 1, sadness: 8, ...`` (Chinese names for zh)."""
        names = EMOTIONS_ZH if language == "zh" else {n: n for n in EMOTIONS}
        return ", ".join(f"{names[n]}: {getattr(self, n)}" for n in EMOTIONS)


def parse_emotion_pairs(text: str) -> dict[str, object]:
    """The ``name=value`` pairs of ``happiness=1,sadness=8`` as typed, unchecked (only those named)."""
    values: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise InvalidInput(f"expected name=value in {part!r}, e.g. happiness=3")
        values[name.strip()] = value.strip()
    return values
