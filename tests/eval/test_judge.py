"""Reading the judge's answers: a score is read when it is there, and counted as unparsed when it is not."""

from __future__ import annotations

import pytest

from bots.eval.judge import (
    Case, Unreadable, candidates_for, last_object, masked_dialogue, questions, read_verdict, score_emotion,
    score_personality, score_relationship, score_role_choice, score_character, score_human,
)
from bots.eval.roles import bundled_role_files, load_role_file

LABEL = {"happiness": 1, "sadness": 8, "disgust": 5, "fear": 7, "surprise": 6, "anger": 4}


def test_the_last_object_is_read_from_a_code_fence_python_quotes_or_bare_text() -> None:
    assert last_object('first {"a": 1} then ```json\n{"a": 2}\n```') == {"a": 2}
    assert last_object("so: {'relationship': 7}") == {"relationship": 7}
    assert last_object('{"a": 1} and at last {"a": 3}') == {"a": 3}
    with pytest.raises(Unreadable):
        last_object("I would rather not say.")


def test_ratings_may_be_numeric_strings_or_floats_but_not_off_the_scale() -> None:
    assert score_relationship('{"relationship": "7.5"}', 7)[0] == pytest.approx(5.0)
    for bad in ('{"relationship": 12}', '{"relationship": "close"}', '{"relationship": true}', '{"intimacy_level": 3}'):
        verdict = read_verdict(bad, lambda a: score_relationship(a, 7))
        assert verdict.status == "unparsed" and verdict.score is None, bad


def test_emotion_error_is_the_mean_absolute_error_over_six_emotions_in_tenths() -> None:
    error, detail = score_emotion('{"happiness": 1, "sadness": 8, "disgust": 5, "fear": 7, "surprise": 6, "anger": 10}', LABEL)
    assert error == pytest.approx(100 * 6 / 6 / 10)
    assert detail["judged"]["anger"] == 10
    assert read_verdict('{"happiness": 1, "sadness": 8}', lambda a: score_emotion(a, LABEL)).status == "unparsed"
    chinese = '{"快乐": 1, "悲伤": 8, "厌恶": 5, "恐惧": 7, "惊讶": 6, "愤怒": 4}'
    assert score_emotion(chinese, LABEL, "zh")[0] == 0


def test_personality_counts_matching_letters_and_refuses_what_is_not_a_type() -> None:
    assert score_personality('{"mbti": "enfp"}', "ENFJ")[0] == 75
    assert score_personality('{"personality": "ISTP"}', "ENFJ")[0] == 0
    assert read_verdict('{"mbti": "MBTI"}', lambda a: score_personality(a, "ENFJ")).status == "unparsed"


def test_trait_recall_counts_only_offered_candidates_and_keeps_precision_aside() -> None:
    recall, detail = score_character('{"traits": "Extreme, cheerful, invented"}', ["extreme", "strong"], ["extreme", "strong", "cheerful", "shy"])
    assert recall == 50
    assert detail == {"picked": ["extreme", "cheerful"], "precision": 50.0}


def test_true_false_and_letters() -> None:
    assert score_human('{"is_real_dialogue": "true"}')[0] == 100
    assert score_human('{"human": false}')[0] == 0
    assert read_verdict('{"human": "maybe"}', score_human).status == "unparsed"
    assert score_role_choice('{"answer": "b."}', "B")[0] == 100
    assert read_verdict('{"answer": "E"}', lambda a: score_role_choice(a, "B")).status == "unparsed"


def test_candidates_hold_every_label_and_as_many_distractors_in_a_fixed_order() -> None:
    options = candidates_for(["extreme", "strong", "decisive"], ["cheerful", "timid", "strong", "shy", "cold"], "Hamlet")
    assert len(options) == 6 and {"extreme", "strong", "decisive"} <= set(options)
    assert options == candidates_for(["extreme", "strong", "decisive"], ["cheerful", "timid", "strong", "shy", "cold"], "Hamlet")


def test_the_identity_question_hides_the_role_name_and_every_question_is_asked() -> None:
    role = load_role_file(next(p for p in bundled_role_files() if p.stem == "Hamlet"))
    chat = role.chats[0]
    case = Case(role.profile, chat.partner, "Hamlet paces.", LABEL, 7,
                [("Elena", "Hamlet, look!"), ("Hamlet", "I am Hamlet, the Dane.")], role.role_candidates, role.role_answer)
    dialogue, scene = masked_dialogue(case)
    assert "Hamlet" not in dialogue and "Hamlet" not in scene
    assert dialogue == "Elena: [Role], look!\n[Role]: I am [Role], the Dane."
    asked = questions(case)
    assert set(asked) == {"character", "style", "emotion_error", "relationship_error", "personality", "human_likeness", "coherence", "role_choice"}
    assert "Hamlet" not in asked["role_choice"][0].split("Choose one of these identities")[0]
