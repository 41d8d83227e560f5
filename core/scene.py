"""The text of the BeyondDialogue prompt's scene slot: the scene, then what the lorebook adds, then
what the character remembers, on one line.

The scene is the only free-text slot of the template, and each slot is one line
(``core.prompt.render_system_prompt`` makes it so). Each piece here is made one line on its own
(``core.text.one_line``: line breaks become spaces), stripped, and ends as a sentence: a piece
without a closing stop gets one (``.``, or ``。`` for a Chinese character) so that two entries do not
read as one sentence. Pieces are joined with one space, in this order: the scene (the channel's,
else the card's), the lorebook entries in insertion order, the memories.
"""

from __future__ import annotations

from typing import Sequence

from core.text import one_line

_STOPS = (".", "!", "?", "…", "。", "！", "？", "\"", "'", "”", "’", ")", "）", "」", "』", "*", "~", "～")
_FULL_STOP = {"en": ".", "zh": "。"}


def sentence(text: str, language: str = "en") -> str:
    """``text`` on one line, stripped, ending with a stop (added when it has none)."""
    line = one_line(text).strip()
    if line and not line.endswith(_STOPS):
        line += _FULL_STOP.get(language, ".")
    return line


def scene_text(base_scene: str, lore: Sequence[str] = (), memories: Sequence[str] = (), *, language: str = "en") -> str:
    """The scene slot's text: ``base_scene`` (as a sentence), then each lorebook entry and each
    memory as a sentence, joined with spaces. Without lore or memories it is ``base_scene`` unchanged."""
    extra = [s for s in (sentence(t, language) for t in (*lore, *memories)) if s]
    if not extra:
        return base_scene
    base = sentence(base_scene, language)
    return " ".join([base, *extra] if base else extra)
