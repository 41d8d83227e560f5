"""The scene slot's text: the one free-text line of BeyondDialogue's system prompt.

The base scene (the channel's, or the card's scenario) comes first; world facts (lorebook entries)
and what the character remembers of the person follow on the same line, each part headed in the
character's language. ``core.model_input`` calls this; the template itself never changes.
"""

from __future__ import annotations

from typing import Sequence

from core.text import one_line

# The headers, in the character's language. ``{{char}}`` and ``{{user}}`` are filled by the system
# prompt's renderer (``core.prompt.fill_placeholders``), as in a card's scenario.
LORE_HEADERS = {"en": "World facts:", "zh": "世界设定："}
MEMORY_HEADERS = {"en": "What {{char}} remembers of {{user}}:", "zh": "{{char}}记得关于{{user}}的事："}
_SEPARATORS = {"en": " ", "zh": ""}


def _part(header: str, items: Sequence[str], separator: str) -> str:
    texts = [one_line(item).strip() for item in items]
    texts = [t for t in texts if t]
    return f"{header}{separator}{separator.join(texts)}" if texts else ""


def scene_text(base_scene: str, lore: Sequence[str] = (), memories: Sequence[str] = (), *, language: str = "en") -> str:
    """``base_scene`` followed by the ``lore`` entries and the ``memories``, on one line.

    Nothing added (no lore, no memories) gives ``base_scene`` back unchanged.
    """
    if not lore and not memories:
        return base_scene
    separator = _SEPARATORS.get(language, " ")
    key = language if language in LORE_HEADERS else "en"
    parts = [one_line(base_scene).strip()]
    parts.append(_part(LORE_HEADERS[key], lore, separator))
    parts.append(_part(MEMORY_HEADERS[key], memories, separator))
    return separator.join(p for p in parts if p)
