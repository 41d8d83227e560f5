"""The edges of cutting a reply into messages, where the mutation run (docs/testing.md) found no test:
a text exactly at the limit, a boundary exactly at the limit, the first-third floor, the last boundary."""

from __future__ import annotations

from core.text import NAME_CHARS, one_line_name, split_message, split_point


def test_a_text_exactly_at_the_limit_is_not_cut() -> None:
    assert split_point("aaaa bbbb", 9) == 9
    assert split_message("aaaa bbbb", 9) == ["aaaa bbbb"]


def test_a_boundary_ending_exactly_at_the_limit_is_used() -> None:
    # The space before "cc" ends at 10: the head "aaaa bbbb" fits, so it is the cut (not the space at 5).
    assert split_point("aaaa bbbb cc", 10) == 10
    assert split_message("aaaa bbbb cc", 10) == ["aaaa bbbb", "cc"]


def test_the_last_boundary_in_the_window_is_the_cut() -> None:
    assert split_point("aaaa bb cc ddddd", 10) == 8


def test_a_boundary_in_the_first_third_is_ignored_and_one_at_the_third_is_used() -> None:
    # limit 10: the floor is 10 // 3 = 3, so a boundary ending at 3 counts and one ending at 2 does not.
    assert split_point("aa bbbbbbbbbbbb", 10) == 3
    assert split_point("a bbbbbbbbbbbbb", 10) == 10
    # limit 12: the floor is 4; a boundary ending at 3 is in the first third.
    assert split_point("aa bbbbbbbbbbbbbb", 12) == 12


def test_an_empty_reply_is_still_one_message() -> None:
    assert split_message("", 2000) == [""]


def test_a_name_of_exactly_the_limit_is_kept_whole() -> None:
    name = "n" * NAME_CHARS
    assert one_line_name(name) == name
    assert one_line_name(name + "n") == "n" * (NAME_CHARS - 1) + "…"
