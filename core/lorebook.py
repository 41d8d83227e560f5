"""Lorebooks (a card's ``character_book``) run as SillyTavern runs them: which entries the recent
turns activate, in which order, within which budget; and the edits admins make to a card's book.

Pure: no storage. The card keeps the book exactly as it came (every field, unknown ones and
foreign ``extensions`` included); ``read_lorebook`` reads what activation needs from it, leniently
(an entry it cannot use is skipped, never refused: the card is someone else's).

What was followed, and where:

- SillyTavern ``public/scripts/world-info.js`` (``WorldInfoBuffer.get`` / ``matchKeys``,
  ``checkWorldInfo``, ``parseRegexFromString``, ``convertCharacterBook``):
  - the scanned text is the last ``scan_depth`` messages, the newest first, each after a ``\\x01``
    (a regex key may anchor on it), joined with ``\\n``; the default depth is 2 (``world_info_depth``);
    depth 0 scans nothing (only constant entries activate);
  - a key is a ``/pattern/flags`` regular expression when it parses as one (flags ``gimsuy``, every
    ``/`` inside escaped), and then ignores the case and whole-word rules; otherwise plain text,
    compared case-insensitively unless the entry is case-sensitive, and as a whole word unless the
    entry says ``match_whole_words: false`` (a key holding a space is matched as a substring,
    as SillyTavern does). Keys go through ``{{char}}``/``{{user}}`` first; an empty key never matches;
  - an entry activates when it is enabled and: ``@@activate`` is at the head of its content, or it
    is ``constant``, or (no ``@@dont_activate``) a primary key matches and, when it is ``selective``
    with ``secondary_keys``, the secondary keys satisfy its logic (``extensions.selectiveLogic``:
    0 AND ANY, 1 NOT ALL, 2 NOT ANY, 3 AND ALL; SillyTavern's ``matchSecondaryKeys``);
  - ``case_sensitive`` (the spec's field, else SillyTavern's ``extensions.case_sensitive``),
    ``extensions.match_whole_words`` and ``extensions.scan_depth`` override the defaults per entry;
  - budget: activated entries are taken in SillyTavern's order, the highest ``insertion_order``
    first (``sortFn = (a, b) => b.order - a.order``); each adds its text to the running total, and
    the first whose total reaches the budget (``>=``) is dropped and ends the walk: every later
    (lower-order) entry is dropped too, save those with ``extensions.ignore_budget``;
  - in the prompt, the kept entries go lowest ``insertion_order`` first (SillyTavern fills its
    buckets with ``unshift`` after sorting by ``sortFn``; the V2 spec: "lower insertion order =
    inserted higher");
  - recursion (an activated entry's content scanned for other entries' keys) is off unless
    PERSONAE_LORE_RECURSION allows extra passes (``world_info_recursive`` is off by default there
    too); ``extensions.exclude_recursion`` and ``prevent_recursion`` are honoured; a pass that
    overflowed the budget ends the recursion.
- Character Card V2 (malfoyslastname/character-card-spec-v2, spec_v2.md) and V3
  (kwaroran/character-card-spec-v3, SPEC_V3.md): ``priority`` ("if token budget reached, lower
  priority value = discarded first"; SillyTavern ignores it) breaks ties between equal
  ``insertion_order`` values in the budget walk; the book's ``scan_depth`` and ``token_budget``;
  ``recursive_scanning: false`` forbids recursion; V3's ``use_regex`` (every key a pattern; an
  invalid one never matches) and ``@@`` decorators at the head of ``content`` (always removed from
  the text; ``@@activate``, ``@@dont_activate`` and ``@@scan_depth N`` are obeyed, ``@@@`` fallbacks
  read when the decorator before them is not known).

Not run (kept in the card, exported as they came): probability, inclusion groups, sticky,
cooldown and delay, ``position``/``depth``/``role`` (every entry goes to the scene slot, the one
free-text place of the BeyondDialogue prompt), SillyTavern's character filters and triggers.

Regex keys come from cards people download, and run on people's messages: they are matched by the
``regex`` package with a time bound (``REGEX_KEY_SECONDS`` per key, ``REGEX_TURN_SECONDS`` for all of
a turn's regex keys together). A key that runs out of its time counts as not matched and is off for
that character until the process restarts (one log line names the character, the entry and the key,
never the message); a pattern whose fixed repeats expand past ``MAX_PATTERN_SIZE`` is refused (the
``regex`` package would build it in memory). The scanned text is cut to ``MAX_SCAN_CHARS`` (the newest
messages kept). Patterns mean what they meant under ``re`` (``regex``'s VERSION0), plus what
JavaScript has and ``re`` lacks (``\\p{L}``, lookbehind of any width). Left as ``re`` had them: ``$``
also matches before a final new line, only ``\\n`` ends a line (for ``.``, and ``^``/``$`` with ``m``),
``\\w``, ``\\d`` and ``\\b`` know every script (JavaScript's are ASCII), and ``\\p{L}`` is a property
without the ``u`` flag too.

Whole words: a character that is a letter or digit in a script written without spaces (Chinese,
Japanese, Thai, ...) counts as a word edge, so a Chinese key matches inside Chinese text (in
SillyTavern the JavaScript ``\\W`` treats every non-ASCII character as an edge, which does the same
for Chinese but also splits ``café``; here ``café`` is one word).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import regex

from core.errors import InvalidInput

log = logging.getLogger(__name__)

DEFAULT_SCAN_DEPTH = 2  # SillyTavern's world_info_depth
MAX_SCAN_DEPTH = 1000  # SillyTavern's MAX_SCAN_DEPTH
DEFAULT_ORDER = 100  # SillyTavern's default entry order
DEFAULT_LORE_TOKENS = 400  # PERSONAE_LORE_TOKENS
MAX_ENTRIES = 1000
MAX_KEYS = 64
MAX_KEY_CHARS = 200
MAX_CONTENT_CHARS = 8000
MAX_SCAN_CHARS = 20_000  # of the recent messages scanned (the newest kept), and again of recursed entry text
REGEX_KEY_SECONDS = 0.05  # the most one regex key may take on one scanned text
REGEX_TURN_SECONDS = 0.25  # the most all regex keys of one activation (a turn) may take together
MAX_PATTERN_SIZE = 10_000  # a pattern's size with its fixed repeats written out (``(?:a{1000}){1000}``: 10**6)

AND_ANY, NOT_ALL, NOT_ANY, AND_ALL = 0, 1, 2, 3
LOGIC_NAMES = {AND_ANY: "and any", NOT_ALL: "not all", NOT_ANY: "not any", AND_ALL: "and all"}

_MATCHER = "\x01"
# SillyTavern's parseRegexFromString: /pattern/flags, flags among gimsuy, no unescaped / inside.
_REGEX_KEY = re.compile(r"^/([\w\W]+?)/([gimsuy]*)$")
_UNESCAPED_SLASH = re.compile(r"(^|[^\\])/")
_JS_NAMED_GROUP = re.compile(r"\(\?<(?![=!])")
_JS_BACKREF = re.compile(r"\\k<(\w+)>")


@dataclass(frozen=True, slots=True)
class LoreSettings:
    """The deployment's limits on lorebooks (PERSONAE_LORE_TOKENS, PERSONAE_LORE_RECURSION)."""

    max_tokens: int = DEFAULT_LORE_TOKENS  # the most a book adds to the scene; a card's token_budget may lower it; 0: off
    recursion: int = 0  # extra scan passes over activated entries' content; 0: no recursion


@dataclass(frozen=True, slots=True)
class LoreEntry:
    """What activation needs of one entry of a card's ``character_book`` (the card keeps the rest)."""

    position: int  # index in the book's entries (``/lore show N`` is position + 1)
    keys: tuple[str, ...]
    secondary_keys: tuple[str, ...] = ()
    content: str = ""  # without its @@ decorators
    enabled: bool = True
    constant: bool = False
    selective: bool = False
    logic: int = AND_ANY
    insertion_order: float = DEFAULT_ORDER
    priority: float = 0.0
    case_sensitive: bool | None = None
    whole_words: bool | None = None
    use_regex: bool = False
    scan_depth: int | None = None
    ignore_budget: bool = False
    exclude_recursion: bool = False
    prevent_recursion: bool = False
    forced: bool | None = None  # @@activate: True; @@dont_activate: False


@dataclass(frozen=True, slots=True)
class Lorebook:
    entries: tuple[LoreEntry, ...]
    scan_depth: int | None = None
    token_budget: int | None = None
    recursive_scanning: bool | None = None


# ---- reading a card's book ---------------------------------------------------------------------


def book_of(card: Mapping[str, Any]) -> dict[str, Any] | None:
    """The card's ``character_book`` object, or None."""
    book = card.get("data", {}).get("character_book")
    return book if isinstance(book, dict) else None


def read_lorebook(card: Mapping[str, Any]) -> Lorebook | None:
    """The card's lorebook as activation reads it; None when it has no usable one. Never raises."""
    book = book_of(card)
    if book is None or not isinstance(book.get("entries"), list):
        return None
    entries = tuple(e for i, raw in enumerate(book["entries"]) if (e := _read_entry(i, raw)) is not None)
    return Lorebook(
        entries=entries,
        scan_depth=_int(book.get("scan_depth")),
        token_budget=_int(book.get("token_budget")),
        recursive_scanning=book.get("recursive_scanning") if isinstance(book.get("recursive_scanning"), bool) else None,
    )


def _read_entry(position: int, raw: object) -> LoreEntry | None:
    if not isinstance(raw, dict):
        return None
    ext = raw.get("extensions") if isinstance(raw.get("extensions"), dict) else {}
    content, forced, decorated_depth = parse_decorators(raw.get("content") if isinstance(raw.get("content"), str) else "")
    logic = _int(ext.get("selectiveLogic"))
    if logic is None:
        logic = _int(raw.get("selectiveLogic"))
    case = raw.get("case_sensitive")
    if not isinstance(case, bool):
        case = ext.get("case_sensitive") if isinstance(ext.get("case_sensitive"), bool) else None
    depth = decorated_depth if decorated_depth is not None else _int(ext.get("scan_depth"))
    return LoreEntry(
        position=position,
        keys=_strings(raw.get("keys")),
        secondary_keys=_strings(raw.get("secondary_keys")),
        content=content,
        enabled=raw.get("enabled") is not False,
        constant=raw.get("constant") is True,
        selective=raw.get("selective") is True,
        logic=logic if logic in LOGIC_NAMES else AND_ANY,
        insertion_order=_number(raw.get("insertion_order"), DEFAULT_ORDER),
        priority=_number(raw.get("priority"), 0.0),
        case_sensitive=case,
        whole_words=ext.get("match_whole_words") if isinstance(ext.get("match_whole_words"), bool) else None,
        use_regex=raw.get("use_regex") is True,
        scan_depth=depth,
        ignore_budget=ext.get("ignore_budget") is True,
        exclude_recursion=ext.get("exclude_recursion") is True,
        prevent_recursion=ext.get("prevent_recursion") is True,
        forced=forced,
    )


def parse_decorators(content: str) -> tuple[str, bool | None, int | None]:
    """``content`` without its leading ``@@`` decorator lines; whether ``@@activate`` (True) or
    ``@@dont_activate`` (False) is among them; and ``@@scan_depth``'s value.

    A ``@@@`` line is a fallback, read only when the decorator before it was not known (V3).
    """
    if not content.startswith("@@"):
        return content, None, None
    lines = content.split("\n")
    forced: bool | None = None
    depth: int | None = None
    activate = dont = False
    previous_known = True
    seen: set[str] = set()
    index = 0
    for index, line in enumerate(lines):  # noqa: B007
        line = line.strip()
        if not line.startswith("@@"):
            break
        fallback = line.startswith("@@@")
        if fallback and previous_known:
            continue
        name, _, value = line.lstrip("@").partition(" ")
        name = name.lower()
        known = name in ("activate", "dont_activate", "scan_depth")
        if known and name not in seen:  # the first of a name counts (V3)
            seen.add(name)
            if name == "activate":
                activate = True
            elif name == "dont_activate":
                dont = True
            else:
                value_int = _int_text(value)
                known = value_int is not None
                if known:
                    depth = value_int
        previous_known = known
    else:
        index = len(lines)
    if activate:
        forced = True
    elif dont:
        forced = False
    return "\n".join(lines[index:]).strip("\n"), forced, depth


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        return ()
    return tuple(v.strip() for v in value if isinstance(v, str) and v.strip())


def _number(value: object, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return default
    return value


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value)


def _int_text(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


# ---- matching ----------------------------------------------------------------------------------


def js_regex(key: str) -> regex.Pattern[str] | None:
    """``/pattern/flags`` as SillyTavern's ``parseRegexFromString`` reads it, compiled; None when ``key``
    is not such a regex (then it is a plain key) or its pattern is invalid."""
    source = _regex_source(key)
    return None if source is None else compile_pattern(*source)


def _regex_source(key: str) -> tuple[str, str] | None:
    """The pattern (``\\/`` unescaped) and flags of a ``/pattern/flags`` key; None for a plain key."""
    match = _REGEX_KEY.match(key)
    if match is None:
        return None
    pattern, flags = match.groups()
    if _UNESCAPED_SLASH.search(pattern):
        return None
    return pattern.replace("\\/", "/"), flags


def compile_pattern(pattern: str, flags: str = "") -> regex.Pattern[str] | None:
    """A JavaScript pattern compiled by the ``regex`` package (named groups and ``\\k<name>`` translated;
    ``i``, ``m`` and ``s`` flags kept, ``g``, ``u`` and ``y`` have no meaning for a search); None if
    invalid or too big once its fixed repeats are written out (``MAX_PATTERN_SIZE``)."""
    bits = 0
    for flag, bit in (("i", regex.IGNORECASE), ("m", regex.MULTILINE), ("s", regex.DOTALL)):
        if flag in flags:
            bits |= bit
    return _compiled(_literal_braces(_JS_BACKREF.sub(r"(?P=\1)", _JS_NAMED_GROUP.sub("(?P<", pattern))), bits)


def _literal_braces(pattern: str) -> str:
    """``pattern`` with every ``{`` that starts no ``{m}``, ``{m,}``, ``{m,n}`` or ``{,n}`` repeat escaped:
    literal in JavaScript and in ``re``, but ``regex`` reads ``(?:cat){e<=1}`` as fuzzy matching."""
    if "{" not in pattern:
        return pattern
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            j = i + 2
            if j < n and pattern[j] == "{" and pattern[j - 1] in _BRACED_ESCAPES:
                end = pattern.find("}", j)
                j = n if end == -1 else end + 1
        elif char == "[":
            j = _class_end(pattern, i)
        elif char == "{" and not _REPEAT.match(pattern, i):
            out.append("\\{")
            i += 1
            continue
        else:
            j = i + 1
        out.append(pattern[i:j])
        i = j
    return "".join(out)


def _class_end(pattern: str, i: int) -> int:
    """Where the character class opening at ``pattern[i]`` ends (past its ``]``)."""
    j = i + 1
    if pattern.startswith("^", j):
        j += 1
    if pattern.startswith("]", j):
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str, bits: int) -> regex.Pattern[str] | None:
    if _FOREIGN_FLAGS.search(pattern) or pattern_size(pattern) > MAX_PATTERN_SIZE:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "possible nested set" and the like: the card's business
            return regex.compile(pattern, bits | regex.VERSION0)
    except (regex.error, RecursionError, OverflowError, ValueError, MemoryError):
        return None


_REPEAT = re.compile(r"\{(?:(\d+)(?:,\d*)?|,\d+)\}")  # {m} {m,} {m,n} {,n}
# Inline flags JavaScript has none of and ``pattern_size`` does not read: verbose (``x``: comments and
# spaces), ``V1`` (nested sets), ``regex``'s fuzzy, reverse, POSIX and word flags. Refused.
_FOREIGN_FLAGS = re.compile(r"\(\?[-a-zA-Z0-9]*[xVbefprw][-a-zA-Z0-9]*[:)]")
_BRACED_ESCAPES = "pPxuNg"  # \\p{L}, \\x{e9}, \\N{name}, ...: the braces belong to the escape


def pattern_size(pattern: str) -> int:
    """An upper bound of ``pattern``'s size with its repeats' minimum counts written out (every
    alternative counted, an optional part too): ``regex`` expands fixed repeats when it compiles,
    so ``(?:(?:a{1000}){1000}){1000}``, 27 characters, would take gigabytes."""
    groups: list[int] = [0]  # the size so far of each open group, the innermost last
    last = 0  # the size of the item a quantifier would apply to
    quantified = False  # the previous token was a quantifier (a ``?`` or ``+`` after it is a modifier)
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        repeat = _REPEAT.match(pattern, i) if char == "{" else None
        if char in "?*+" or repeat:
            if repeat:
                i = repeat.end()
                if not quantified:
                    count = max(1, int(repeat.group(1) or 0))
                    groups[-1] += last * (count - 1)
                    last *= count
                    quantified = True
                continue
            i += 1
            quantified = not quantified  # ``a*?``: the ``?`` modifies; ``a**`` is an error anyway
            continue
        quantified = False
        if char == "\\":
            i += 2
            if i < n and pattern[i] == "{" and pattern[i - 1] in _BRACED_ESCAPES:
                end = pattern.find("}", i)
                i = n if end == -1 else end + 1
            size = 1
        elif char == "[":
            i, size = _class_end(pattern, i), 1
        elif char == "(" and pattern.startswith("(?#", i):  # a comment
            end = pattern.find(")", i)
            i, size = (n if end == -1 else end + 1), 0
        elif char == "(":
            groups.append(0)
            i += 2 if pattern.startswith("?", i + 1) else 1  # ``(?:``, ``(?=``, ...: not a quantifier
            continue
        elif char == ")":
            size = groups.pop() + 1 if len(groups) > 1 else 1
            i += 1
        else:  # a literal, ``|`` (every alternative counts), ``^``, ``$``, ``.``
            size = 1
            i += 1
        groups[-1] += size
        last = size
    return sum(groups)


@dataclass(slots=True)
class RegexScan:
    """The time regex keys may take in one activation (a turn), and whose keys are off.

    ``character`` names the card in the log; ``clock`` (seconds, monotonic) measures the turn's
    total, compiling included. A key that uses up ``REGEX_KEY_SECONDS`` goes into ``slow`` (by
    default the process-wide set): it counts as not matched, now and on every later turn. Once the
    turn's ``REGEX_TURN_SECONDS`` are spent, the remaining regex keys count as not matched this turn.
    """

    character: str = ""
    clock: Callable[[], float] = time.monotonic
    slow: set[tuple[str, int, str]] = field(default_factory=lambda: _SLOW_KEYS)
    spent: float = 0.0

    def matches(self, haystack: str, key: str, entry: LoreEntry) -> bool | None:
        """Whether regex ``key`` (one of ``entry``'s) is found in ``haystack`` in the time left; None
        when ``key`` is no regex (not ``/pattern/flags``, and the entry is not ``use_regex``)."""
        mark = (self.character, entry.position, key)
        if mark in self.slow:
            return False
        if self._out_of_time():
            return False if entry.use_regex or _regex_source(key) is not None else None
        start = self.clock()
        try:
            pattern = js_regex(key)
            if pattern is None and entry.use_regex:
                pattern = compile_pattern(key)
        finally:
            self.spent += max(0.0, self.clock() - start)
        if pattern is None:
            return False if entry.use_regex else None  # V3: an invalid pattern never matches
        if self._out_of_time():
            return False
        bound = min(REGEX_KEY_SECONDS, REGEX_TURN_SECONDS - self.spent)
        start = self.clock()
        try:
            return pattern.search(haystack, timeout=bound) is not None
        except TimeoutError:
            if bound >= REGEX_KEY_SECONDS:  # it had its full time: off for this character from now on
                self.slow.add(mark)
                log.warning(
                    "lorebook of %s: entry %d's key %r ran past %d ms and is off until restart (fix the key with /lore edit %d keys=...)",
                    self.character or "a character", entry.position + 1, key[:60], int(REGEX_KEY_SECONDS * 1000), entry.position + 1,
                )
            return False
        finally:
            self.spent += max(0.0, self.clock() - start)

    def _out_of_time(self) -> bool:
        if self.spent < REGEX_TURN_SECONDS:
            return False
        if self.character not in _OUT_OF_TIME:  # said once per character: it may happen on every turn
            _OUT_OF_TIME.add(self.character)
            log.warning(
                "lorebook of %s: its regex keys took more than %d ms on one turn; the rest did not match (see /lore list)",
                self.character or "a character", int(REGEX_TURN_SECONDS * 1000),
            )
        return True


_SLOW_KEYS: set[tuple[str, int, str]] = set()  # (character, entry position, key): regex keys that timed out
_OUT_OF_TIME: set[str] = set()  # characters whose regex keys have used up a turn's time


def _unspaced(char: str) -> bool:
    """A letter of a script written without spaces between words (CJK, kana, Thai, Lao, Khmer, Myanmar, ...)."""
    o = ord(char)
    return (
        0x2E80 <= o <= 0x9FFF or 0xAC00 <= o <= 0xD7AF or 0xF900 <= o <= 0xFAFF or 0xFF66 <= o <= 0xFF9F
        or 0x0E00 <= o <= 0x0EFF or 0x1000 <= o <= 0x109F or 0x1780 <= o <= 0x17FF or 0x20000 <= o <= 0x3FFFF
    )


def _word_char(char: str) -> bool:
    return (char.isalnum() or char == "_") and not _unspaced(char)


def key_matches(
    haystack: str, key: str, entry: LoreEntry, folded: str | None = None, scan: RegexScan | None = None,
) -> bool:
    """Whether ``key`` (one of ``entry``'s keys) occurs in ``haystack`` by ``entry``'s rules
    (``folded``: ``haystack.casefold()``, when the caller has it already; ``scan``: the time regex keys
    have left, a fresh budget when None)."""
    if entry.use_regex or key.startswith("/"):
        found = (scan if scan is not None else RegexScan()).matches(haystack, key, entry)
        if found is not None:
            return found
    if not entry.case_sensitive:
        haystack, key = folded if folded is not None else haystack.casefold(), key.casefold()
    if entry.whole_words is False or len(key.split()) > 1:
        return key in haystack
    start = haystack.find(key)
    while start != -1:
        end = start + len(key)
        before = haystack[start - 1] if start else ""
        after = haystack[end] if end < len(haystack) else ""
        # SillyTavern's (?:^|\W)key(?:$|\W): the characters on both sides are not word characters.
        if not (before and _word_char(before)) and not (after and _word_char(after)):
            return True
        start = haystack.find(key, start + 1)
    return False


def _secondary_ok(
    haystack: str, keys: Sequence[str], entry: LoreEntry, folded: str | None = None, scan: RegexScan | None = None,
) -> bool:
    """SillyTavern's ``matchSecondaryKeys``."""
    any_match, all_match = False, True
    for key in keys:
        found = bool(key) and key_matches(haystack, key, entry, folded, scan)
        any_match = any_match or found
        all_match = all_match and found
        if entry.logic == AND_ANY and found:
            return True
        if entry.logic == NOT_ALL and not found:
            return True
    if entry.logic == NOT_ANY and not any_match:
        return True
    if entry.logic == AND_ALL and all_match:
        return True
    return False


# ---- activation --------------------------------------------------------------------------------


def activate(
    book: Lorebook | None,
    messages: Sequence[str],
    *,
    settings: LoreSettings = LoreSettings(),
    names: Callable[[str], str] = lambda key: key,
    count: Callable[[str], int],
    join: Callable[[Sequence[str]], str] = " ".join,
    character: str = "",
) -> list[LoreEntry]:
    """The entries ``messages`` (the conversation's, oldest first, the new message last) activate, kept
    within the budget, in prompt order (lowest ``insertion_order`` first).

    ``names`` fills ``{{char}}`` and ``{{user}}`` in keys; ``count`` counts tokens of the entries' text
    as ``join`` puts it together (the budget is counted on what goes into the prompt). ``character``
    (the card's name) is whose regex keys these are: one that times out is off for it from then on.
    """
    if book is None or not book.entries or settings.max_tokens <= 0:
        return []
    budget = min(settings.max_tokens, book.token_budget) if book.token_budget and book.token_budget > 0 else settings.max_tokens
    recent = [m.strip() for m in reversed(messages)]  # newest first, as SillyTavern's buffer
    passes = 1 + (settings.recursion if book.recursive_scanning is not False else 0)
    # The budget walk: highest insertion_order first, then highest priority, then the book's order.
    ranked = sorted(book.entries, key=lambda e: (-e.insertion_order, -e.priority, e.position))
    kept: list[LoreEntry] = []
    taken: set[int] = set()
    counted: list[str] = []  # every entry text the walk has taken in (SillyTavern's newContent)
    recursed: list[str] = []
    scan = RegexScan(character)  # one time budget for every regex key of this activation
    for step in range(passes):
        recursion = step > 0
        now: list[LoreEntry] = []
        scanned: dict[int, tuple[str, str]] = {}  # depth -> the text scanned and its casefold, for this pass
        for entry in ranked:
            if entry.position in taken or not entry.enabled or not entry.content.strip():
                continue
            if recursion and entry.exclude_recursion:
                continue
            if entry.forced is True or (entry.forced is None and entry.constant):
                now.append(entry)
                continue
            if entry.forced is False or not entry.keys:
                continue
            depth = _depth(entry, book)
            if depth not in scanned:
                text = _scanned(recent, recursed, depth)
                scanned[depth] = (text, text.casefold())
            haystack, folded = scanned[depth]
            if not haystack:
                continue
            if not any((k := names(key).strip()) and key_matches(haystack, k, entry, folded, scan) for key in entry.keys):
                continue
            if entry.selective and entry.secondary_keys:
                if not _secondary_ok(haystack, [names(k).strip() for k in entry.secondary_keys], entry, folded, scan):
                    continue
            now.append(entry)
        overflowed = False
        fresh: list[LoreEntry] = []
        for entry in now:
            if overflowed and not entry.ignore_budget:
                continue
            counted.append(entry.content)
            if not entry.ignore_budget and count(join(counted)) >= budget:
                overflowed = True
                continue
            fresh.append(entry)
        kept.extend(fresh)
        taken.update(e.position for e in fresh)
        feed = [e.content for e in fresh if not e.prevent_recursion]
        if overflowed or not feed:
            break
        recursed.extend(feed)
    return sorted(kept, key=lambda e: (e.insertion_order, e.position))


def _depth(entry: LoreEntry, book: Lorebook) -> int:
    """How many recent messages ``entry`` scans: its own depth, else the book's, else SillyTavern's default."""
    depth = entry.scan_depth if entry.scan_depth is not None else book.scan_depth if book.scan_depth is not None else DEFAULT_SCAN_DEPTH
    return min(depth, MAX_SCAN_DEPTH)


def _scanned(recent: Sequence[str], recursed: Sequence[str], depth: int) -> str:
    """SillyTavern's ``WorldInfoBuffer.get``: the last ``depth`` messages, newest first, each after a
    ``\\x01``, then the text of entries activated by earlier passes.

    ``MAX_SCAN_CHARS`` bounds the messages' part (the newest kept) and again the entries' part.
    """
    if depth <= 0:
        return ""
    parts = [(_MATCHER + ("\n" + _MATCHER).join(part))[:MAX_SCAN_CHARS] for part in (recent[:depth], recursed) if part]
    return "\n".join(parts) or _MATCHER


# ---- editing a card's book (admin commands) ---------------------------------------------------

# What `/lore add` and `/lore edit` take: field name -> (where, card field). ``entry``: the entry
# object; ``ext``: its extensions.
EDIT_FIELDS = {
    "keys": ("entry", "keys"),
    "secondary_keys": ("entry", "secondary_keys"),
    "content": ("entry", "content"),
    "logic": ("ext", "selectiveLogic"),
    "order": ("entry", "insertion_order"),
    "priority": ("entry", "priority"),
    "enabled": ("entry", "enabled"),
    "constant": ("entry", "constant"),
    "selective": ("entry", "selective"),
    "case_sensitive": ("entry", "case_sensitive"),
    "whole_words": ("ext", "match_whole_words"),
    "scan_depth": ("ext", "scan_depth"),
    "use_regex": ("entry", "use_regex"),
    "comment": ("entry", "comment"),
    "name": ("entry", "name"),
}
_ALIASES = {
    "key": "keys", "secondary": "secondary_keys", "secondary_key": "secondary_keys", "insertion_order": "order",
    "selective_logic": "logic", "selectivelogic": "logic", "match_whole_words": "whole_words", "case": "case_sensitive",
    "regex": "use_regex", "text": "content",
}
_LOGIC_WORDS = {name.replace(" ", ""): value for value, name in LOGIC_NAMES.items()}
FIELDS_HELP = "keys, secondary_keys, logic, content, order, priority, enabled, constant, case_sensitive, whole_words, scan_depth, use_regex, comment, name"


def field_name(key: str) -> str:
    """A field as an admin may write it (``insertion_order``, ``secondary``, ...) in its one name; InvalidInput if unknown."""
    word = key.strip().lower().replace("-", "_")
    word = _ALIASES.get(word, word)
    if word not in EDIT_FIELDS:
        raise InvalidInput(f"a lorebook entry has no field {key.strip()[:40]!r}; fields: {FIELDS_HELP}")
    return word


def split_keys(text: str) -> list[str]:
    """Comma-separated keys; a ``/regex/flags`` key may hold commas."""
    keys: list[str] = []
    rest = text.strip()
    while rest:
        match = re.match(r"/(?:\\.|[^/\\])+/[gimsuy]*(?=\s*(?:,|$))", rest)
        if match:
            key, rest = match.group(0), rest[match.end():]
        else:
            key, _, rest = rest.partition(",")
            rest = "," + rest if _ else ""
        key = key.strip()
        if key:
            keys.append(key)
        rest = rest.lstrip().removeprefix(",").lstrip()
    return keys


def _switch(name: str, value: object, *, default: bool = False) -> bool | None:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in ("on", "yes", "true", "1"):
        return True
    if word in ("off", "no", "false", "0"):
        return False
    if default and word == "default":
        return None
    allowed = "on, off or default" if default else "on or off"
    raise InvalidInput(f"{name} must be {allowed}, not {str(value)[:40]!r}")


def _whole(name: str, value: object, *, low: int, high: int, default: bool = False) -> int | None:
    if default and str(value).strip().lower() == "default":
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, not {str(value)[:40]!r}") from None
    if not low <= number <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}, not {number}")
    return number


def _check_keys(name: str, keys: list[str], use_regex: bool) -> list[str]:
    if len(keys) > MAX_KEYS:
        raise InvalidInput(f"{name} has {len(keys)} keys; the limit is {MAX_KEYS}")
    for key in keys:
        if len(key) > MAX_KEY_CHARS:
            raise InvalidInput(f"a key of {name} is {len(key):,} characters long; the limit is {MAX_KEY_CHARS}")
        looks_regex = key.startswith("/") and _REGEX_KEY.match(key) is not None
        if (use_regex and not looks_regex and compile_pattern(key) is None) or (looks_regex and js_regex(key) is None):
            raise InvalidInput(
                f"key {key[:60]!r} is not a valid regular expression (write /pattern/flags, every / inside as \\/)"
                f" or repeats too much (at most {MAX_PATTERN_SIZE:,} characters with its {{n}} repeats written out)"
            )
    return keys


def _set_field(entry: dict[str, Any], field: str, value: object) -> None:
    where, name = EDIT_FIELDS[field]
    ext = entry.setdefault("extensions", {})
    if not isinstance(ext, dict):
        ext = entry["extensions"] = {}
    target = entry if where == "entry" else ext
    if field in ("keys", "secondary_keys"):
        keys = split_keys(value) if isinstance(value, str) else [str(v) for v in value]  # type: ignore[union-attr]
        target[name] = keys
        if field == "secondary_keys":
            entry["selective"] = bool(keys)  # the keys are read only by a selective entry
    elif field == "content":
        text = str(value).strip()
        if not text:
            raise InvalidInput("content is empty: say what the entry tells the model")
        if len(text) > MAX_CONTENT_CHARS:
            raise InvalidInput(f"content is {len(text):,} characters long; the limit is {MAX_CONTENT_CHARS:,}")
        target[name] = text
    elif field == "logic":
        word = re.sub(r"[\s_]+", "", str(value).lower())
        if word in _LOGIC_WORDS:
            target[name] = _LOGIC_WORDS[word]
        elif word in ("0", "1", "2", "3"):
            target[name] = int(word)
        else:
            raise InvalidInput(f"logic must be and_any, not_all, not_any or and_all, not {str(value)[:40]!r}")
    elif field in ("order", "priority"):
        target[name] = _whole(field, value, low=-(10**9), high=10**9)
    elif field == "scan_depth":
        depth = _whole("scan_depth", value, low=0, high=MAX_SCAN_DEPTH, default=True)
        if depth is None:
            target.pop(name, None)
        else:
            target[name] = depth
    elif field in ("case_sensitive", "whole_words"):
        flag = _switch(field, value, default=True)
        if flag is None:
            target.pop(name, None)
        else:
            target[name] = flag
    elif field in ("enabled", "constant", "selective", "use_regex"):
        target[name] = _switch(field, value)
    else:  # comment, name
        text = str(value).strip()
        if len(text) > MAX_KEY_CHARS * 5:
            raise InvalidInput(f"{field} is {len(text):,} characters long; the limit is {MAX_KEY_CHARS * 5:,}")
        target[name] = text


def _check_entry(entry: Mapping[str, Any], number: int) -> None:
    keys = entry.get("keys") if isinstance(entry.get("keys"), list) else []
    use_regex = entry.get("use_regex") is True
    _check_keys("keys", [k for k in keys if isinstance(k, str)], use_regex)
    secondary = entry.get("secondary_keys") if isinstance(entry.get("secondary_keys"), list) else []
    _check_keys("secondary_keys", [k for k in secondary if isinstance(k, str)], use_regex)
    if not keys and entry.get("constant") is not True:
        raise InvalidInput(f"entry {number} needs keys (keys=a,b), or constant=on to be always in the scene")
    if not isinstance(entry.get("content"), str) or not entry["content"].strip():
        raise InvalidInput(f"entry {number} needs content (content=...)")


def _fields(changes: Mapping[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in changes.items():
        name = field_name(key)
        if name in out:
            raise InvalidInput(f"{name} is given twice")
        out[name] = value
    return out


def add_entry(card: Mapping[str, Any], changes: Mapping[str, object]) -> tuple[dict[str, Any], int]:
    """A copy of ``card`` with a new lorebook entry (the book is made if the card has none) and the new
    entry's number (1-based); InvalidInput, nothing changed, when the fields do not make an entry."""
    fields = _fields(changes)
    new = copy.deepcopy(dict(card))
    data = new["data"]
    book = data.get("character_book")
    if book is None:
        book = data["character_book"] = {"entries": [], "extensions": {}}
    if not isinstance(book, dict) or not isinstance(book.get("entries"), list):
        raise InvalidInput("this card's character_book is not a lorebook object with an entries list; fix the card and import it again")
    entries = book["entries"]
    if len(entries) >= MAX_ENTRIES:
        raise InvalidInput(f"the lorebook has {len(entries)} entries; the limit is {MAX_ENTRIES}")
    ids = [e.get("id") for e in entries if isinstance(e, dict) and isinstance(e.get("id"), int) and not isinstance(e.get("id"), bool)]
    entry: dict[str, Any] = {
        "keys": [], "content": "", "extensions": {}, "enabled": True, "insertion_order": DEFAULT_ORDER,
        "id": max(ids, default=-1) + 1, "comment": "", "selective": False, "secondary_keys": [], "constant": False,
        "position": "before_char",
    }
    for name, value in fields.items():
        _set_field(entry, name, value)
    _check_entry(entry, len(entries) + 1)
    entries.append(entry)
    return new, len(entries)


def edit_entry(card: Mapping[str, Any], number: int, changes: Mapping[str, object]) -> dict[str, Any]:
    """A copy of ``card`` with entry ``number`` (1-based) changed; every other field of it stays as it was."""
    fields = _fields(changes)
    if not fields:
        raise InvalidInput(f"say what to change, e.g. /lore edit {number} content=...; fields: {FIELDS_HELP}")
    new = copy.deepcopy(dict(card))
    entry = _entry_at(new, number)
    for name, value in fields.items():
        _set_field(entry, name, value)
    _check_entry(entry, number)
    return new


def remove_entry(card: Mapping[str, Any], number: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A copy of ``card`` without entry ``number`` (1-based), and the entry removed."""
    new = copy.deepcopy(dict(card))
    _entry_at(new, number)
    removed = new["data"]["character_book"]["entries"].pop(number - 1)
    return new, removed


def entry_at(card: Mapping[str, Any], number: int) -> dict[str, Any]:
    """Entry ``number`` (1-based) of the card's book; InvalidInput saying how many there are."""
    return _entry_at(card, number)


def _entry_at(card: Mapping[str, Any], number: int) -> dict[str, Any]:
    book = book_of(card)
    entries = book.get("entries") if book is not None else None
    if not isinstance(entries, list) or not entries:
        raise InvalidInput("this character has no lorebook entries; add one with /lore add keys=...; content=...")
    if not 1 <= number <= len(entries):
        raise InvalidInput(f"there is no entry {number}: the lorebook has entries 1 to {len(entries)}")
    entry = entries[number - 1]
    if not isinstance(entry, dict):
        raise InvalidInput(f"entry {number} is not an object in this card; fix the card and import it again")
    return entry


def describe_entry(number: int, entry: Mapping[str, Any], *, full: bool = False, limit: int = 80) -> str:
    """One line for ``/lore list`` (``full``: every field for ``/lore show``)."""
    read = _read_entry(number - 1, entry)
    if read is None:
        return f"{number}. (not an entry object)"
    flags = []
    if not read.enabled:
        flags.append("off")
    if read.constant:
        flags.append("constant")
    if read.forced is not None:
        flags.append("@@activate" if read.forced else "@@dont_activate")
    keys = ", ".join(read.keys) or "(no keys)"
    head = f"{number}. [{keys}]" + (f" ({', '.join(flags)})" if flags else "") + f" order {_show_number(read.insertion_order)}"
    if not full:
        text = " ".join(read.content.split())
        return head + f": {text[:limit]}{'…' if len(text) > limit else ''}"
    lines = [head]
    if read.selective and read.secondary_keys:
        lines.append(f"secondary keys ({LOGIC_NAMES[read.logic]}): {', '.join(read.secondary_keys)}")
    rules = [
        f"priority {_show_number(read.priority)}" if "priority" in entry else None,
        "case-sensitive" if read.case_sensitive else None,
        "substring match" if read.whole_words is False else None,
        f"scan depth {read.scan_depth}" if read.scan_depth is not None else None,
        "regex keys" if read.use_regex else None,
    ]
    if any(rules):
        lines.append("; ".join(r for r in rules if r))
    for label in ("name", "comment"):
        if isinstance(entry.get(label), str) and entry[label].strip():
            lines.append(f"{label}: {entry[label].strip()}")
    lines.append(read.content)
    return "\n".join(lines)


def _show_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def book_summary(card: Mapping[str, Any], *, default_depth: int = DEFAULT_SCAN_DEPTH) -> str:
    """The book-level settings as ``/lore list`` shows them."""
    read = read_lorebook(card)
    if read is None:
        return ""
    parts = [f"scans the last {read.scan_depth if read.scan_depth is not None else default_depth} messages"]
    if read.token_budget:
        parts.append(f"token budget {read.token_budget}")
    if read.recursive_scanning is False:
        parts.append("no recursion")
    return "; ".join(parts)


def entries_of(card: Mapping[str, Any]) -> list[Any]:
    book = book_of(card)
    entries = book.get("entries") if book is not None else None
    return entries if isinstance(entries, list) else []



# ---- the /lore command's text ------------------------------------------------------------------

_ACTIONS = ("list", "show", "add", "edit", "remove")
_SEPARATOR = re.compile(r"(?<!\\);|\n")  # a ; after a backslash is part of the value


@dataclass(frozen=True, slots=True)
class LoreCommand:
    """``/lore ...`` read: the action, the entry number, the fields, and the character named (None: the one here)."""

    action: str
    number: int | None = None
    fields: dict[str, str] | None = None
    character: str | None = None


def parse_lore_fields(text: str) -> tuple[dict[str, str], str | None]:
    """``field=value`` pairs separated by ``;`` or new lines, and ``character=NAME`` apart.

    ``content=`` takes everything after it, so an entry's text may hold ``;`` and new lines: it comes last.
    Another value holds a ``;`` written ``\\;`` (a key ``/a\\;b/`` is ``/a;b/``).
    """
    fields: dict[str, str] = {}
    character: str | None = None
    rest = text.strip()
    while rest:
        pieces = _SEPARATOR.split(rest, maxsplit=1)
        part, after = pieces[0], pieces[1] if len(pieces) > 1 else ""
        if not part.strip():
            rest = after.strip()
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidInput(f"expected field=value, not {part.strip()[:60]!r}")
        if key.lower() in ("character", "char"):
            character = value.strip().replace("\\;", ";")
        else:
            name = field_name(key)
            if name == "content":
                # The rest of the text, as written (the separator after the first line is part of it).
                value = rest.partition("=")[2]
                after = ""
            if name in fields:
                raise InvalidInput(f"{name} is given twice")
            fields[name] = value.strip() if name == "content" else value.strip().replace("\\;", ";")
        rest = after.strip()
    return fields, character


def parse_lore_command(text: str) -> LoreCommand:
    """What follows ``/lore``; InvalidInput with the usage when it is not a lore command."""
    word, _, rest = text.strip().partition(" ")
    action = word.strip().lower()
    if "\n" in action:
        action, _, more = action.partition("\n")
        rest = (more + " " + rest).strip()
    rest = rest.strip()
    if action in ("", "list"):
        return LoreCommand("list", character=rest or None)
    if action not in _ACTIONS:
        raise InvalidInput(f"unknown /lore action {action[:20]!r}: use list, show N, add, edit N or remove N (see /help)")
    if action == "add":
        fields, character = parse_lore_fields(rest)
        return LoreCommand("add", fields=fields, character=character)
    head, _, tail = rest.partition(" ")
    first, nl, more = head.partition("\n")
    if nl:
        tail = (more + " " + tail).strip()
        head = first
    try:
        number = int(head)
    except ValueError:
        raise InvalidInput(f"/lore {action} needs an entry number (see /lore list), not {head[:20]!r}") from None
    tail = tail.strip()
    if action == "edit":
        fields, character = parse_lore_fields(tail)
        return LoreCommand("edit", number, fields, character)
    return LoreCommand(action, number, character=tail or None)
