"""What people type after a command, read into the values the command layer takes; and the help text."""

from __future__ import annotations

import re

from core.errors import InvalidInput
from core.events import Trigger

_COMMAND = re.compile(r"^/[A-Za-z0-9_]+(?:@[A-Za-z0-9_]+)?\s*")
_FIELD_SEPARATOR = re.compile(r"[;\n]")
_TRUE, _FALSE = {"yes", "true", "on", "1"}, {"no", "false", "off", "0"}

HELP = """\
I play characters. In a private chat you pick one and talk; in a group an admin binds one.

Everyone
/characters – the characters you can pick
/use NAME – talk to NAME (private chats)
/mood [NAME] – how the character feels about you
/reset [NAME] – start your conversation over (feelings and memories stay)
/scene – who plays here and what the character sees
/memory – what the character remembers about you here; /memory forget N deletes one
/forget – delete everything stored about you
/help – this text

Group admins, and bot owners anywhere
/bind NAME [mention|all] – NAME plays in this group; mention (the default): answers when @-mentioned or replied to; all: answers every message
/unbind – the character leaves this group
/scene set TEXT – set the scene here (/scene reset: the character's own scene)
/scene add NAME [all|mention|conversation] – one more character plays here (each answers when named or replied to)
/scene remove NAME – that character leaves this group
/character list
/character show NAME
/character delete NAME
/character create name=…; world=…; traits=a,b; mbti=ENFJ; style=a,b
   optional: language=en|zh; scene=…; greeting=…; description=…; emotion=happiness=3,sadness=2; relationship=3; public=yes|no
   (fields are separated by ";" or new lines)
/character edit NAME field=value; field=value   (also examples=on|off|default: send the card's example dialogue)
/character import – as the caption of a card file (PNG, CharX or JSON), in reply to one, or followed by the JSON itself
/lore list – the lorebook of the character here (/lore list NAME: another's)
/lore show N · /lore remove N
/lore add keys=a,b; content=… (content last: it takes the rest of the message; elsewhere write ; as \\;)
/lore edit N field=value; …   fields: keys, secondary_keys, logic=and_any|not_all|not_any|and_all, content, order, priority, enabled, constant, case_sensitive, whole_words, scan_depth, use_regex, comment, name (character=NAME for another character)

In private chats only bot owners create, import, edit or delete characters."""

# What setMyCommands registers: (command, description).
COMMANDS = (
    ("start", "Greet me and pick a character"),
    ("characters", "The characters you can pick"),
    ("use", "Talk to a character: /use NAME"),
    ("mood", "How the character feels about you"),
    ("reset", "Start your conversation over"),
    ("memory", "What the character remembers: /memory forget N"),
    ("forget", "Delete everything stored about you"),
    ("bind", "Admins: /bind NAME [mention|all]"),
    ("unbind", "Admins: the character leaves this chat"),
    ("scene", "Who plays here; admins: /scene set TEXT, add NAME, remove NAME"),
    ("character", "Admins: create, import, edit, list, show, delete"),
    ("lore", "Admins: the character's lorebook: list, show, add, edit, remove"),
    ("help", "What I can do"),
)


def after_command(text: str | None) -> str:
    """The text after ``/command`` (or ``/command@bot``), stripped."""
    return _COMMAND.sub("", (text or "").strip(), count=1).strip()


def split_word(text: str) -> tuple[str, str]:
    """The first word (lower case) and the rest."""
    word, _, rest = text.strip().partition(" ")
    first, nl, more = word.partition("\n")
    if nl:
        return first.lower(), (more + " " + rest).strip()
    return word.lower(), rest.strip()


def parse_fields(text: str) -> dict[str, object]:
    """``key=value`` pairs separated by ``;`` or new lines; ``public`` becomes a bool."""
    fields: dict[str, object] = {}
    for part in _FIELD_SEPARATOR.split(text):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise InvalidInput(f"expected field=value, not {part.strip()!r}")
        fields[key] = value.strip()
    if "public" in fields:
        flag = str(fields["public"]).lower()
        if flag not in _TRUE | _FALSE:
            raise InvalidInput("public must be yes or no")
        fields["public"] = flag in _TRUE
    return fields


def parse_edit(text: str) -> tuple[str, dict[str, object]]:
    """``NAME field=value; ...``: the name is everything before the first word holding ``=``."""
    head, _, tail = text.partition("=")
    if not _:
        return text.strip(), {}
    words = head.split()
    if len(words) < 2:
        raise InvalidInput("say which character, then the fields: NAME field=value; field=value")
    name = " ".join(words[:-1])
    return name, parse_fields(words[-1] + "=" + tail)


def parse_bind(text: str) -> tuple[str, str]:
    """``NAME [mention|all]``: the character's name and the trigger (``mention`` unless said)."""
    words = text.split()
    if words and words[-1].lower() in {t.value for t in Trigger}:
        return " ".join(words[:-1]), words[-1].lower()
    return " ".join(words), Trigger.MENTION.value
