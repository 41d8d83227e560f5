"""A character's BeyondDialogue profile and the stored character that carries its card."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from core.emotions import EmotionState, check_level
from core.errors import InvalidInput
from core.lorebook import Lorebook
from core.text import one_line

LANGUAGES = ("en", "zh")
MBTI_LETTERS = ("EI", "NS", "TF", "JP")
MAX_NAME_CHARS = 64
# Fields the BeyondDialogue prompt needs that a card from elsewhere may not carry.
PROFILE_FIELDS = ("world", "traits", "mbti", "style", "language", "emotion", "relationship")
# The ones the model can propose from a card's description and dialogue (``core.derive``).
DERIVABLE_FIELDS = ("world", "traits", "mbti", "style")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_text(name: str, value: object, *, limit: int, required: bool = False) -> str:
    """Return ``value`` as clean text or raise InvalidInput saying what is wrong with it."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be text, not {type(value).__name__}")
    if "\x00" in value:
        raise InvalidInput(f"{name} contains a NUL byte")
    if len(value) > limit:
        raise InvalidInput(f"{name} is {len(value):,} characters long; the limit is {limit:,}")
    if required and not value.strip():
        raise InvalidInput(f"{name} is missing or empty")
    return value


def check_name(value: object) -> str:
    """A character name: 1-64 characters, no control characters."""
    name = check_text("name", value, limit=MAX_NAME_CHARS, required=True).strip()
    if _CONTROL.search(name) or "\n" in name:
        raise InvalidInput("name must be one line without control characters")
    return name


def check_mbti(value: object) -> str:
    """A four-letter MBTI code such as ``ENFJ`` (case-insensitive)."""
    if not isinstance(value, str) or len(value.strip()) != 4:
        raise InvalidInput(f"MBTI must be four letters such as ENFJ, not {value!r}")
    code = value.strip().upper()
    for letter, allowed in zip(code, MBTI_LETTERS):
        if letter not in allowed:
            raise InvalidInput(
                f"MBTI {value!r} is not a type: each letter must be one of E/I, N/S, T/F, J/P"
            )
    return code


def check_language(value: object) -> str:
    if value not in LANGUAGES:
        raise InvalidInput(f"language must be 'en' or 'zh', not {value!r}")
    return value  # type: ignore[return-value]


def check_words(name: str, value: object, *, limit: int = 16) -> tuple[str, ...]:
    """A short list of words (traits, speaking style); a comma-separated string is accepted."""
    if isinstance(value, str):
        value = [w for w in re.split(r"[,，、]", value)]
    if not isinstance(value, (list, tuple)):
        raise InvalidInput(f"{name} must be a list of words")
    # Each word goes into one line of the system prompt: a line break in it becomes a space.
    words = tuple(one_line(check_text(name, w, limit=80)).strip() for w in value)
    words = tuple(w for w in words if w)
    if not words:
        raise InvalidInput(f"{name} needs at least one word")
    if len(words) > limit:
        raise InvalidInput(f"{name} has {len(words)} entries; the limit is {limit}")
    return words


@dataclass(frozen=True, slots=True)
class CharacterProfile:
    """Everything the BeyondDialogue system prompt needs to know about a character."""

    name: str
    world: str
    traits: tuple[str, ...]
    mbti: str | None
    style: tuple[str, ...]
    language: str
    scene: str
    emotion: EmotionState
    relationship: int
    greeting: str = ""
    # Profile fields the card did not supply; the prompt falls back on what the card has.
    missing: tuple[str, ...] = ()
    # Profile fields the model proposed (``core.derive``) and no admin has edited since.
    derived: tuple[str, ...] = ()
    # The card's lorebook (``character_book``) as activation reads it; None when it has none.
    lorebook: Lorebook | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        check_language(self.language)
        if self.mbti is not None:
            object.__setattr__(self, "mbti", check_mbti(self.mbti))
        object.__setattr__(self, "relationship", check_level("relationship", self.relationship))


@dataclass(slots=True)
class Character:
    """A stored character: its id, the whole card it came from, and the profile read from it."""

    id: int
    profile: CharacterProfile
    card: dict[str, Any]
    public: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def examples(self) -> str:
        """The card's example dialogue (``mes_example``), empty when it has none."""
        return self.card["data"].get("mes_example") or ""
