"""Who answers a message in a channel where several characters play (a pure function of the facts).

A message goes to one character, or to none:

- a reply to a character's message goes to that character;
- a message addressed to a character by name goes to that character: the name opens the message
  (``Hamlet, ...``, ``@Hamlet ...``, ``hey Hamlet ...``, ``(bows) Hamlet.``) or closes it (``..., Hamlet?``), or is
  @-written anywhere; a name merely mentioned in passing addresses no one;
- a mention of the bot goes to the channel's one character (with several: the one the person
  talked to last, else the first bound);
- with trigger ``all`` (or ``conversation``) any other message goes to the character most recently
  addressed in that person's exchange (else the first bound);
- with trigger ``mention`` nothing else is answered.

``next_speaker`` is the ``conversation`` trigger: a character's reply that addresses another
character of the scene by name gets that one's answer, up to a limit of replies in a row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from core.events import Trigger
from core.memory import STOPWORDS

_ACTION = r"(?:\([^)]*\)\s*|（[^）]*）\s*)?"  # a leading stage action, "(bows) Ophelia."
_OPENERS = r"(?:(?:hey|hi|hello|oh|ok|okay|so|and|but|dear|well|嘿|喂)[\s,，!！]+)?"
# Words people say to anyone ("Yes, sir.", "Thanks, captain"): a character called by one of them is
# addressed only with "@Name", as the common words are.
TERMS_OF_ADDRESS = frozenset({
    "sir", "madam", "ma'am", "miss", "mister", "mistress", "master", "lord", "lady", "my lord", "my lady",
    "captain", "doctor", "doc", "boss", "chief", "friend", "buddy", "dude", "mate", "love", "dear",
    "darling", "honey", "sweetie", "king", "queen", "prince", "princess", "majesty", "your majesty",
    "highness", "your highness", "sire", "father", "mother", "mom", "dad", "brother", "sister",
    "teacher", "sensei", "senpai", "bro", "sis", "kid", "man", "guys", "everyone", "all",
})


@dataclass(frozen=True, slots=True)
class Castmate:
    """A character of the scene: its id and name."""

    character_id: int
    name: str


def _name_pattern(name: str) -> str:
    return r"(?<![\w@])" + re.escape(name.strip()) + r"(?!\w)"


def named(text: str, cast: Sequence[Castmate]) -> int | None:
    """The character ``text`` is addressed to by name, or None (see the module's rules)."""
    body = text.strip()
    best: tuple[int, int] | None = None  # (where, character id)
    # The longest names first, so that "Lady Anne" wins over "Anne".
    for mate in sorted(cast, key=lambda m: -len(m.name)):
        if not mate.name.strip():
            continue
        name = _name_pattern(mate.name)
        at_sign = re.search(r"@" + re.escape(mate.name.strip()) + r"(?!\w)", body, re.IGNORECASE)
        if (key := mate.name.strip().lower()) in STOPWORDS or key in TERMS_OF_ADDRESS:  # "Will", "Sir": only "@Will"
            opens = closes = None
        else:
            opens = re.match(r"^" + _ACTION + r"\W*" + _OPENERS + name, body, re.IGNORECASE)
            closes = re.search(r"[,，]\s*" + name + r"\W*$", body, re.IGNORECASE)
        found = [m.start() for m in (at_sign, opens, closes) if m is not None]
        if found and (best is None or min(found) < best[0]):
            best = (min(found), mate.character_id)
    return best[1] if best is not None else None


def pick(
    cast: Sequence[Castmate],
    *,
    text: str,
    trigger: Trigger,
    mentioned: bool = False,
    replied_to: int | None = None,
    last_partner: int | None = None,
    private: bool = False,
) -> int | None:
    """The id of the character that answers, or None when the message was for no character.

    ``cast`` is the channel's characters, the first bound first; ``mentioned``: the bot was
    mentioned (or a message of the bot's that is not a character's reply was replied to);
    ``replied_to``: the character whose reply this message replies to; ``last_partner``: the
    character the person's newest answered message in the channel went to.
    """
    if not cast:
        return None
    ids = [m.character_id for m in cast]
    if private:
        return ids[0]
    if replied_to is not None and replied_to in ids:
        return replied_to
    by_name = named(text, cast)
    if by_name is not None:
        return by_name
    usual = last_partner if last_partner in ids else ids[0]
    if mentioned:
        return ids[0] if len(ids) == 1 else usual
    if trigger in (Trigger.ALL, Trigger.CONVERSATION):
        return usual
    return None


def next_speaker(
    cast: Sequence[Castmate], *, speaker: int, reply_text: str, trigger: Trigger, turns_in_a_row: int, limit: int
) -> int | None:
    """With trigger ``conversation``: the character ``speaker``'s reply is addressed to by name (never
    itself), while fewer than ``limit`` character replies came in a row; else None. Bounded, so two
    characters can never answer each other forever."""
    if trigger is not Trigger.CONVERSATION or turns_in_a_row >= limit:
        return None
    others = [m for m in cast if m.character_id != speaker]
    return named(reply_text, others)
