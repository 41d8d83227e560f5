"""Character Card V1/V2/V3 JSON: reading, validating, and our profile inside ``extensions.personae``.

The whole card is kept as it came (unknown fields and foreign extensions included) so that export
gives back what was imported; the BeyondDialogue profile is read from it on load.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any, Mapping

from core.character import (
    DERIVABLE_FIELDS,
    MAX_NAME_CHARS,
    PROFILE_FIELDS,
    CharacterProfile,
    check_language,
    check_mbti,
    check_name,
    check_text,
    check_words,
)
from core.emotions import EMOTIONS, EmotionState, check_level, parse_emotion_pairs
from core.errors import InvalidInput
from core.lorebook import read_lorebook
from core.text import clean_value, one_line

EXTENSION_KEY = "personae"
DERIVED_KEY = "derived"  # in our extension: the profile fields the model proposed, until an admin edits them
MAX_CARD_JSON_BYTES = 2_000_000
MAX_FIELD_CHARS = 32_000
MAX_SCENE_CHARS = 4_000
MAX_NUMBER_DIGITS = 18  # past an int64, no field of a card means anything
MAX_CARD_INT = 10**MAX_NUMBER_DIGITS - 1
SPEC_V2, SPEC_V3 = "chara_card_v2", "chara_card_v3"
_V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
_TEXT_FIELDS = _V1_FIELDS + ("creator_notes", "system_prompt", "post_history_instructions")


def parse_card_json(raw: bytes | str) -> dict[str, Any]:
    """Parse card JSON into a V2 or V3 card dict, or raise InvalidInput with the reason.

    A V1 card (fields at top level, no ``spec``) is lifted into V2 form; its other top-level keys
    are kept.
    """
    if isinstance(raw, bytes):
        if len(raw) > MAX_CARD_JSON_BYTES:
            raise InvalidInput(
                f"the card is {len(raw):,} bytes; the limit is {MAX_CARD_JSON_BYTES:,}"
            )
        try:
            raw = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"the card is not valid UTF-8 (byte {exc.start})") from None
    elif len(raw) > MAX_CARD_JSON_BYTES:
        raise InvalidInput(f"the card is {len(raw):,} characters; the limit is {MAX_CARD_JSON_BYTES:,}")
    try:
        card = json.loads(raw, parse_int=_card_int, parse_float=_card_float, parse_constant=_card_constant)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"the card is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidInput("the card is nested too deeply to read") from None
    try:
        return normalise_card(card)
    except RecursionError:
        raise InvalidInput("the card is nested too deeply to read") from None


def _card_int(digits: str) -> int:
    # Python refuses to parse more than 4300 digits (ValueError, not a JSON error); a card needs none
    # of that size, so anything past an int64 is refused here, with one line.
    if len(digits.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise InvalidInput(f"the card holds a number with {len(digits.lstrip('-')):,} digits; the limit is {MAX_NUMBER_DIGITS}")
    return int(digits)


def _card_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or len(text) > 64:
        raise InvalidInput(f"the card holds a number out of range ({text[:20]}{'…' if len(text) > 20 else ''})")
    return value


def _card_constant(name: str) -> float:
    raise InvalidInput(f"the card holds {name}, which is not a number JSON allows")


def normalise_card(card: object) -> dict[str, Any]:
    """Check a decoded card and return it in V2/V3 form (a cleaned deep copy).

    Every string in it, names and keys included, goes through ``clean_text`` (no control
    characters or lone surrogates, NFC), so nothing a card holds can break the database or the model.
    """
    if not isinstance(card, dict):
        raise InvalidInput("the card must be a JSON object")
    card = clean_value(card)
    assert isinstance(card, dict)
    spec = card.get("spec")
    if spec is None:
        if "name" not in card:
            raise InvalidInput("the card has no name (neither data.name nor a V1 name field)")
        data = {k: card.pop(k) for k in list(card) if k in _V1_FIELDS}
        card = {"spec": SPEC_V2, "spec_version": "2.0", "data": data, **card}
    elif spec not in (SPEC_V2, SPEC_V3):
        raise InvalidInput(f"unknown card spec {spec!r}; expected {SPEC_V2!r} or {SPEC_V3!r}")
    data = card.get("data")
    if not isinstance(data, dict):
        raise InvalidInput("the card has no data object")
    check_name(data.get("name"))
    for key in _TEXT_FIELDS:
        if key in data:
            check_text(key, data[key], limit=MAX_FIELD_CHARS)
    for key in ("alternate_greetings", "group_only_greetings", "tags"):
        value = data.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise InvalidInput(f"{key} must be a list of strings")
        for v in value or ():
            check_text(key, v, limit=MAX_FIELD_CHARS)
    extensions = data.setdefault("extensions", {})
    if not isinstance(extensions, dict):
        raise InvalidInput("extensions must be an object")
    _check_numbers(card)
    profile_from_card(card)  # validates our extension, if any
    examples_switch(card)
    return card


def _check_numbers(value: object) -> None:
    """Refuse numbers no card needs (a card built in code, not parsed, can hold any int or float)."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -MAX_CARD_INT <= value <= MAX_CARD_INT:
            raise InvalidInput(f"the card holds a number out of range (more than {MAX_NUMBER_DIGITS} digits)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput("the card holds a number out of range (infinite or not a number)")
    elif isinstance(value, dict):
        for v in value.values():
            _check_numbers(v)
    elif isinstance(value, list):
        for v in value:
            _check_numbers(v)


def profile_from_card(card: Mapping[str, Any]) -> CharacterProfile:
    """Read the BeyondDialogue profile from a normalised card; absent fields are listed in ``missing``."""
    data = card["data"]
    ext = data.get("extensions", {}).get(EXTENSION_KEY) or {}
    if not isinstance(ext, dict):
        raise InvalidInput(f"extensions.{EXTENSION_KEY} must be an object")
    missing = tuple(f for f in PROFILE_FIELDS if f not in ext)
    language = check_language(ext.get("language", "en"))
    name = check_name(data.get("name"))
    personality = (data.get("personality") or "").strip()
    description = (data.get("description") or "").strip()
    if "world" in ext:
        world = check_text("world", ext["world"], limit=MAX_NAME_CHARS * 4, required=True).strip()
    else:
        world = _first_sentence(description) or ("他们自己的世界" if language == "zh" else f"{name}'s own world")
    traits = check_words("traits", ext["traits"]) if "traits" in ext else check_words(
        "traits", personality[:400] or ("真实" if language == "zh" else "genuine")
    )
    style = check_words("style", ext["style"]) if "style" in ext else (
        ("自然",) if language == "zh" else ("natural",)
    )
    mbti = check_mbti(ext["mbti"]) if "mbti" in ext else None
    emotion = ext.get("emotion", {})
    if not isinstance(emotion, dict):
        raise InvalidInput("emotion must be an object of the six emotions, each 0-10")
    scene = check_text("scenario", data.get("scenario"), limit=MAX_FIELD_CHARS).strip()
    return CharacterProfile(
        name=name,
        world=world,
        traits=traits,
        mbti=mbti,
        style=style,
        language=language,
        scene=scene,
        emotion=EmotionState.from_mapping(emotion),
        relationship=check_level("relationship", ext.get("relationship", 3)),
        greeting=data.get("first_mes") or "",
        missing=missing,
        derived=derived_fields(ext),
        lorebook=read_lorebook(card),
    )


def derived_fields(ext: Mapping[str, Any]) -> tuple[str, ...]:
    """The fields our extension ``ext`` marks as derived (and still holds), in profile order.

    A mark is only ever written by personae; a card from elsewhere with a strange one is not
    refused for it: what is not a derivable field name is ignored.
    """
    marked = ext.get(DERIVED_KEY)
    if not isinstance(marked, list):
        return ()
    return tuple(f for f in DERIVABLE_FIELDS if f in marked and f in ext)


def _first_sentence(text: str) -> str:
    for stop in (". ", "。", "\n"):
        if stop in text:
            text = text.split(stop, 1)[0]
    return text.strip()[:200]


def is_public(card: Mapping[str, Any]) -> bool:
    """Whether anyone may pick the character in a private chat (``extensions.personae.public``)."""
    ext = card["data"].get("extensions", {}).get(EXTENSION_KEY) or {}
    return bool(ext.get("public", True))


def examples_switch(card: Mapping[str, Any]) -> bool | None:
    """Whether the card's example dialogue goes to the model as leading turns
    (``extensions.personae.examples``); None: the setting decides (PERSONAE_CARD_EXAMPLES)."""
    ext = card["data"].get("extensions", {}).get(EXTENSION_KEY) or {}
    value = ext.get("examples")
    if value is not None and not isinstance(value, bool):
        raise InvalidInput("examples must be on, off or default")
    return value


def parse_switch(name: str, value: object) -> bool | None:
    """``on``/``off``/``default`` (or a bool, or None) as True/False/None."""
    if value is None or isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("on", "true", "yes", "1"):
        return True
    if word in ("off", "false", "no", "0"):
        return False
    if word == "default":
        return None
    if not word:
        raise InvalidInput(f"{name} needs a value: on, off or default")
    raise InvalidInput(f"{name} must be on, off or default, not {str(value)[:40]!r}")


def new_card(
    *,
    name: str,
    world: str,
    traits: list[str] | tuple[str, ...],
    mbti: str,
    style: list[str] | tuple[str, ...],
    language: str = "en",
    scene: str = "",
    greeting: str = "",
    description: str = "",
    emotion: Mapping[str, object] | None = None,
    relationship: int = 3,
    public: bool = True,
) -> dict[str, Any]:
    """Build a V2 card for a character created from scratch."""
    card = {
        "spec": SPEC_V2,
        "spec_version": "2.0",
        "data": {
            "name": name,
            "description": description,
            "personality": "",
            "scenario": scene,
            "first_mes": greeting,
            "mes_example": "",
            "creator_notes": "",
            "system_prompt": "",
            "post_history_instructions": "",
            "alternate_greetings": [],
            "tags": [],
            "creator": "",
            "character_version": "1",
            "extensions": {
                EXTENSION_KEY: {
                    "world": world,
                    "traits": list(traits),
                    "mbti": mbti,
                    "style": list(style),
                    "language": language,
                    "emotion": dict(EmotionState.from_mapping(emotion or {}).as_dict()),
                    "relationship": relationship,
                    "public": public,
                }
            },
        },
    }
    return normalise_card(card)


EDITABLE = {
    "name": ("data", "name"),
    "scene": ("data", "scenario"),
    "greeting": ("data", "first_mes"),
    "description": ("data", "description"),
    "world": ("ext", "world"),
    "traits": ("ext", "traits"),
    "mbti": ("ext", "mbti"),
    "style": ("ext", "style"),
    "language": ("ext", "language"),
    "emotion": ("ext", "emotion"),
    "relationship": ("ext", "relationship"),
    "public": ("ext", "public"),
    "examples": ("ext", "examples"),  # on, off or default (PERSONAE_CARD_EXAMPLES)
}


def edit_card(card: Mapping[str, Any], changes: Mapping[str, object], *, derived: bool = False) -> dict[str, Any]:
    """Return a copy of ``card`` with profile fields changed; the result is validated whole.

    A changed field loses its derived mark (a person set it); with ``derived`` the changed
    derivable fields get the mark instead (they are the model's proposal).
    """
    unknown = [k for k in changes if k not in EDITABLE]
    if unknown:
        raise InvalidInput(f"cannot edit {unknown[0]!r}; editable fields: {', '.join(EDITABLE)}")
    new = copy.deepcopy(dict(card))
    data = new["data"]
    ext = data.setdefault("extensions", {}).setdefault(EXTENSION_KEY, {})
    for key, value in changes.items():
        where, field = EDITABLE[key]
        if key in ("traits", "style"):
            value = list(check_words(key, value)) if isinstance(value, str) else value
            if isinstance(value, list):
                value = [one_line(v).strip() if isinstance(v, str) else v for v in value]
        elif key in ("world", "scene") and isinstance(value, str):
            value = one_line(value).strip()  # one line of the system prompt each
        elif key == "emotion":
            # Only the emotions named change: "happiness=9" leaves the other five where they were.
            named = parse_emotion_pairs(value) if isinstance(value, str) else dict(value)  # type: ignore[call-overload]
            current = ext.get("emotion") if isinstance(ext.get("emotion"), dict) else {}
            known = {k: v for k, v in current.items() if k in EMOTIONS}
            value = EmotionState.from_mapping(known).with_changes(named).as_dict()
        elif key == "relationship":
            value = check_level("relationship", value)
        elif key == "mbti":
            value = check_mbti(value)
        elif key == "public":
            value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        elif key == "examples":
            value = parse_switch("examples", value)
            if value is None:
                ext.pop(field, None)  # default: the setting decides
                continue
        (data if where == "data" else ext)[field] = value
    _mark_derived(ext, [k for k in changes if k in DERIVABLE_FIELDS], derived)
    return normalise_card(new)


def _mark_derived(ext: dict[str, Any], fields: list[str], derived: bool) -> None:
    marked = set(derived_fields(ext))
    marked = (marked | set(fields)) if derived else (marked - set(fields))
    if marked:
        ext[DERIVED_KEY] = [f for f in DERIVABLE_FIELDS if f in marked]
    else:
        ext.pop(DERIVED_KEY, None)


def card_json(card: Mapping[str, Any]) -> str:
    """The card as pretty JSON text, non-ASCII kept readable."""
    return json.dumps(card, ensure_ascii=False, indent=2) + "\n"


def emotion_keys_help() -> str:
    return ", ".join(EMOTIONS)
