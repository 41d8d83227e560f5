"""Lorebooks as SillyTavern runs them: activation, order, budget, recursion; the scene slot's one line;
and the edits the /lore commands make to a card's book."""

from __future__ import annotations

import copy
import json

import pytest

from core.cards import new_card, normalise_card, profile_from_card
from core.errors import InvalidInput
from core.lorebook import (
    LoreSettings,
    activate,
    add_entry,
    edit_entry,
    parse_decorators,
    parse_lore_command,
    read_lorebook,
    remove_entry,
    split_keys,
)
from core.model_input import model_messages
from core.prompt import Turn, estimate_tokens, render_system_prompt
from core.scene_text import scene_text


def entry(keys, content, **fields) -> dict:
    base = {"keys": list(keys), "content": content, "extensions": {}, "enabled": True, "insertion_order": 100}
    base.update(fields)
    return base


def book(*entries, **fields) -> dict:
    return {"entries": list(entries), "extensions": {}, **fields}


def fired(lore: dict, *messages: str, settings: LoreSettings = LoreSettings(), count=estimate_tokens) -> list[str]:
    read = read_lorebook({"data": {"character_book": lore}})
    return [e.content for e in activate(read, list(messages), settings=settings, count=count)]


# ---- keys -------------------------------------------------------------------------------------


def test_a_key_activates_its_entry_only_when_it_is_in_the_scanned_messages() -> None:
    lore = book(entry(["ghost"], "A ghost walks the battlements."))
    assert fired(lore, "Is there a ghost here?") == ["A ghost walks the battlements."]
    assert fired(lore, "Is there anyone here?") == []


def test_the_default_scan_depth_is_the_last_two_messages_and_the_card_can_change_it() -> None:
    lore = book(entry(["ghost"], "G."))
    # oldest first: the new message last
    assert fired(lore, "the ghost", "reply", "new message") == []  # third from the end: outside depth 2
    assert fired(lore, "the ghost", "new message") == ["G."]
    deep = book(entry(["ghost"], "G."), scan_depth=3)
    assert fired(deep, "the ghost", "reply", "new message") == ["G."]
    assert fired(deep, "the ghost", "x", "reply", "new message") == []
    entry_depth = book(entry(["ghost"], "G.", extensions={"scan_depth": 1}), scan_depth=5)
    assert fired(entry_depth, "the ghost", "new message") == []  # the entry's own depth wins
    none = book(entry(["ghost"], "G."), scan_depth=0)
    assert fired(none, "the ghost") == []


def test_keys_are_case_insensitive_unless_the_entry_says_otherwise() -> None:
    assert fired(book(entry(["Ophelia"], "O.")), "OPHELIA drowned") == ["O."]
    sensitive = book(entry(["Ophelia"], "O.", case_sensitive=True))
    assert fired(sensitive, "ophelia drowned") == []
    assert fired(sensitive, "Ophelia drowned") == ["O."]
    # SillyTavern's own place for it
    st = book(entry(["Ophelia"], "O.", extensions={"case_sensitive": True}))
    assert fired(st, "ophelia drowned") == []


def test_keys_match_whole_words_by_default() -> None:
    lore = book(entry(["king"], "K."))
    assert fired(lore, "Long live the king!") == ["K."]
    assert fired(lore, "(king) at the start") == ["K."]
    assert fired(lore, "It is not to my liking.") == []
    assert fired(lore, "kingdom") == []
    loose = book(entry(["king"], "K.", extensions={"match_whole_words": False}))
    assert fired(loose, "kingdom") == ["K."]
    # a key with a space is matched as text, as SillyTavern does
    assert fired(book(entry(["red king"], "R.")), "the red kingdom") == ["R."]
    # a word in a language written without spaces is found inside the sentence
    assert fired(book(entry(["长安"], "长安是都城。")), "我想去长安看看") == ["长安是都城。"]
    assert fired(book(entry(["café"], "C.")), "cafés") == []


def test_regex_keys_as_sillytavern_writes_them() -> None:
    lore = book(entry(["/gh(o|ou)sts?/i"], "G."))
    assert fired(lore, "GHOUSTS!") == ["G."]
    assert fired(lore, "a host") == []
    assert fired(book(entry(["/^\\x01Hamlet/"], "H.")), "Hamlet speaks") == ["H."]  # each message starts after \x01
    # not a regex (an unescaped / inside): plain text
    assert fired(book(entry(["/a/b/"], "P.")), "say /a/b/ now") == ["P."]
    # V3 use_regex: every key is a pattern; an invalid one never matches
    assert fired(book(entry(["gh.st"], "V.", use_regex=True)), "ghost") == ["V."]
    assert fired(book(entry(["gh(ost"], "V.", use_regex=True)), "gh(ost") == []


def test_keys_fill_char_and_user() -> None:
    card = new_card(name="Hamlet", world="Denmark", traits=["brooding"], mbti="INFP", style=["poetic"], scene="Elsinore.")
    card["data"]["character_book"] = book(entry(["{{user}}'s sword"], "The sword is sharp."))
    profile = profile_from_card(normalise_card(card))
    system = model_messages(profile, user="Elena", text="Take Elena's sword.")[0]["content"]
    assert "The sword is sharp." in system


@pytest.mark.parametrize(
    ("logic", "present", "expected"),
    [
        (0, [], False), (0, ["red"], True), (0, ["red", "blue"], True),  # AND ANY
        (1, [], True), (1, ["red"], True), (1, ["red", "blue"], False),  # NOT ALL
        (2, [], True), (2, ["red"], False), (2, ["red", "blue"], False),  # NOT ANY
        (3, [], False), (3, ["red"], False), (3, ["red", "blue"], True),  # AND ALL
    ],
)
def test_secondary_keys_follow_the_entry_logic(logic, present, expected) -> None:
    lore = book(entry(["sword"], "S.", selective=True, secondary_keys=["red", "blue"], extensions={"selectiveLogic": logic}))
    assert fired(lore, " ".join(["a sword", *present])) == (["S."] if expected else [])
    assert fired(lore, " ".join(present)) == []  # never without a primary key


def test_secondary_keys_count_only_for_a_selective_entry() -> None:
    lore = book(entry(["sword"], "S.", selective=False, secondary_keys=["red"], extensions={"selectiveLogic": 3}))
    assert fired(lore, "a sword") == ["S."]


def test_constant_and_disabled_entries_and_decorators() -> None:
    lore = book(
        entry([], "Always.", constant=True),
        entry(["ghost"], "Off.", enabled=False),
        entry(["ghost"], "Off constant.", enabled=False, constant=True),
        entry([], "@@activate\nForced."),
        entry(["ghost"], "@@dont_activate\nNever."),
        entry(["ghost"], ""),  # empty content adds nothing
    )
    assert fired(lore, "a ghost") == ["Always.", "Forced."]
    assert parse_decorators("@@risu_only 4\n@@@scan_depth 1\nText") == ("Text", None, 1)
    assert parse_decorators("@@scan_depth 3\n@@@activate\nText") == ("Text", None, 3)  # a fallback after a known one is skipped


# ---- order and budget ---------------------------------------------------------------------------


def test_kept_entries_go_into_the_prompt_lowest_insertion_order_first() -> None:
    lore = book(entry(["a"], "Third.", insertion_order=30), entry(["a"], "First.", insertion_order=10), entry(["a"], "Second.", insertion_order=20))
    assert fired(lore, "a") == ["First.", "Second.", "Third."]


def words(n: int) -> str:
    return " ".join(["word"] * n) + "."


def test_over_the_budget_the_lowest_orders_are_dropped_and_the_walk_stops_as_in_sillytavern() -> None:
    count = lambda text: len(text.split())  # one token a word
    lore = book(
        entry(["a"], words(4), insertion_order=300, comment="kept first"),
        entry(["a"], words(4), insertion_order=200),
        entry(["a"], words(4), insertion_order=100),  # reaches 12 >= 10: dropped, and the walk stops
        entry(["a"], words(1), insertion_order=50),  # would fit alone: the walk has ended
        entry(["a"], words(2), insertion_order=10, extensions={"ignore_budget": True}),  # outside the budget: in
    )
    kept = fired(lore, "a", settings=LoreSettings(max_tokens=10), count=count)
    assert kept == [words(2), words(4), words(4)]
    # the total must stay under the budget: exactly at it overflows (SillyTavern's >=)
    assert fired(book(entry(["a"], words(5))), "a", settings=LoreSettings(max_tokens=5), count=count) == []
    assert fired(book(entry(["a"], words(5))), "a", settings=LoreSettings(max_tokens=6), count=count) == [words(5)]


def test_the_cards_token_budget_lowers_the_deployments_and_ignore_budget_entries_always_go_in() -> None:
    count = lambda text: len(text.split())
    lore = book(entry(["a"], words(3), insertion_order=2), entry(["a"], words(3), insertion_order=1), token_budget=5)
    assert fired(lore, "a", settings=LoreSettings(max_tokens=100), count=count) == [words(3)]
    both = copy.deepcopy(lore)
    both["entries"][1]["extensions"]["ignore_budget"] = True
    assert fired(both, "a", settings=LoreSettings(max_tokens=100), count=count) == [words(3), words(3)]
    assert fired(lore, "a", settings=LoreSettings(max_tokens=0), count=count) == []  # off


def test_priority_decides_among_equal_insertion_orders() -> None:
    count = lambda text: len(text.split())
    lore = book(entry(["a"], "Low " + words(3), priority=1), entry(["a"], "High " + words(3), priority=9))
    assert fired(lore, "a", settings=LoreSettings(max_tokens=7), count=count) == ["High " + words(3)]


# ---- recursion ----------------------------------------------------------------------------------


def test_recursion_is_off_by_default_and_a_setting_allows_a_few_passes() -> None:
    lore = book(entry(["Bessie"], "Bessie is a cow, friends with Rufus."), entry(["Rufus"], "Rufus is a dog who knows Tom."), entry(["Tom"], "Tom is a cat."))
    assert fired(lore, "Where is Bessie?") == ["Bessie is a cow, friends with Rufus."]
    one = fired(lore, "Where is Bessie?", settings=LoreSettings(recursion=1))
    assert one == ["Bessie is a cow, friends with Rufus.", "Rufus is a dog who knows Tom."]
    assert len(fired(lore, "Where is Bessie?", settings=LoreSettings(recursion=2))) == 3
    no = copy.deepcopy(lore)
    no["recursive_scanning"] = False
    assert len(fired(no, "Where is Bessie?", settings=LoreSettings(recursion=2))) == 1
    excluded = copy.deepcopy(lore)
    excluded["entries"][1]["extensions"]["exclude_recursion"] = True
    assert len(fired(excluded, "Where is Bessie?", settings=LoreSettings(recursion=2))) == 1


# ---- the scene slot -----------------------------------------------------------------------------


def test_scene_text_is_one_line_of_sentences() -> None:
    assert scene_text("Elsinore at night.") == "Elsinore at night."
    assert scene_text("Elsinore at night", ["The king is dead\nLong live the king!", "  "]) == (
        "Elsinore at night. The king is dead Long live the king!"
    )
    assert scene_text("", ["A ghost walks"]) == "A ghost walks."
    assert scene_text("长安城。", ["李白爱酒"], language="zh") == "长安城。李白爱酒。"


def test_a_lorebook_entry_reaches_the_system_prompt_only_when_its_key_is_recent() -> None:
    card = new_card(name="Hamlet", world="Denmark", traits=["brooding"], mbti="INFP", style=["poetic"], scene="Elsinore at night.")
    card["data"]["character_book"] = book(entry(["Yorick"], "Yorick was the king's jester;\nHamlet knew him well."))
    profile = profile_from_card(normalise_card(card))
    plain = render_system_prompt(profile, chat_role="Elena")
    old = [Turn("user", "Remember Yorick?"), Turn("assistant", "Alas."), Turn("user", "And now?"), Turn("assistant", "Nothing.")]
    assert model_messages(profile, user="Elena", text="Tell me more.", history=old)[0]["content"] == plain
    system = model_messages(profile, user="Elena", text="Poor Yorick!", history=old)[0]["content"]
    assert "Current scene:\nElsinore at night. Yorick was the king's jester; Hamlet knew him well.\nrole's emotion" in system
    assert len(system.splitlines()) == len(plain.splitlines())
    # the greeting is a scanned message too; the opening line composed for the model is not
    greeting = [Turn("assistant", "Yorick's skull is here.")]
    assert "jester" in model_messages(profile, user="Elena", text="Hi.", history=greeting)[0]["content"]
    assert "jester" not in model_messages(profile, user="Yorick", text="Hi.")[0]["content"]


# ---- editing ------------------------------------------------------------------------------------


def full_card() -> dict:
    card = new_card(name="Hamlet", world="Denmark", traits=["brooding"], mbti="INFP", style=["poetic"])
    card["data"]["character_book"] = book(
        entry(["a"], "A.", id=7, comment="first", extensions={"depth": 4, "vendor/x": {"keep": [1, 2]}}, position="after_char"),
        name="Elsinore lore", scan_depth=3, token_budget=300, recursive_scanning=False,
    )
    return normalise_card(card)


def test_an_edit_changes_the_fields_named_and_keeps_every_other() -> None:
    card = full_card()
    new = edit_entry(card, 1, {"content": "B.", "logic": "not any", "secondary": "x, y", "whole_words": "off"})
    e = new["data"]["character_book"]["entries"][0]
    assert e["content"] == "B." and e["secondary_keys"] == ["x", "y"] and e["selective"] is True
    assert e["extensions"] == {"depth": 4, "vendor/x": {"keep": [1, 2]}, "selectiveLogic": 2, "match_whole_words": False}
    assert (e["id"], e["comment"], e["position"]) == (7, "first", "after_char")
    assert {k: v for k, v in new["data"]["character_book"].items() if k != "entries"} == {
        k: v for k, v in card["data"]["character_book"].items() if k != "entries"
    }
    assert card["data"]["character_book"]["entries"][0]["content"] == "A."  # the original is untouched


def test_add_and_remove() -> None:
    card = new_card(name="Hamlet", world="Denmark", traits=["brooding"], mbti="INFP", style=["poetic"])
    card, number = add_entry(card, {"keys": "ghost, /sp(i|e)rit/i", "content": "Line one; still\nline two", "order": "5"})
    assert number == 1
    e = card["data"]["character_book"]["entries"][0]
    assert e["keys"] == ["ghost", "/sp(i|e)rit/i"] and e["insertion_order"] == 5 and e["enabled"] is True
    card, number = add_entry(card, {"constant": "on", "content": "Always."})
    assert number == 2 and card["data"]["character_book"]["entries"][1]["id"] == 1
    card, removed = remove_entry(card, 1)
    assert removed["keys"][0] == "ghost" and len(card["data"]["character_book"]["entries"]) == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"content": "No keys."}, "needs keys"),
        ({"keys": "a"}, "needs content"),
        ({"keys": "a", "content": "x", "bogus": "1"}, "no field 'bogus'"),
        ({"keys": "/a(/", "content": "x"}, "not a valid regular expression"),
        ({"keys": "a", "content": "x", "logic": "maybe"}, "logic"),
        ({"keys": "a", "content": "x", "order": "soon"}, "whole number"),
        ({"keys": "a", "content": "x", "enabled": "perhaps"}, "on or off"),
        ({"keys": "a", "content": "x", "scan_depth": "-1"}, "between 0 and 1000"),
    ],
)
def test_bad_fields_are_refused_with_a_reason_and_change_nothing(changes, message) -> None:
    card = full_card()
    before = json.dumps(card, sort_keys=True)
    with pytest.raises(InvalidInput, match=message):
        add_entry(card, changes)
    assert json.dumps(card, sort_keys=True) == before


@pytest.mark.parametrize(
    "changes",
    [{"keys": ""}, {"content": "  "}, {"bogus": "1"}, {"keys": "/a(/"}, {"logic": "maybe"}, {"priority": "high"}, {}],
)
def test_bad_edits_are_refused_and_change_nothing(changes) -> None:
    card = full_card()
    before = json.dumps(card, sort_keys=True)
    with pytest.raises(InvalidInput):
        edit_entry(card, 1, changes)
    with pytest.raises(InvalidInput, match="no entry 2"):
        edit_entry(card, 2, {"content": "x"})
    with pytest.raises(InvalidInput, match="no entry 0"):
        remove_entry(card, 0)
    assert json.dumps(card, sort_keys=True) == before


def test_the_command_text() -> None:
    assert split_keys("a, b ,/x,y/i, c") == ["a", "b", "/x,y/i", "c"]
    command = parse_lore_command("add keys=a,b; order=5; content=One; two\nthree")
    assert (command.action, command.fields) == ("add", {"keys": "a,b", "order": "5", "content": "One; two\nthree"})
    command = parse_lore_command("edit 3 enabled=off; character=Old Hamlet")
    assert (command.action, command.number, command.fields, command.character) == ("edit", 3, {"enabled": "off"}, "Old Hamlet")
    assert parse_lore_command("show 2 Hamlet").character == "Hamlet"
    assert parse_lore_command("").action == "list"
    for bad, why in (("frob", "unknown /lore action"), ("show x", "entry number"), ("add keys", "field=value")):
        with pytest.raises(InvalidInput, match=why):
            parse_lore_command(bad)
