"""When the appraiser is asked (PERSONAE_APPRAISAL_CADENCE): every exchange, every Nth exchange of a
person with a character, or only when a cheap check says the feelings move on this exchange.

The model appraiser's trained answer is about ten times longer than a reply, so asking it after
every exchange spends most of a turn's GPU time on appraisal; a cadence trades how soon the
feelings follow the conversation for that time. An exchange the cadence skips moves nothing and
costs no model request. A regenerated reply takes the decision the reply it replaces got (its
change, if any, was undone first), so regenerating does not shift the count.

The policies here are pure; the check behind ``WhenMoved`` (the lexicon's reading) is passed in
by ``bots.compose``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Awaitable, Callable, Protocol

from core.character import Character
from core.state import Exchange

EVERY = "every"
MOVED = "moved"
MAX_PEOPLE = 100_000  # people whose count ``EveryNth`` keeps; the least recently seen are forgotten first


class Cadence(Protocol):
    """Whether the exchange is appraised at all."""

    name: str

    async def due(self, exchange: Exchange, character: Character) -> bool: ...


class EveryExchange:
    """Every exchange is appraised (the default)."""

    name = EVERY

    async def due(self, exchange: Exchange, character: Character) -> bool:
        return True


class EveryNth:
    """The Nth, 2Nth, … exchange of each person with each character is appraised.

    The count is kept in this process (a restart starts it again); with the model appraiser's
    window (PERSONAE_APPRAISAL_WINDOW) at least N, every exchange is still read once.
    """

    def __init__(self, n: int, *, max_people: int = MAX_PEOPLE) -> None:
        if n < 1:
            raise ValueError("the appraisal cadence N must be at least 1")
        self.n = n
        self.name = f"{EVERY}:{n}"
        self._max_people = max_people
        # (character, platform, user) -> [exchanges counted, the last one's user message id, its decision]
        self._people: OrderedDict[tuple[int, str, str], list] = OrderedDict()

    async def due(self, exchange: Exchange, character: Character) -> bool:
        key = (exchange.character_id, exchange.platform, exchange.user_id)
        entry = self._people.get(key)
        if entry is None:
            entry = self._people[key] = [0, None, False]
            while len(self._people) > self._max_people:
                self._people.popitem(last=False)
        else:
            self._people.move_to_end(key)
        if exchange.regenerated and entry[1] == exchange.user_message_id:
            return entry[2]  # the same exchange answered again: the same decision, not another count
        entry[0] += 1
        entry[1] = exchange.user_message_id
        entry[2] = entry[0] % self.n == 0
        return entry[2]


class WhenMoved:
    """Appraised only when ``moved(exchange, character)`` says the feelings move on this exchange
    (``bots.compose`` passes the lexicon's reading of it)."""

    name = MOVED

    def __init__(self, moved: Callable[[Exchange, Character], Awaitable[bool]]) -> None:
        self._moved = moved

    async def due(self, exchange: Exchange, character: Character) -> bool:
        return await self._moved(exchange, character)


def parse_cadence(value: str) -> tuple[str, int]:
    """``every`` -> ("every", 1), ``every:N`` -> ("every", N), ``moved`` -> ("moved", 0); ValueError otherwise."""
    text = value.strip().lower()
    if text == MOVED:
        return MOVED, 0
    if text == EVERY:
        return EVERY, 1
    head, sep, tail = text.partition(":")
    if head == EVERY and sep and tail.isdigit() and int(tail) >= 1:
        return EVERY, int(tail)
    raise ValueError("must be every, every:N (N a whole number, 1 or more) or moved")
