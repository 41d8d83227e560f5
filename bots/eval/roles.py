"""What ``personae eval`` plays: role files in AutoRPEval's JSON shape, or characters from the database.

An AutoRPEval role file (BeyondDialogue's ``AutoRPEval/data/roles_en/*.json``) holds the role's
profile (``name``, ``world``, ``character``, ``personality`` as an MBTI code, ``style``), its
``sys_prompt`` template, four ``role_candidates`` with the right ``role_answer``, and ``chats``: one
per partner, each with the partner's description, a ``scene`` and the labels the role should show
there (``emotions`` 0-10 and ``relationship_score``). The role is played through personae's own
prompt builder, so ``sys_prompt`` is kept only for reference.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from core.character import Character, CharacterProfile, check_mbti, check_words
from core.emotions import EMOTIONS, EMOTIONS_ZH, EmotionState
from core.errors import InvalidInput
from core.prompt import expand_mbti, fill_placeholders

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
LETTERS = "ABCD"
_CJK = re.compile(r"[\u3400-\u9fff]")
_ZH_TO_EN = {zh: en for en, zh in EMOTIONS_ZH.items()}


@dataclass(frozen=True, slots=True)
class EvalChat:
    """One scene the role plays with one partner, and the labels it should show there."""

    partner: str
    partner_description: str
    scene: str
    emotion: EmotionState  # the label: the emotions the role is told to have (and should show)
    relationship: int  # the label: the intimacy with the partner, 0-10
    dialogue: tuple[tuple[str, str], ...] = ()  # a recorded dialogue (AutoRPEval's ``dialogues``), if any


@dataclass(frozen=True, slots=True)
class EvalRole:
    """A role to evaluate: its profile, its scenes, and the identity question for role choice."""

    profile: CharacterProfile
    chats: tuple[EvalChat, ...]
    role_candidates: str | None = None  # "A. ...\nB. ..." (None: role choice is not asked)
    role_answer: str | None = None  # the right letter
    source: str = ""
    examples: str = ""  # the card's example dialogue (stored characters only), sent as the engine would (off by default)
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.profile.name

    def character(self) -> Character:
        """The role as a ``Character``, the shape the appraisers take."""
        return Character(id=0, profile=self.profile, card=self.card or {"data": {}})


def _level(where: str, value: object) -> int:
    """A 0-10 label (AutoRPEval writes relationships as ``7.0`` and sometimes ``"7"``)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInput(f"{where} must be a number 0-10, not {value!r}") from None
    if not 0 <= number <= 10:
        raise InvalidInput(f"{where} must be 0-10, not {value!r}")
    return int(round(number))


def _emotion_label(where: str, values: object) -> EmotionState:
    if not isinstance(values, Mapping):
        raise InvalidInput(f"{where} must be an object of the six emotions")
    levels = {}
    for key, value in values.items():
        name = _ZH_TO_EN.get(key, key)
        if name not in EMOTIONS:
            raise InvalidInput(f"{where} names an unknown emotion {key!r}")
        levels[name] = _level(f"{where}.{key}", value)
    return EmotionState.from_mapping(levels)


def _recorded(where: str, value: object) -> tuple[tuple[str, str], ...]:
    """AutoRPEval's played dialogues: ``[{"role": name, "dialogue": text}, ...]``."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(d, Mapping) and isinstance(d.get("role"), str) and isinstance(d.get("dialogue"), str) for d in value
    ):
        raise InvalidInput(f'{where} must be a list of {{"role": name, "dialogue": text}}')
    return tuple((d["role"], d["dialogue"]) for d in value)


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{where} has no {key!r} text")
    return value.strip()


def role_from_json(data: object, source: str = "") -> EvalRole:
    """An ``EvalRole`` from a parsed AutoRPEval role file; InvalidInput says what is missing."""
    where = source or "the role file"
    if not isinstance(data, Mapping):
        raise InvalidInput(f"{where} must hold a JSON object")
    name = _text(data, "name", where)
    language = data.get("language") or ("zh" if _CJK.search(name + str(data.get("character", ""))) else "en")
    chats_in = data.get("chats")
    if not isinstance(chats_in, Mapping) or not chats_in:
        raise InvalidInput(f"{where} has no 'chats' (one object per partner, with a scene and labels)")
    chats = []
    for key, chat in chats_in.items():
        at = f"{where}: chats.{key}"
        if not isinstance(chat, Mapping):
            raise InvalidInput(f"{at} must be an object")
        if "relationship_score" not in chat and "relationship" not in chat:
            raise InvalidInput(f"{at} has no 'relationship_score'")
        chats.append(EvalChat(
            partner=str(chat.get("chat_role") or key).strip(),
            partner_description=str(chat.get("role_des") or "").strip(),
            scene=_text(chat, "scene", at),
            emotion=_emotion_label(f"{at}.emotions", chat.get("emotions")),
            relationship=_level(f"{at}.relationship_score", chat.get("relationship_score", chat.get("relationship"))),
            dialogue=_recorded(f"{at}.dialogues", chat.get("dialogues")),
        ))
    first = chats[0]
    profile = CharacterProfile(
        name=name,
        world=_text(data, "world", where),
        traits=check_words("character", data.get("character")),
        mbti=check_mbti(data.get("personality")),
        style=check_words("style", data.get("style")),
        language=language,
        scene=first.scene,
        emotion=first.emotion,
        relationship=first.relationship,
    )
    answer = str(data.get("role_answer") or "").strip().upper() or None
    candidates = data.get("role_candidates")
    if not isinstance(candidates, str) or answer not in tuple(LETTERS):
        candidates, answer = None, None
    return EvalRole(profile, tuple(chats), candidates, answer, source=source)


def load_role_file(path: Path) -> EvalRole:
    """Read one AutoRPEval role file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} is not JSON: {exc}") from None
    return role_from_json(data, source=str(path))


def bundled_role_files() -> list[Path]:
    """The small English role set shipped with personae (written from the sample characters)."""
    return sorted(SAMPLES_DIR.glob("*.json"))


# A stored character has no partner or labels of its own: it meets a stranger in its own scene and
# is measured against its card's baseline feelings, which is what the bots start every person from.
_STRANGER = {
    "en": ("Traveller", "A curious traveller who has just arrived and wants to know who they are talking to."),
    "zh": ("旅人", "一位刚刚到来的旅人，好奇地想了解眼前的人。"),
}


def describe_candidate(profile: CharacterProfile) -> str:
    """One line of the identity question: who a role is, in the words of its profile."""
    if profile.language == "zh":
        return (f"{profile.name}。{profile.name}的性格是{'，'.join(profile.traits)}，MBTI类型是"
                f"{expand_mbti(profile.mbti, 'zh')}，说话风格是{'、'.join(profile.style)}。")
    return (f"{profile.name}. {profile.name}'s character is {', '.join(t.lower() for t in profile.traits)}. "
            f"MBTI type: {expand_mbti(profile.mbti)}. Speaking style: {', '.join(s.lower() for s in profile.style)}.")


def identity_question(profile: CharacterProfile, others: Iterable[CharacterProfile]) -> tuple[str | None, str | None]:
    """Candidates (the role and up to three others, in an order fixed by the name) and the right letter."""
    pool = [p for p in others if p.name.casefold() != profile.name.casefold()][:3]
    if not pool:
        return None, None
    options = [profile, *pool]
    random.Random(profile.name).shuffle(options)
    lines = [f"{LETTERS[i]}. {describe_candidate(p)}" for i, p in enumerate(options)]
    return "\n".join(lines), LETTERS[options.index(profile)]


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def role_from_character(character: Character, others: Iterable[CharacterProfile] = ()) -> EvalRole:
    """A stored character as an ``EvalRole``: one scene (its own) with a stranger, labelled with its baseline."""
    profile = character.profile
    lacking = [what for what, absent in (
        ("MBTI type", profile.mbti is None or "mbti" in profile.missing),
        ("traits", "traits" in profile.missing),
        ("speaking style", "style" in profile.missing),
    ) if absent]
    if lacking:
        raise InvalidInput(
            f"{profile.name} has no {_and(lacking)} to measure against; "
            f"fill {'it' if len(lacking) == 1 else 'them'} with `personae characters derive {profile.name!r}` or `personae characters edit`"
        )
    partner, description = _STRANGER[profile.language]
    chat = EvalChat(
        partner=partner,
        partner_description=description,
        scene=fill_placeholders(profile.scene, char=profile.name, user=partner),
        emotion=profile.emotion,
        relationship=profile.relationship,
    )
    candidates, answer = identity_question(profile, others)
    return EvalRole(
        replace(profile, scene=chat.scene), (chat,), candidates, answer,
        source=f"character {profile.name}", examples=character.examples, card=character.card,
    )
