"""The update rule on its own: blend, cap, clamp, drift; and the parts of the appraisers that are pure."""

from __future__ import annotations

import datetime as dt

import pytest

from bots.lexicon import LexiconAppraiser
from core.appraisal import BadAnswer, last_json_object, read_emotions, read_relationship
from core.dynamics import Dynamics, blend, drift, round_half_away, step_toward
from core.emotions import EmotionState
from core.state import Appraisal, RelationshipState

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
BASELINE = EmotionState(happiness=1, sadness=8, disgust=5, fear=7, surprise=6, anger=4)


def state(**levels) -> RelationshipState:
    intimacy = levels.pop("intimacy", 7)
    return RelationshipState(1, "discord", "u", EmotionState(**{**BASELINE.as_dict(), **levels}), intimacy, 3, T0)


@pytest.mark.parametrize(
    "current, appraised, weight, cap, expected",
    [
        (1, 10, 0.5, 2, 3),  # a big pull is capped
        (9, 0, 0.5, 2, 7),
        (5, 6, 0.5, 2, 6),  # half a level still moves one (halves round away from zero)
        (5, 4, 0.5, 2, 4),
        (5, 5, 0.5, 2, 5),
        (2, 10, 1.0, 10, 10),
        (3, 9, 0.25, 2, 5),  # 1.5 rounds to 2
        (10, 10, 1.0, 2, 10),
    ],
)
def test_step_toward(current, appraised, weight, cap, expected) -> None:
    assert step_toward(current, appraised, weight, cap) == expected


def test_round_half_away_from_zero() -> None:
    assert [round_half_away(x) for x in (0.5, 1.5, 2.5, -0.5, -1.5, 0.49, -0.49)] == [1, 2, 3, -1, -2, 0, 0]


def test_blend_moves_only_what_the_appraisal_read_within_the_caps() -> None:
    moved = blend(state(), Appraisal("t", {"happiness": 10, "anger": 0}, 0), weight=0.5, max_emotion_step=2, max_intimacy_step=1)
    assert moved.emotion == EmotionState(happiness=3, sadness=8, disgust=5, fear=7, surprise=6, anger=2)
    assert moved.intimacy == 6 and moved.version == 3


def test_drift_halves_the_distance_to_the_baseline_per_half_life_and_leaves_intimacy() -> None:
    start = state(happiness=9, sadness=0, anger=10, intimacy=10)
    one = drift(start, BASELINE, T0 + dt.timedelta(hours=6), 6 * 3600)
    assert one.emotion == EmotionState(happiness=5, sadness=4, disgust=5, fear=7, surprise=6, anger=7)
    assert one.intimacy == 10 and one.updated_at == T0 + dt.timedelta(hours=6)
    far = drift(start, BASELINE, T0 + dt.timedelta(days=30), 6 * 3600)
    assert far.emotion == BASELINE
    assert drift(start, BASELINE, T0 - dt.timedelta(hours=1), 6 * 3600) == start  # a clock that went back


def test_apply_drifts_first_then_blends_and_dates_the_state_now() -> None:
    now = T0 + dt.timedelta(hours=6)
    moved = Dynamics(clock=lambda: now).apply(state(happiness=9), Appraisal("t", {"happiness": 10}), BASELINE)
    assert moved.emotion.happiness == 7 and moved.updated_at == now  # 9 drifts to 5, then +2


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(weight=0), "weight"),
        (dict(weight=1.5), "weight"),
        (dict(max_emotion_step=-1), "step"),
        (dict(half_life_s=0), "half-life"),
    ],
)
def test_bad_dynamics_settings_are_refused(settings, message) -> None:
    with pytest.raises(ValueError, match=message):
        Dynamics(**settings)


def test_the_last_json_object_of_an_answer_is_read() -> None:
    assert last_json_object('first {"a": 1} then {"b": 2} done') == {"b": 2}
    assert last_json_object('broken {"b": 2') is None
    assert last_json_object("no json") is None
    assert read_relationship('Close friends. {"relationship": 8}') == 8
    assert read_emotions('{"快乐": 1, "悲伤": 2, "厌恶": 3, "恐惧": 4, "惊讶": 5, "愤怒": 6}', "zh") == {
        "happiness": 1, "sadness": 2, "disgust": 3, "fear": 4, "surprise": 5, "anger": 6,
    }
    with pytest.raises(BadAnswer, match="no score for 愤怒"):
        read_emotions('{"快乐": 1, "悲伤": 2, "厌恶": 3, "恐惧": 4, "惊讶": 5}', "zh")
    # As BeyondDialogue reads them: off-scale scores clamped, fractions rounded half up.
    assert read_relationship('{"relationship": 11}') == 10
    assert read_relationship('{"relationship": 7.5}') == 8
    with pytest.raises(BadAnswer, match="not a number"):
        read_relationship('{"relationship": true}')


@pytest.mark.parametrize(
    "language, kind, insult",
    [
        ("en", "Thank you, you are a wonderful and kind friend.", "You are a disgusting, hateful idiot."),
        ("zh", "谢谢你，你是我最好的朋友。", "你这个混蛋，我讨厌你！"),
    ],
)
def test_the_lexicon_reads_kindness_and_insults(language, kind, insult) -> None:
    appraiser = LexiconAppraiser()
    warm = appraiser.appraise_texts(kind, "", language)
    cold = appraiser.appraise_texts(insult, "", language)
    assert warm.emotion["happiness"] >= 8 and warm.intimacy >= 8 and warm.emotion["anger"] <= 1
    assert cold.emotion["happiness"] <= 2 and cold.intimacy <= 3
    assert cold.emotion["anger"] >= 5 and cold.emotion["disgust"] >= 6
    assert appraiser.appraise_texts(kind, "", language) == warm  # deterministic


def test_the_lexicon_does_not_count_negated_emotion_words() -> None:
    appraiser = LexiconAppraiser()
    negated = appraiser.appraise_texts("I do not hate you.", "")
    assert negated.emotion.get("anger", 0) <= 2 and negated.intimacy >= 5
    negated = appraiser.appraise_texts("我不喜欢你", "", "zh")
    assert negated.intimacy is not None and negated.intimacy < 5
