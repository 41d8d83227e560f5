"""Edges of the flood guards the mutation run (docs/testing.md) found unchecked: the reply budget's
character allowance (eight a token, over the whole reply) and which people a sweep forgets."""

from __future__ import annotations

from core.flood import ArrivalWindow, ReplyBudget, Verdict, WaitingTurns


def test_the_character_allowance_is_eight_a_token_plus_sixteen_tokens() -> None:
    budget = ReplyBudget(4)  # (4 + 16) * 8 = 160 characters
    assert budget.take("x" * 200) == "x" * 160
    assert budget.spent


def test_the_character_allowance_counts_the_whole_reply_not_each_delta() -> None:
    budget = ReplyBudget(4)
    assert budget.take("x" * 100) == "x" * 100
    assert budget.take("y" * 100) == "y" * 60
    assert budget.spent and budget.chars == 160


def test_a_cut_at_a_word_end_keeps_the_words_before_it() -> None:
    budget = ReplyBudget(4)
    taken = budget.take("word " * 100)
    assert taken == " ".join(["word"] * 31)  # the 160 characters up to the last whole word


def test_a_sweep_forgets_people_idle_for_a_whole_window_and_keeps_the_others() -> None:
    window = ArrivalWindow(limit=5, window_s=10, max_people=2)
    window.judge("idle", 0.0)
    window.judge("recent", 0.0)
    window.judge("recent", 5.0)  # idle for 5 s only, counted from its last message, not its first
    window.judge("new", 10.0)  # a third person: the sweep runs at 10, when "idle" has been idle exactly 10 s
    assert set(window._times) == {"recent", "new"}


def test_the_window_is_half_open_a_message_exactly_one_window_later_is_admitted() -> None:
    window = ArrivalWindow(limit=1, window_s=10)
    assert window.judge("p", 0.0) is Verdict.ADMIT
    assert window.judge("p", 10.0) is Verdict.ADMIT


def test_only_the_arrivals_older_than_the_window_leave_it() -> None:
    window = ArrivalWindow(limit=2, window_s=10)
    assert window.judge("p", 0.0) is Verdict.ADMIT
    assert window.judge("p", 5.0) is Verdict.ADMIT
    assert window.judge("p", 12.0) is Verdict.ADMIT  # the one at 0 has left; the one at 5 has not
    assert window.judge("p", 13.0) is Verdict.NOTICE


def test_a_person_whose_turns_all_left_is_forgotten() -> None:
    waiting = WaitingTurns(per_person=2, total=3)
    waiting.enter("a")
    waiting.leave("a")
    assert not waiting._by_person, "every person ever seen would stay in memory"
