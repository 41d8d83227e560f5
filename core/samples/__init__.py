"""Sample character cards shipped with personae and imported on first use."""

from __future__ import annotations

from importlib import resources


def sample_cards() -> list[tuple[str, bytes]]:
    """(file name, card JSON bytes) of every bundled sample, in name order."""
    folder = resources.files(__name__)
    return sorted((p.name, p.read_bytes()) for p in folder.iterdir() if p.name.endswith(".json"))
