"""Bad card input gets one clear message; good cards keep every field."""

from __future__ import annotations

import json

import pytest

from core.cards import edit_card, normalise_card, parse_card_json, profile_from_card
from core.emotions import EmotionState
from core.errors import InvalidInput

EXT = {
    "world": "W",
    "traits": ["calm"],
    "mbti": "INTJ",
    "style": ["dry"],
    "language": "en",
    "emotion": {"happiness": 5},
    "relationship": 4,
}


def v2(**data) -> dict:
    base = {"name": "Ann", "description": "", "extensions": {"personae": dict(EXT)}}
    base.update(data)
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": base}


def with_ext(**changes) -> dict:
    card = v2()
    card["data"]["extensions"]["personae"].update(changes)
    return card


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"not json at all", "the card is not JSON"),
        (json.dumps({"spec": "chara_card_v9", "data": {"name": "A"}}), "unknown card spec 'chara_card_v9'"),
        (json.dumps({"spec": "chara_card_v2", "data": {"description": "x"}}), "name is missing"),
        (json.dumps({"description": "v1 card without a name"}), "the card has no name"),
        (json.dumps(with_ext(mbti="XYZW")), "MBTI 'XYZW' is not a type"),
        (json.dumps(with_ext(emotion={"happiness": 11})), "happiness must be from 0 to 10, not 11"),
        (json.dumps(with_ext(emotion={"anger": -1})), "anger must be from 0 to 10, not -1"),
        (json.dumps(with_ext(emotion={"joy": 3})), "unknown emotion 'joy'"),
        (json.dumps(with_ext(relationship=12)), "relationship must be from 0 to 10"),
        (json.dumps(with_ext(language="fr")), "language must be 'en' or 'zh'"),
        (json.dumps(v2(description="d" * 1_000_000)), "description is 1,000,000 characters long"),
        ('{"name": "A", "x": ' + "9" * 100_000 + "}", "a number with 100,000 digits; the limit is 18"),
        ('{"name": "A", "x": -' + "9" * 5_000 + "}", "a number with 5,000 digits"),
        ('{"name": "A", "x": 1e999}', "a number out of range (1e999)"),
        ('{"name": "A", "x": NaN}', "the card holds NaN"),
        ('{"name": "A", "x": -Infinity}', "the card holds -Infinity"),
        (json.dumps(with_ext(relationship="9" * 100_000)), "relationship must be a whole number from 0 to 10"),
        (json.dumps(with_ext(emotion={"anger": 10**15})), "anger must be from 0 to 10, not a number that large"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (json.dumps([1, 2]), "must be a JSON object"),
        (json.dumps(v2(alternate_greetings="hi")), "alternate_greetings must be a list of strings"),
    ],
)
def test_bad_cards_are_refused_with_a_clear_message(raw, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_card_json(raw)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 200


def test_every_string_in_a_card_is_cleaned_names_and_keys_included() -> None:
    raw = json.dumps(
        v2(
            name="An\u0000n\x1b",
            creator_notes="x\u0000y\r\nz\x7f\x85",
            tags=["caf\u0065\u0301", "\ud800lone"],
            custom={"ke\u0000y": ["a\tb\u0007", {"deep\udfff": "\u0008v"}]},
        )
    )
    assert "\\u0000" in raw and "\\ud800" in raw  # JSON escapes: the card parses, then is cleaned
    data = parse_card_json(raw)["data"]
    assert data["name"] == "Ann"
    assert data["creator_notes"] == "xy\nz"
    assert data["tags"] == ["caf\u00e9", "\ufffdlone"]
    assert data["custom"] == {"key": ["a\tb", {"deep\ufffd": "v"}]}
    json.dumps(data).encode("utf-8")  # storable: no surrogate left


def test_a_card_built_in_code_with_a_huge_number_is_refused() -> None:
    card = v2(custom={"n": 10**30})
    with pytest.raises(InvalidInput, match="out of range"):
        normalise_card(card)


def test_unknown_fields_and_foreign_extensions_survive() -> None:
    card = v2(custom_field={"keep": [1, "two"]}, extensions={"personae": EXT, "depth_prompt": {"prompt": "x", "depth": 4}})
    card["top_level_extra"] = "kept"
    assert parse_card_json(json.dumps(card)) == card


def test_v1_card_is_lifted_into_v2_with_extra_keys_kept() -> None:
    card = parse_card_json(json.dumps({"name": "Old", "description": "d", "scenario": "s", "first_mes": "hi", "foo": 1}))
    assert card["spec"] == "chara_card_v2"
    assert card["data"]["name"] == "Old" and card["data"]["scenario"] == "s"
    assert card["foo"] == 1
    profile = profile_from_card(card)
    assert set(profile.missing) == {"world", "traits", "mbti", "style", "language", "emotion", "relationship"}
    assert profile.world and profile.traits and profile.style  # never an empty slot


def test_v3_card_is_accepted() -> None:
    card = v2()
    card.update(spec="chara_card_v3", spec_version="3.0")
    card["data"]["group_only_greetings"] = []
    assert profile_from_card(parse_card_json(json.dumps(card))).mbti == "INTJ"


def test_edit_changes_only_the_named_fields_and_validates() -> None:
    card = normalise_card(v2(custom="x"))
    edited = edit_card(card, {"mbti": "enfp", "traits": "bold, loud", "emotion": "anger=3"})
    profile = profile_from_card(edited)
    assert profile.mbti == "ENFP" and profile.traits == ("bold", "loud")
    # The card's baseline (happiness 5 when it names none) keeps every emotion the edit does not name.
    assert profile.emotion == EmotionState(happiness=5, anger=3)
    assert edited["data"]["custom"] == "x"
    with pytest.raises(InvalidInput):
        edit_card(card, {"mbti": "ABCD"})
    with pytest.raises(InvalidInput, match="cannot edit 'spec'"):
        edit_card(card, {"spec": "x"})


def test_emotion_line_parsing_names_unknown_emotions() -> None:
    assert EmotionState.parse("happiness=1, sadness=8").as_dict()["sadness"] == 8
    with pytest.raises(InvalidInput, match="unknown emotion 'joy'"):
        EmotionState.parse("joy=2")
    with pytest.raises(InvalidInput, match="expected name=value"):
        EmotionState.parse("happiness")


def test_derived_marks_are_set_by_a_derived_edit_and_removed_by_a_person_s_edit() -> None:
    card = normalise_card(v2())
    derived = edit_card(card, {"world": "Elsinore", "mbti": "ISFJ", "scene": "x"}, derived=True)
    assert derived["data"]["extensions"]["personae"]["derived"] == ["world", "mbti"]  # only derivable fields
    assert profile_from_card(derived).derived == ("world", "mbti")

    edited = edit_card(derived, {"mbti": "INFP"})
    assert profile_from_card(edited).derived == ("world",)
    cleared = edit_card(edited, {"world": "Denmark"})
    assert "derived" not in cleared["data"]["extensions"]["personae"] and profile_from_card(cleared).derived == ()


@pytest.mark.parametrize("mark", ["world", {"world": True}, ["colour", "world", 3], ["relationship"]])
def test_a_strange_derived_mark_in_a_card_is_ignored_not_refused(mark) -> None:
    card = normalise_card(v2(extensions={"personae": {**EXT, "derived": mark}}))
    expected = ("world",) if isinstance(mark, list) and "world" in mark else ()
    assert profile_from_card(card).derived == expected
