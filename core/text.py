"""Cutting long replies into platform-sized messages at natural boundaries."""

from __future__ import annotations

import re

_BOUNDARIES = (
    re.compile(r"\n\s*\n"),  # paragraph
    re.compile(r"\n"),  # line
    re.compile(r"(?<=[.!?…。！？])[\"'”’)）]*\s*"),  # sentence
    re.compile(r"\s+"),  # word
)


def split_point(text: str, limit: int) -> int:
    """Where to cut ``text`` so the head fits in ``limit`` characters, preferring bigger boundaries.

    A boundary in the first third of the window is ignored (it would leave a tiny message).
    """
    if len(text) <= limit:
        return len(text)
    window = text[: limit + 1]
    floor = limit // 3
    for pattern in _BOUNDARIES:
        cuts = [m.end() for m in pattern.finditer(window) if floor <= m.end() <= limit]
        if cuts:
            return cuts[-1]
    return limit


def split_message(text: str, limit: int) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` characters, cut at paragraph, sentence or word ends."""
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = split_point(rest, limit)
        head = rest[:cut].rstrip()
        if head:
            pieces.append(head)
        rest = rest[cut:].lstrip()
    if rest.strip() or not pieces:
        pieces.append(rest)
    return pieces
