"""What a card says the character says: its greetings, and its example dialogue as leading turns."""

from __future__ import annotations

import random
import re
from typing import Any, Mapping

from core.character import Character
from core.prompt import Turn, alternate, fill_placeholders
from core.text import one_line_name

_SPEAKER = re.compile(r"^\s*(\{\{user\}\}|\{\{char\}\}|<USER>|<BOT>)\s*:\s?", re.IGNORECASE)


def parse_examples(mes_example: str, *, char: str, user: str) -> list[Turn]:
    """Turns from ``<START>``-separated blocks of ``{{user}}: ...`` / ``{{char}}: ...`` lines.

    Lines without a speaker continue the previous utterance; text before the first speaker and
    blocks that cannot alternate are left out.
    """
    turns: list[Turn] = []
    for block in re.split(r"<START>", mes_example or "", flags=re.IGNORECASE):
        current: list[str] | None = None
        role = ""
        block_turns: list[Turn] = []
        for line in block.splitlines():
            match = _SPEAKER.match(line)
            if match:
                if current is not None:
                    block_turns.append(Turn(role, "\n".join(current).strip()))
                speaker = match.group(1).lower()
                role = "user" if speaker in ("{{user}}", "<user>") else "assistant"
                current = [line[match.end():]]
            elif current is not None:
                current.append(line)
        if current is not None:
            block_turns.append(Turn(role, "\n".join(current).strip()))
        block_turns = alternate(block_turns)
        if block_turns and block_turns[-1].role == "user":
            block_turns = block_turns[:-1]  # an example must end with the character's line
        turns.extend(block_turns)
    return [Turn(t.role, fill_placeholders(t.content, char=char, user=user)) for t in turns]


def greeting_options(card: Mapping[str, Any], first_mes: str, *, char: str, user: str) -> list[str]:
    """The greetings a card offers (``first_mes``, then ``alternate_greetings``), non-empty, names filled in."""
    alternates = card["data"].get("alternate_greetings") or ()
    options = [g for g in (first_mes, *alternates) if isinstance(g, str) and g.strip()]
    return [fill_placeholders(g, char=char, user=user).strip() for g in options]


def pick_greeting(character: Character, user: str) -> str:
    """The card's greeting (``first_mes`` or one of ``alternate_greetings``, at random), names filled in."""
    options = greeting_options(character.card, character.profile.greeting, char=character.name, user=one_line_name(user))
    return random.choice(options) if options else ""
