"""Edges of the update rule the mutation run (docs/testing.md) found unchecked: the change text written
with each stored change, "same feelings" when only intimacy moved, and the settings' bounds."""

from __future__ import annotations

import datetime as dt

import pytest

from core.dynamics import Dynamics, describe_change, same_feelings
from core.emotions import EmotionState
from core.state import RelationshipState

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
BASELINE = EmotionState(happiness=1, sadness=8, disgust=5, fear=7, surprise=6, anger=4)


def state(**levels) -> RelationshipState:
    intimacy = levels.pop("intimacy", 7)
    return RelationshipState(1, "discord", "u", EmotionState(**{**BASELINE.as_dict(), **levels}), intimacy, 3, T0)


def test_the_change_text_names_each_move_with_its_sign() -> None:
    before = state(happiness=3, anger=4, intimacy=5)
    after = state(happiness=5, anger=3, intimacy=6)
    assert describe_change(before, after) == "happiness +2, anger -1, intimacy +1"
    assert describe_change(after, before) == "happiness -2, anger +1, intimacy -1"


def test_the_change_text_of_an_intimacy_move_alone_and_of_nothing() -> None:
    assert describe_change(state(intimacy=5), state(intimacy=4)) == "intimacy -1"
    assert describe_change(state(), state()) == "no change"


def test_a_move_of_intimacy_alone_is_a_change() -> None:
    assert same_feelings(state(), state())
    assert not same_feelings(state(intimacy=5), state(intimacy=6))
    assert not same_feelings(state(anger=1), state(anger=2))


def test_the_settings_bounds_are_inclusive_where_documented() -> None:
    Dynamics(weight=1.0)  # "at most 1"
    Dynamics(max_emotion_step=0, max_intimacy_step=0)  # a step of 0 freezes the feelings: allowed
    Dynamics(half_life_s=0.5)  # any positive half-life
    for bad in (dict(weight=0.0), dict(weight=1.01), dict(max_emotion_step=-1), dict(max_intimacy_step=-1), dict(half_life_s=0.0)):
        with pytest.raises(ValueError):
            Dynamics(**bad)
