"""The in-process flood guards: a rate window over arrival times, one notice per flood, bounded waiting."""

from __future__ import annotations

from core.flood import ArrivalWindow, Verdict, WaitingTurns


def test_arrivals_past_the_limit_get_one_notice_then_silence() -> None:
    window = ArrivalWindow(limit=3, window_s=60)
    verdicts = [window.judge("p", 100.0 + i) for i in range(6)]
    assert verdicts == [Verdict.ADMIT] * 3 + [Verdict.NOTICE] + [Verdict.DROP] * 2


def test_the_window_is_per_person() -> None:
    window = ArrivalWindow(limit=1, window_s=60)
    assert window.judge("a", 1.0) is Verdict.ADMIT
    assert window.judge("b", 1.0) is Verdict.ADMIT
    assert window.judge("a", 2.0) is Verdict.NOTICE


def test_after_the_window_a_person_is_admitted_and_a_new_flood_is_told_again() -> None:
    window = ArrivalWindow(limit=2, window_s=10)
    assert [window.judge("p", t) for t in (0.0, 1.0, 2.0, 3.0)] == [
        Verdict.ADMIT, Verdict.ADMIT, Verdict.NOTICE, Verdict.DROP
    ]
    assert window.judge("p", 11.5) is Verdict.ADMIT  # the first arrival left the window
    assert window.judge("p", 12.0) is Verdict.ADMIT
    assert window.judge("p", 12.5) is Verdict.NOTICE


def test_a_message_sent_before_the_notice_does_not_reset_it() -> None:
    # A queue overflow told the person at t=5; messages that arrived earlier and are judged later
    # must not open the way to a second notice.
    window = ArrivalWindow(limit=2, window_s=60)
    assert window.tell("p", 5.0) is True
    assert window.judge("p", 1.0) is Verdict.ADMIT
    assert window.judge("p", 2.0) is Verdict.ADMIT
    assert window.judge("p", 3.0) is Verdict.DROP
    assert window.tell("p", 6.0) is False


def test_memory_is_bounded_by_sweeping_idle_people() -> None:
    window = ArrivalWindow(limit=5, window_s=10, max_people=100)
    for i in range(1000):
        window.judge(f"p{i}", float(i))
    assert len(window._times) <= 100 + 10


def test_waiting_turns_are_bounded_per_person_and_in_all() -> None:
    waiting = WaitingTurns(per_person=2, total=3)
    waiting.enter("a")
    assert not waiting.full("a")
    waiting.enter("a")
    assert waiting.full("a") and not waiting.full("b")
    waiting.enter("b")
    assert waiting.full("c"), "three in all"
    waiting.leave("a")
    assert not waiting.full("a") and not waiting.full("c")
    assert waiting.waiting("a") == (1, 2)
    waiting.leave("a")
    waiting.leave("b")
    assert waiting.waiting("a") == (0, 0)


def test_the_reply_budget_allows_max_tokens_deltas_and_no_more() -> None:
    from core.flood import ReplyBudget

    budget = ReplyBudget(4)
    taken = [budget.take(f" w{i}") for i in range(6)]
    assert taken == [" w0", " w1", " w2", " w3", "", ""]
    assert budget.spent


def test_the_reply_budget_cuts_a_fat_delta_at_a_word_end() -> None:
    from core.flood import ReplyBudget

    budget = ReplyBudget(4)  # (4 + 16) * 8 = 160 characters
    taken = budget.take("word " * 100)
    assert budget.spent and len(taken) <= 160
    assert taken.endswith("word") and not taken.endswith(" ")
    assert budget.take("more") == ""


def test_empty_deltas_do_not_count() -> None:
    from core.flood import ReplyBudget

    budget = ReplyBudget(1)
    assert budget.take("") == "" and not budget.spent
    assert budget.take("one") == "one" and not budget.spent
