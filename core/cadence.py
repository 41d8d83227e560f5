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

from typing import TYPE_CHECKING, Awaitable, Callable, Protocol

if TYPE_CHECKING:
    from core.character import Character
    from core.state import Exchange

EVERY = "every"
MOVED = "moved"


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
    """The Nth, 2Nth, … exchange of each conversation (the key of its history and of the appraisal
    window: character, platform, channel, person) is appraised.

    An exchange's number is read from stored data (``position``: how many of the person's messages
    the conversation holds up to this one), not counted in this process: the exchanges of two
    channels do not share a count (each channel's window reads its own), a regenerated reply has
    the number of the exchange it answers again, so it takes the same decision, after a restart too.
    With the model appraiser's window (PERSONAE_APPRAISAL_WINDOW) at least N, every exchange is read once.
    """

    def __init__(self, n: int, position: Callable[[Exchange], Awaitable[int]]) -> None:
        if n < 1:
            raise ValueError("the appraisal cadence N must be at least 1")
        self.n = n
        self.name = f"{EVERY}:{n}"
        self._position = position

    async def due(self, exchange: Exchange, character: Character) -> bool:
        number = await self._position(exchange)
        return number > 0 and number % self.n == 0


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
