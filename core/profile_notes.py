"""What a person reads about a profile's missing and derived fields: the values the prompt uses.

A card from elsewhere may lack the BeyondDialogue fields; the system prompt then fills their slots
from what the card has (``core.cards.profile_from_card``) or with a fixed text (``MBTI: not
specified``). These lines show exactly those values, in the form the prompt writes them, so an
admin sees what the model will read before anyone chats.
"""

from __future__ import annotations

from core.character import DERIVABLE_FIELDS, PROFILE_FIELDS, CharacterProfile
from core.prompt import expand_mbti, style_text, traits_text

LABELS = {
    "world": "World", "traits": "Traits", "mbti": "MBTI", "style": "Style",
    "language": "Language", "emotion": "Emotion", "relationship": "Relationship",
}
_LANGUAGE_NAMES = {"en": "English", "zh": "Chinese"}


def field_value(profile: CharacterProfile, field: str) -> str:
    """``field`` of ``profile`` as the prompt writes it (a missing MBTI: ``not specified``)."""
    if field == "world":
        return profile.world
    if field == "traits":
        return traits_text(profile)
    if field == "mbti":
        return profile.mbti or expand_mbti(None, profile.language)
    if field == "style":
        return style_text(profile)
    if field == "language":
        return _LANGUAGE_NAMES.get(profile.language, profile.language)
    if field == "emotion":
        return ", ".join(f"{name} {level}" for name, level in profile.emotion.as_dict().items())
    if field == "relationship":
        return str(profile.relationship)
    raise ValueError(f"not a profile field: {field!r}")


def field_values(profile: CharacterProfile, fields: tuple[str, ...] | list[str]) -> str:
    """``World: …; MBTI: not specified; …`` for ``fields``, in profile order, on one line."""
    return "; ".join(f"{LABELS[f]}: {field_value(profile, f)}" for f in PROFILE_FIELDS if f in fields)


def missing_derivable(profile: CharacterProfile) -> tuple[str, ...]:
    """The fields the model could propose that the card lacks."""
    return tuple(f for f in DERIVABLE_FIELDS if f in profile.missing)


def missing_note(
    profile: CharacterProfile, *, edit: str, derive: str, failed: str | None = None, subject: str = "It"
) -> str:
    """One line: which fields the card lacks, what the prompt uses for each, and how to fill them.

    ``edit`` and ``derive`` name the commands that fill them where the person reads this;
    ``failed`` says why deriving them did not work, when it was tried. Empty when nothing is missing.
    """
    if not profile.missing:
        return ""
    why = f" (deriving them failed: {failed.rstrip('.')})" if failed else ""
    fill = f"Set them with {edit}" + (f" or {derive}." if missing_derivable(profile) else ".")
    return (
        f"{subject} has no {', '.join(profile.missing)} yet{why}, so the prompt uses "
        f"{field_values(profile, profile.missing)}. {fill}"
    )


def derived_note(profile: CharacterProfile, fields: tuple[str, ...] | list[str], *, edit: str) -> str:
    """One line: the fields the model proposed and stored, with their values."""
    return f"Derived by the model from the card (change any with {edit}): {field_values(profile, fields)}."
