"""The raw ``mistral`` layout (LLaMA-Factory's template as of August 2024), pinned byte for byte."""

from __future__ import annotations

import pytest

from bots.llm.client import render_mistral_raw

CONVERSATION = [
    {"role": "system", "content": "I want you to answer questions as if you are Hamlet."},
    {"role": "user", "content": "Who goes there?"},
    {"role": "assistant", "content": "(draws his sword) Nay, answer me."},
    {"role": "user", "content": "A friend {of yours}."},
]


def test_multi_turn_exact_string() -> None:
    assert render_mistral_raw(CONVERSATION) == (
        "<s>I want you to answer questions as if you are Hamlet."
        "[INST] Who goes there? [/INST]"
        "(draws his sword) Nay, answer me.</s>"
        "[INST] A friend {of yours}. [/INST]"
    )


def test_what_goes_on_the_wire_has_no_bos() -> None:
    # Servers add BOS themselves when they tokenize a raw prompt; a literal <s> would double it.
    assert render_mistral_raw(CONVERSATION[:2], bos="") == (
        "I want you to answer questions as if you are Hamlet.[INST] Who goes there? [/INST]"
    )


def test_without_system_message() -> None:
    assert render_mistral_raw([{"role": "user", "content": "Hi"}]) == "<s>[INST] Hi [/INST]"


def test_trailing_assistant_turn_is_left_open() -> None:
    messages = [*CONVERSATION[:2], {"role": "assistant", "content": "(bows)"}]
    assert render_mistral_raw(messages).endswith("[INST] Who goes there? [/INST](bows)")


def test_chinese_text_is_untouched() -> None:
    messages = [{"role": "system", "content": "我希望你像哈姆雷特一样回答问题。"}, {"role": "user", "content": "你是谁？"}]
    assert render_mistral_raw(messages) == "<s>我希望你像哈姆雷特一样回答问题。[INST] 你是谁？ [/INST]"


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "a"}, {"role": "system", "content": "late"}],
        [{"role": "tool", "content": "x"}],
    ],
)
def test_bad_roles_are_refused(messages: list[dict[str, str]]) -> None:
    with pytest.raises(ValueError):
        render_mistral_raw(messages)
