"""Importing the bundled sample characters on first use."""

from __future__ import annotations

import logging

from core.cards import parse_card_json
from core.errors import Conflict
from core.ports import Store
from core.samples import sample_cards

log = logging.getLogger(__name__)


async def ensure_samples(store: Store) -> int:
    """Import the sample characters when there are no characters at all; returns how many were added."""
    if await store.characters.list():
        return 0
    added = 0
    for name, raw in sample_cards():
        try:
            await store.characters.add(parse_card_json(raw))
            added += 1
        except Conflict:  # another process imported it at the same moment
            pass
    log.info("imported %d sample characters", added)
    return added
