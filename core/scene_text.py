"""The text of the BeyondDialogue prompt's scene slot: the scene, then what the lorebook adds, then
what the character remembers, on one line.

The scene is the only free-text slot of the template, and each slot is one line
(``core.prompt.render_system_prompt`` makes it so); the template itself never changes. Each piece
here is made one line on its own (``core.text.one_line``: line breaks become spaces), stripped, and
ends as a sentence: a piece without a closing stop gets one (``.``, or ``。`` for a Chinese
character) so that two entries do not read as one sentence. In this order: the scene (the
channel's, else the card's), the lorebook entries in insertion order, then the memories behind a
header in the character's language. Pieces are joined with the language's separator: one space,
none in Chinese. ``core.model_input`` calls this, and the lorebook's budget counts its entries as
``lore_line`` joins them.
"""

from __future__ import annotations

from typing import Sequence

from core.text import one_line

_STOPS = (".", "!", "?", "…", "。", "！", "？", "\"", "'", "”", "’", ")", "）", "」", "』", "*", "~", "～")
_FULL_STOP = {"en": ".", "zh": "。"}
_SEPARATORS = {"en": " ", "zh": ""}
# The memories' header, in the character's language. ``{{char}}`` and ``{{user}}`` are filled by the
# system prompt's renderer (``core.prompt.fill_placeholders``), as in a card's scenario.
MEMORY_HEADERS = {"en": "What {{char}} remembers of {{user}}:", "zh": "{{char}}记得关于{{user}}的事："}


def sentence(text: str, language: str = "en") -> str:
    """``text`` on one line, stripped, ending with a stop (added when it has none)."""
    line = one_line(text).strip()
    if line and not line.endswith(_STOPS):
        line += _FULL_STOP.get(language, ".")
    return line


def _sentences(pieces: Sequence[str], language: str) -> list[str]:
    return [s for s in (sentence(p, language) for p in pieces) if s]


def lore_line(pieces: Sequence[str], language: str = "en") -> str:
    """Lorebook entries as the scene slot holds them: each a sentence, joined with the language's separator."""
    return _SEPARATORS.get(language, " ").join(_sentences(pieces, language))


def scene_text(base_scene: str, lore: Sequence[str] = (), memories: Sequence[str] = (), *, language: str = "en") -> str:
    """The scene slot's text: ``base_scene`` (as a sentence), then each lorebook entry as a sentence,
    then the memories' header and each memory as a sentence, on one line.

    Nothing added (no lore, no memories, or only blank ones) gives ``base_scene`` back unchanged.
    """
    separator = _SEPARATORS.get(language, " ")
    remembered = _sentences(memories, language)
    parts = [sentence(base_scene, language), lore_line(lore, language)]
    if remembered:
        parts.append(separator.join([MEMORY_HEADERS.get(language, MEMORY_HEADERS["en"]), *remembered]))
    if not any(parts[1:]):
        return base_scene
    return separator.join(p for p in parts if p)
