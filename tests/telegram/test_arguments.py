"""Reading what people type after a command."""

from __future__ import annotations

import pytest

from bots.telegram.arguments import HELP, after_command, parse_bind, parse_edit, parse_fields, split_word
from core.errors import InvalidInput


def test_after_command_drops_the_command_and_the_bot_name() -> None:
    assert after_command("/bind@persona_bot  Prince Hamlet all ") == "Prince Hamlet all"
    assert after_command("/unbind") == ""


def test_fields_are_separated_by_semicolons_or_lines() -> None:
    fields = parse_fields("name=Ophelia; world=Denmark\ntraits=gentle, devoted; emotion=happiness=2,sadness=7; public=no")
    assert fields == {
        "name": "Ophelia",
        "world": "Denmark",
        "traits": "gentle, devoted",
        "emotion": "happiness=2,sadness=7",
        "public": False,
    }
    with pytest.raises(InvalidInput):
        parse_fields("name=Ophelia; Denmark")
    with pytest.raises(InvalidInput):
        parse_fields("public=maybe")


def test_edit_takes_a_name_of_several_words() -> None:
    assert parse_edit("Prince Hamlet mbti=INTJ; scene=The castle") == ("Prince Hamlet", {"mbti": "INTJ", "scene": "The castle"})
    assert parse_edit("Hamlet") == ("Hamlet", {})


def test_bind_defaults_to_mention() -> None:
    assert parse_bind("Prince Hamlet") == ("Prince Hamlet", "mention")
    assert parse_bind("Hamlet ALL") == ("Hamlet", "all")


def test_split_word() -> None:
    assert split_word("create\nname=X; world=Y") == ("create", "name=X; world=Y")
    assert split_word("Show Hamlet") == ("show", "Hamlet")


def test_help_fits_in_one_message() -> None:
    assert len(HELP) <= 4096
