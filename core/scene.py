"""A channel is a scene: the lines around a conversation, and how they reach the model.

In a bound channel (or a Telegram group) the character answering a person also sees what happened
around it: other people's messages and the replies of every character there, from the channel's
other conversations. The person's own thread with the character stays the two-party history BD-RP
was trained on (its feelings toward them, their name as ``chat_role``); the others' lines are
folded into that thread as ``Name: text`` lines, each in front of the person's turn it came before
(layout ``turns``, the one measured best: docs/scenes.md), or written into the system prompt's
scene slot (layout ``slot``, kept for ``personae eval --scene slot``). The newest lines are kept
first, within a share of the input budget (PERSONAE_SCENE_SHARE).

A private chat is never a scene: its lines are read for no one else, and no channel's lines reach it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Sequence

from core.events import CHARACTER_USER, is_character_user
from core.prompt import Turn, estimate_tokens
from core.text import one_line, one_line_name

if TYPE_CHECKING:
    from core.character import Character
    from core.events import ConversationKey
    from core.hot import HotState
    from core.ports import Store
    from core.state import Binding

LAYOUTS = ("turns", "slot")
DEFAULT_LAYOUT = "turns"

# How a character's line to someone else is credited (a stage note in the training style).
_TO = {"en": "{name} (to {to})", "zh": "{name}（对{to}）"}
# A person whose name is a character's of the scene: their lines are never taken for the character's.
_NAMESAKE = {"en": "{name} (a person)", "zh": "{name}（一个人）"}
# The scene slot's lead-in for the lines (layout ``slot``).
_JUST_NOW = {"en": "Just now in this place:", "zh": "刚才在这里："}


@dataclass(frozen=True, slots=True)
class SceneLine:
    """One line of the scene around a conversation.

    ``after`` is how many entries of the conversation's history came before it (0: before all of
    them; ``len(history)``: since the person's last exchange), so it is shown where it happened.
    ``to`` names whom a character's line answered.
    """

    speaker: str
    text: str
    after: int
    to: str | None = None
    tokens: int = 0
    namesake: bool = False  # a person named as a character of the scene is


def line_text(line: SceneLine, language: str = "en") -> str:
    """``Name: text`` (``Name (to Other): text`` for a character's reply to someone else), one line."""
    name = one_line_name(line.speaker)
    if line.namesake:
        name = _NAMESAKE.get(language, _NAMESAKE["en"]).format(name=name)
    if line.to:
        name = _TO.get(language, _TO["en"]).format(name=name, to=one_line_name(line.to))
    return f"{name}: {one_line(line.text).strip()}"


def newest_within(lines: Sequence[SceneLine], budget: int, count: Callable[[str], int]) -> list[SceneLine]:
    """The newest of ``lines`` (oldest first) whose texts fit in ``budget`` tokens, oldest first."""
    kept: list[SceneLine] = []
    spent = 0
    for line in reversed(lines):
        cost = line.tokens or count(line.text)
        cost += 4  # the name and separator
        if spent + cost > budget:
            break
        spent += cost
        kept.append(line)
    kept.reverse()
    return kept


def fold_into_turns(
    history: Sequence[Turn], text: str, lines: Sequence[SceneLine], *, user: str, language: str = "en"
) -> tuple[list[Turn], str]:
    """Layout ``turns``: each line goes into the first user turn at or after the point it happened
    (the new text if none), as ``Name: text`` lines in front of the person's own words, which are
    then credited to them (``user: text``). Turns with no lines before them are left as they are."""
    if not lines:
        return list(history), text
    pending: dict[int, list[str]] = {}
    for line in lines:
        # The first user turn at or after the line's place; len(history) stands for the new text.
        at = next((i for i in range(max(line.after, 0), len(history)) if history[i].role == "user"), len(history))
        pending.setdefault(at, []).append(line_text(line, language))
    name = one_line_name(user)

    def fold(index: int, content: str) -> str:
        before = pending.get(index)
        return "\n".join([*before, f"{name}: {content}"]) if before else content

    turns = [Turn(t.role, fold(i, t.content), 0 if i in pending else t.tokens) for i, t in enumerate(history)]
    return turns, fold(len(history), text)


def into_slot(scene: str, lines: Sequence[SceneLine], *, language: str = "en") -> str:
    """Layout ``slot``: the lines after the scene text, on its one line (``; `` between them)."""
    if not lines:
        return scene
    said = "; ".join(line_text(line, language) for line in lines)
    lead = _JUST_NOW.get(language, _JUST_NOW["en"])
    return f"{scene} {lead} {said}".strip()


def scene_budget(share: float, input_budget: int) -> int:
    """The tokens the scene's lines may take: ``share`` (PERSONAE_SCENE_SHARE) of the input budget."""
    return max(0, int(share * input_budget))


async def scene_around(
    store: "Store",
    hot: "HotState",
    character: "Character",
    binding: "Binding",
    conversation: "ConversationKey",
    history: Sequence[tuple[int, str, str, int]],
    *,
    before_id: int | None,
    share: int,
    limit: int,
    answering: int | None = None,
) -> list[SceneLine]:
    """The scene lines around ``conversation`` (its ``history`` entries, ``(id, role, text, tokens)``,
    place them): the channel's other conversations' lines and its overheard lines (said to no
    character, the person's own too) from before message ``before_id``, the newest first within
    ``share`` tokens. None for a private chat (``binding.private``) or a share of 0:
    a private chat's lines are never read for anyone else, and no channel's lines reach it.

    ``answering``: the stored id of another character's reply this turn answers (trigger
    ``conversation``): that reply is the turn's own text, so it is not a scene line too."""
    if binding.private or share <= 0:
        return []
    rows = await store.messages.channel_lines(
        conversation.platform, conversation.channel_id, before_id=before_id, exclude=conversation, limit=limit
    )
    names: dict[int, str] = {character.id: character.name}
    lines: list[SceneLine] = []
    person_of: dict[tuple[int, str], str] = {}  # each conversation's person, by their newest line
    people: set[int] = set()  # which of ``lines`` are people's
    ids = [entry[0] for entry in history]  # a greeting not stored yet is 0: before everything
    for row in rows:
        if answering is not None and row.id == answering:
            continue
        if row.character_id not in names:
            other = await hot.character(row.character_id)
            names[row.character_id] = other.name if other is not None else "?"
        after = sum(1 for i in ids if i < row.id)
        if row.role == "user":
            speaker = row.display_name or "?"
            person_of[(row.character_id, row.user_id)] = speaker
            if not is_character_user(row.user_id):
                people.add(len(lines))
            lines.append(SceneLine(speaker, row.content, after, tokens=row.tokens))
        else:
            to = person_of.get((row.character_id, row.user_id))
            if to is None and is_character_user(row.user_id):
                # A character's answer to another: its copy of the line it answered is left out of
                # the scene (``channel_lines``: the line is there as that one's reply).
                to = await _character_name(hot, names, row.user_id[len(CHARACTER_USER):])
            lines.append(SceneLine(names[row.character_id], row.content, after, to=to, tokens=row.tokens))
    # A person who took a character's name ("Hamlet: I confess…") must not speak as that character.
    taken = {one_line_name(n).casefold() for n in names.values()}
    lines = [
        replace(line, namesake=True) if i in people and one_line_name(line.speaker).casefold() in taken else line
        for i, line in enumerate(lines)
    ]
    return newest_within(lines, share, estimate_tokens)


async def _character_name(hot: "HotState", names: dict[int, str], character_id: str) -> str | None:
    try:
        key = int(character_id)
    except ValueError:
        return None
    if key not in names:
        other = await hot.character(key)
        names[key] = other.name if other is not None else "?"
    return names[key]
