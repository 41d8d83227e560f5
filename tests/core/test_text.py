from __future__ import annotations

from core.text import split_message


def test_long_text_is_cut_at_sentence_ends_within_the_limit() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(400))
    pieces = split_message(text, 2000)
    assert all(len(p) <= 2000 for p in pieces)
    assert all(p.endswith(".") for p in pieces)
    assert " ".join(pieces) == text


def test_paragraphs_are_preferred_over_sentences() -> None:
    text = ("a. " * 300).strip() + "\n\n" + "b" * 100
    pieces = split_message(text, 1000)
    assert pieces[0] == ("a. " * 300).strip()


def test_text_without_boundaries_is_cut_hard() -> None:
    pieces = split_message("x" * 9000, 4096)
    assert [len(p) for p in pieces] == [4096, 4096, 808]
