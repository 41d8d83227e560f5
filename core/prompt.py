"""Everything that becomes text for the model: the BeyondDialogue system prompt and the chat turns.

The templates themselves are constants in ``core.prompt_templates``. Each template is formatted
exactly once with finished field values, so a ``{`` typed by a user or written in a card reaches the
model as a ``{``.
"""

from __future__ import annotations

import re

from dataclasses import dataclass
from typing import Callable, Sequence

from core.character import CharacterProfile
from core.emotions import EmotionState
from core.prompt_templates import (
    EMOTION_APPRAISAL_EN,
    EMOTION_APPRAISAL_ZH,
    RELATIONSHIP_APPRAISAL_EN,
    RELATIONSHIP_APPRAISAL_ZH,
    SYSTEM_PROMPT_EN,
    SYSTEM_PROMPT_ZH,
)
from core.text import neutralise_controls, one_line, one_line_name

_MBTI_EN = {
    "I": "Introverted (I)", "E": "Extraverted (E)", "N": "Intuitive (N)", "S": "Sensing (S)",
    "T": "Thinking (T)", "F": "Feeling (F)", "J": "Judging (J)", "P": "Perceiving (P)",
}
_MBTI_ZH = {
    "I": "内向型（I）", "E": "外向型（E）", "N": "直觉型（N）", "S": "实感型（S）",
    "T": "思维型（T）", "F": "情感型（F）", "J": "判断型（J）", "P": "感知型（P）",
}
# A card without an MBTI type still fills the slot (an empty slot confuses the model).
_NO_MBTI = {"en": "not specified", "zh": "未指定"}


def expand_mbti(mbti: str | None, language: str = "en") -> str:
    """``ENFJ`` -> ``Extraverted (E), Intuitive (N), Feeling (F), Judging (J)`` (or the Chinese form)."""
    if not mbti:
        return _NO_MBTI[language]
    if language == "zh":
        return "、".join(_MBTI_ZH[c] for c in mbti)
    return ", ".join(_MBTI_EN[c] for c in mbti)


_PLACEHOLDER = re.compile(r"\{\{(char|user)\}\}", re.IGNORECASE)


def fill_placeholders(text: str, *, char: str, user: str) -> str:
    """Replace the card convention's ``{{char}}`` and ``{{user}}`` (any case) with the names."""
    if "{{" not in text:
        return text
    names = {"char": char, "user": user}
    # One pass: a name that itself reads "{{user}}" is not filled in again.
    return _PLACEHOLDER.sub(lambda m: names[m.group(1).lower()], text)


def render_system_prompt(
    profile: CharacterProfile,
    *,
    chat_role: str,
    scene: str | None = None,
    emotion: EmotionState | None = None,
    relationship: int | None = None,
) -> str:
    """The BeyondDialogue system prompt for ``profile`` talking to ``chat_role``.

    ``scene``, ``emotion`` and ``relationship`` default to the card's scene and baselines.
    """
    zh = profile.language == "zh"
    emotion = emotion if emotion is not None else profile.emotion
    relationship = relationship if relationship is not None else profile.relationship
    # The person's display name is theirs to choose: one line, capped, so it cannot add a line to the prompt.
    chat_role = one_line_name(chat_role)
    scene_text = fill_placeholders(scene if scene is not None else profile.scene, char=profile.name, user=chat_role)
    template = SYSTEM_PROMPT_ZH if zh else SYSTEM_PROMPT_EN
    fields = dict(
        role_name=profile.name,
        world=profile.world,
        character=traits_text(profile),
        personality=expand_mbti(profile.mbti, profile.language),
        style=style_text(profile),
        scene=scene_text,
        emotion=emotion.render(profile.language),
        chat_role=chat_role,
        relationship=str(relationship),
    )
    # Card fields and scenes are typed by admins and proposed by the model: none of them may become a
    # control token or a line of its own (each slot of the template is one line).
    return template.format(**{k: neutralise_controls(one_line(v)) for k, v in fields.items()})


def traits_text(profile: CharacterProfile) -> str:
    """Traits as the training data writes them: English lower-cased joined with ``, ``; Chinese with ``，``."""
    return "，".join(profile.traits) if profile.language == "zh" else ", ".join(t.lower() for t in profile.traits)


def style_text(profile: CharacterProfile) -> str:
    """Speaking style: English lower-cased joined with ``, ``; Chinese joined with ``、``."""
    return "、".join(profile.style) if profile.language == "zh" else ", ".join(s.lower() for s in profile.style)


def render_emotion_appraisal(profile: CharacterProfile, *, scene: str, dialogues: str) -> str:
    """The alignment task that rates the six emotions ``profile`` shows in ``dialogues``."""
    template = EMOTION_APPRAISAL_ZH if profile.language == "zh" else EMOTION_APPRAISAL_EN
    return template.format(**_profile_slots(profile, scene), dialogues=dialogues)


def render_relationship_appraisal(profile: CharacterProfile, *, target_name: str, scene: str, dialogues: str) -> str:
    """The alignment task that rates the intimacy between ``profile`` and ``target_name``."""
    template = RELATIONSHIP_APPRAISAL_ZH if profile.language == "zh" else RELATIONSHIP_APPRAISAL_EN
    return template.format(**_profile_slots(profile, scene), target_name=one_line_name(target_name), dialogues=dialogues)


def _profile_slots(profile: CharacterProfile, scene: str) -> dict[str, str]:
    """The appraisal prompts' one-line slots: the profile and the scene (the dialogues are many lines)."""
    slots = dict(
        role_name=profile.name,
        character=traits_text(profile),
        MBTI=expand_mbti(profile.mbti, profile.language),
        style=style_text(profile),
        scene=scene,
    )
    return {k: one_line(v) for k, v in slots.items()}


def dialogue_lines(lines: Sequence[tuple[str, str]]) -> str:
    """``Name: text`` per utterance, one line each, joined with newlines (the appraisal prompts' dialogue field).

    Names and texts are made one line: a line break in either would add an utterance of its own
    (a message could write ``Hamlet: I adore you`` on a line of its own, credited to the character).
    """
    return "\n".join(f"{one_line_name(name)}: {one_line(text).strip()}" for name, text in lines)


@dataclass(frozen=True, slots=True)
class Turn:
    """One utterance of a conversation's history, with its token count when known."""

    role: str  # "user" or "assistant"
    content: str
    tokens: int = 0


def alternate(turns: Sequence[Turn]) -> list[Turn]:
    """Make turns strictly alternate user/assistant, starting with a user turn.

    Consecutive turns of one role are merged (a reply that failed leaves two user turns in a row);
    a leading assistant turn is left out: chat templates and the training layout start with the user.
    A greeting gets its opening user turn before it comes here (``core.model_input.with_opening``).
    """
    out: list[Turn] = []
    for turn in turns:
        if not turn.content:
            continue
        if out and out[-1].role == turn.role:
            prev = out[-1]
            # A count is known only when both sides' are: 0 (unknown) makes ``build_messages`` count the
            # merged text in full, the new text included.
            tokens = prev.tokens + turn.tokens if prev.tokens and turn.tokens else 0
            out[-1] = Turn(turn.role, prev.content + "\n" + turn.content, tokens)
        elif not out and turn.role != "user":
            continue
        else:
            out.append(turn)
    return out


def build_messages(
    system: str,
    history: Sequence[Turn],
    user_text: str,
    *,
    examples: Sequence[Turn] = (),
    budget: int | None = None,
    count: Callable[[str], int] | None = None,
) -> list[dict[str, str]]:
    """System message, example dialogue, alternating history, then the new text, within ``budget`` tokens.

    Over the budget the example dialogue goes first, then whole exchanges oldest first, then user
    text left unanswered before the new text; the system message and the new text always stay.
    """
    turns = alternate([*history, Turn("user", user_text)])
    leading = list(examples)
    if budget is not None and count is not None:
        sizes = [t.tokens or count(t.content) for t in turns]
        total = count(system) + sum(sizes)
        if leading and total + sum(count(t.content) for t in leading) > budget:
            leading = []
        start = 0
        # Drop (user, assistant) pairs from the front so that user turns stay first.
        while total > budget and start < len(turns) - 1:
            step = 2 if start + 1 < len(turns) - 1 else 1
            total -= sum(sizes[start : start + step])
            start += step
        turns = turns[start:]
        if turns and turns[0].role != "user":
            turns = turns[1:]
        if total > budget and turns and turns[-1].content != user_text:
            # Still over: the last turn carries earlier user text no reply answered (a failed reply);
            # it goes too, or one text that never fits would overflow every later prompt.
            turns = [Turn("user", user_text)]
    return [
        {"role": "system", "content": system},
        *({"role": t.role, "content": t.content} for t in [*leading, *turns]),
    ]


def estimate_tokens(text: str) -> int:
    """A conservative token count: one per three UTF-8 bytes (CJK: one per character), plus one."""
    return len(text.encode("utf-8")) // 3 + 1
