"""Regex keys from downloaded cards run on people's messages: bounded in time and size, with the
semantics they had under ``re`` (plus what JavaScript has and ``re`` lacked); and ``\\;`` in /lore fields."""

from __future__ import annotations

import json
import logging

import pytest

from core import lorebook
from core.errors import InvalidInput
from core.lorebook import (
    MAX_SCAN_CHARS,
    REGEX_TURN_SECONDS,
    RegexScan,
    LoreSettings,
    activate,
    add_entry,
    compile_pattern,
    js_regex,
    key_matches,
    parse_lore_command,
    pattern_size,
    read_lorebook,
)
from core.prompt import estimate_tokens


def entry(keys, content, **fields) -> dict:
    return {"keys": list(keys), "content": content, "extensions": {}, "enabled": True, "insertion_order": 100, **fields}


def fired(entries: list[dict], *messages: str, character: str = "") -> list[str]:
    read = read_lorebook({"data": {"character_book": {"entries": entries, "extensions": {}}}})
    found = activate(read, list(messages), settings=LoreSettings(), count=estimate_tokens, character=character)
    return [e.content for e in found]


CATASTROPHIC = "/(a|aa)+$/"  # exponential backtracking on a long run of a's that does not end the text


def test_a_catastrophic_key_times_out_counts_as_not_matched_and_is_off_for_that_character(caplog) -> None:
    entries = [entry([CATASTROPHIC], "Slow."), entry(["ghost"], "Ghost.")]
    crafted = "a" * 5000 + "! the ghost"
    with caplog.at_level(logging.WARNING, logger="core.lorebook"):
        assert fired(entries, crafted, character="Mallory") == ["Ghost."]  # the other entry still works
    lines = [r.getMessage() for r in caplog.records if r.name == "core.lorebook"]
    assert len(lines) == 1
    assert "Mallory" in lines[0] and "entry 1" in lines[0] and "/lore edit 1" in lines[0]
    assert "aaaa" not in lines[0].replace(CATASTROPHIC, "")  # never the message
    assert ("Mallory", 0, CATASTROPHIC) in lorebook._SLOW_KEYS

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="core.lorebook"):
        # off from now on for Mallory, even where it would match in a moment, and nothing more is logged
        assert fired(entries, crafted, character="Mallory") == ["Ghost."]
        assert fired(entries, "aa", character="Mallory") == []
    assert not [r for r in caplog.records if r.name == "core.lorebook"]
    # another character's copy of the key is its own
    assert fired(entries, "aa", character="Yorick") == ["Slow."]


def test_a_key_whose_repeats_would_fill_memory_is_refused_and_never_matches() -> None:
    bomb = "/(?:(?:a{1000}){1000}){1000}/"  # 29 characters; the regex package would write out 10**9
    assert pattern_size(bomb[1:-1]) > lorebook.MAX_PATTERN_SIZE
    assert js_regex(bomb) is None
    assert fired([entry([bomb], "Bomb.")], "a" * 100) == []
    card = {"data": {"name": "X"}}
    before = json.dumps(card)
    with pytest.raises(InvalidInput, match="repeats too much"):
        add_entry(card, {"keys": bomb, "content": "x"})
    assert json.dumps(card) == before
    assert compile_pattern("(?:a{200}){100}") is None  # 20,000 written out: over the bound, though regex could build it
    # what would hide repeats from the count: a comment holding a [, verbose mode, version 1's nested sets
    for hidden in ("(?#[)(?:a{200}){100}", "(?x)#[\n(?:a{200}){100}", "(?V1)[[a]b](?:a{200}){100}", "(?e)cat"):
        assert compile_pattern(hidden) is None, hidden
    for fine in ("a{1000}", "(?:a|b){1,1000}", "(?:ab){2,}", "[a{]{3}", r"\{1000\}x"):
        assert compile_pattern(fine) is not None, fine
    assert pattern_size("(?:(?:a{10})?){10}") == pattern_size("(?:(?:a{10})){10}")  # an optional part counts


def test_the_scanned_text_keeps_the_newest_messages_within_the_cap() -> None:
    entries = [entry(["old"], "Old."), entry(["new"], "New.")]
    long_newest = "new " + "x" * MAX_SCAN_CHARS
    assert fired(entries, "old", long_newest) == ["New."]
    assert sorted(fired(entries, "old", "new")) == ["New.", "Old."]


@pytest.mark.parametrize(
    ("key", "text", "matched"),
    [
        ("/GHOST/i", "a ghost", True),
        ("/GHOST/", "a ghost", False),
        ("/^walks$/m", "the ghost\nwalks\nat night", True),
        ("/^walks$/", "the ghost\nwalks\nat night", False),
        ("/ghost.walks/s", "ghost\nwalks", True),
        ("/ghost.walks/", "ghost\nwalks", False),
        ("/(?<who>Ha)mlet \\k<who>/", "Hamlet Ha!", True),
        ("/(?<who>Ha)mlet \\k<who>/", "Hamlet Ho!", False),
        ("/\\p{L}+ü/u", "grün", True),  # a property: re could not compile it
        ("/(?<=king\\s+)Hamlet/", "king   Hamlet", True),  # lookbehind of any width, as JavaScript
        ("/a\\/b/", "a/b", True),
        ("/(?:cat){e<=1}/", "cut", False),  # braces that are no repeat are literal, as in JavaScript (regex: fuzzy)
        ("/(?:cat){e<=1}/", "cat{e<=1}", True),
        ("/caf\u00e9/gi", "CAFÉ", True),
        ("/^\\x01Hamlet/", "Hamlet speaks", True),
    ],
)
def test_regex_keys_mean_what_javascript_and_the_re_translation_meant(key, text, matched) -> None:
    assert fired([entry([key], "R.")], text) == (["R."] if matched else [])


def test_a_semicolon_in_a_field_is_written_backslash_semicolon() -> None:
    command = parse_lore_command("add keys=/a\\;b/, x\\;y; order=5; content=One\\; two; three")
    assert command.fields == {"keys": "/a;b/, x;y", "order": "5", "content": "One\\; two; three"}
    card, _ = add_entry({"data": {"name": "X"}}, command.fields)
    assert card["data"]["character_book"]["entries"][0]["keys"] == ["/a;b/", "x;y"]
    assert fired(card["data"]["character_book"]["entries"], "say a;b") == ["One\\; two; three"]
    command = parse_lore_command("edit 1 keys=p\\;q; character=Old\\; Hamlet")
    assert (command.fields, command.character) == ({"keys": "p;q"}, "Old; Hamlet")


def test_once_a_turns_time_for_regex_keys_is_spent_the_rest_do_not_match_and_are_not_turned_off(caplog) -> None:
    read = read_lorebook({"data": {"character_book": {"entries": [entry(["/gh.st/", "ghost", "/a/b/"], "G.")]}}})
    assert read is not None
    ghost = read.entries[0]
    assert key_matches("\x01a ghost", "/gh.st/", ghost, scan=RegexScan("Osric"))
    with caplog.at_level(logging.WARNING, logger="core.lorebook"):
        for _ in range(2):
            spent = RegexScan("Osric", spent=REGEX_TURN_SECONDS)
            assert not key_matches("\x01a ghost", "/gh.st/", ghost, scan=spent)
            assert key_matches("\x01a ghost", "ghost", ghost, scan=spent)  # plain keys are not timed
            assert key_matches("\x01say /a/b/", "/a/b/", ghost, scan=spent)  # nor is this one (an unescaped / inside)
    assert [r.getMessage() for r in caplog.records if r.name == "core.lorebook"] == [
        "lorebook of Osric: its regex keys took more than 250 ms on one turn; the rest did not match (see /lore list)"
    ]
    assert not [k for k in lorebook._SLOW_KEYS if k[0] == "Osric"]
    assert key_matches("\x01a ghost", "/gh.st/", ghost, scan=RegexScan("Osric"))  # the next turn has its time again
