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


# ---- clean_text: what may enter the engine, the database and the model -----------------------------


def test_nul_and_other_controls_are_removed_but_newline_and_tab_kept() -> None:
    from core.text import clean_text

    assert clean_text("a\x00b\x01c\x1b[0m\x7fd\x85e\x9f\tf\ng") == "abc[0mde\tf\ng"


def test_carriage_returns_become_newlines() -> None:
    from core.text import clean_text

    assert clean_text("one\r\ntwo\rthree") == "one\ntwo\nthree"


def test_lone_surrogates_are_replaced_and_split_pairs_joined() -> None:
    from core.text import clean_text

    assert clean_text("x\ud800y\udfffz") == "x\ufffdy\ufffdz"
    assert clean_text("\ud83d\ude00") == "\U0001f600"  # a pair as two code points is one emoji
    clean_text("\udcff" * 3).encode("utf-8")


def test_text_comes_out_in_nfc() -> None:
    from core.text import clean_text

    assert clean_text("cafe\u0301") == "caf\u00e9"
    assert clean_text("林黛玉 🙂 ok") == "林黛玉 🙂 ok"


def test_clean_value_reaches_keys_lists_and_nested_objects() -> None:
    from core.text import clean_value

    assert clean_value({"k\x00": ["a\x00", {"b\ud800": ("c\x01", 3, None, True)}]}) == {
        "k": ["a", {"b\ufffd": ("c", 3, None, True)}]
    }
