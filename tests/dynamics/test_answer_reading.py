"""Reading a model's answer (appraisals, derive): the final top-level object, plain numbers, bounded cost.

Every odd answer is a BadAnswer (or InvalidInput for derive), never another exception; and reading
a huge answer costs a bounded amount of work (counted as ``{`` tried, not timed).
"""

from __future__ import annotations

import json

import pytest

from core.appraisal import BadAnswer, read_emotions, read_relationship
from core.derive import parse_proposal
from core.errors import InvalidInput

EMOTION = '{"happiness": %s, "sadness": 1, "disgust": 1, "fear": 1, "surprise": 1, "anger": 1}'
PROPOSAL = '{"world": "Denmark", "traits": ["calm"], "mbti": "INTJ", "style": ["wry"]}'


@pytest.mark.parametrize(
    "answer, level",
    [
        ('{"relationship": ' + "9" * 400 + "}", 10),  # a 400-digit score is clamped, not an OverflowError
        ('{"relationship": -' + "9" * 400 + "}", 0),
        ('{"relationship": "' + "9" * 400 + '"}', 10),
        ('{"relationship": 4, "why": {"x": 1}}', 4),  # the top-level object, not the one nested in it
        ('{"why": {"a": {"b": 1}, "c": {"d": 2}}, "relationship": 6}', 6),
        ('a {"relationship": 3} b {"relationship": 9}', 9),  # the last object
        ('Close. ```json\n{"relationship": "7.5"}\n```', 8),
        ('{"note": "a {brace} in a string", "relationship": 2}', 2),
    ],
)
def test_an_answer_with_a_usable_final_object_gives_its_score(answer, level) -> None:
    assert read_relationship(answer) == level


@pytest.mark.parametrize(
    "answer",
    [
        '{"relationship": "7_5"}',  # float() would read 75
        '{"relationship": "1e999"}',
        '{"relationship": "0x10"}',
        '{"relationship": "infinity"}',
        '{"relationship": "\u0667"}',  # an Arabic-Indic seven
        '{"relationship": 1e400}',
        '{"relationship": NaN}',
        # The final object is broken: an object from the analysis does not stand in for it.
        'analysis {"relationship": 2} final {"relationship": 9,}',
        '{"relationship": 5} {"a": ' + "[" * 100_000 + "]" * 100_000 + "}",  # nested past the decoder
        '{"relationship": 5} {"a": ' + "[" * 100_000,
    ],
)
def test_an_unusable_answer_is_a_bad_answer_and_nothing_else(answer) -> None:
    with pytest.raises(BadAnswer):
        read_relationship(answer)


def test_a_huge_emotion_score_is_clamped() -> None:
    assert read_emotions(EMOTION % ("9" * 400), "en")["happiness"] == 10
    with pytest.raises(BadAnswer):
        read_emotions(EMOTION % '"7_5"', "en")


def test_derive_reads_the_same_final_object() -> None:
    assert parse_proposal("Thinking {not json} then " + PROPOSAL)["mbti"] == "INTJ"
    nested = json.loads(PROPOSAL)
    assert parse_proposal("x " + json.dumps(nested) + " y")["world"] == "Denmark"
    with pytest.raises(InvalidInput):
        parse_proposal(PROPOSAL + ' and then {"world": ')


class CountingDecoder:
    """Counts the ``raw_decode`` calls the search makes (the work it does), delegating to json's."""

    def __init__(self) -> None:
        self.calls = 0
        self.inner = json.JSONDecoder()

    def raw_decode(self, text, at):
        self.calls += 1
        return self.inner.raw_decode(text, at)


@pytest.mark.parametrize(
    "answer",
    ["{" * 1_000_000, '{"a": 1, ' * 100_000, ('{"a":[' + "1," * 5000) * 100, "x" * 1_000_000 + "{" * 100],
)
def test_the_search_does_bounded_work_on_a_huge_answer(monkeypatch, answer) -> None:
    from core import json_answer

    decoder = CountingDecoder()
    monkeypatch.setattr(json_answer, "_DECODER", decoder)

    assert json_answer.last_json_object(answer) is None
    assert decoder.calls <= json_answer.MAX_ATTEMPTS
    with pytest.raises(BadAnswer):
        read_relationship(answer)
    with pytest.raises(InvalidInput):
        parse_proposal(answer)


def test_an_object_at_the_end_of_a_long_answer_is_still_found() -> None:
    assert read_relationship("x" * 5_000_000 + '{"relationship": 5}') == 5
    assert parse_proposal("{" * 200_000 + " " + PROPOSAL)["mbti"] == "INTJ"
