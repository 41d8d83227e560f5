"""Cutting long replies into platform-sized messages at natural boundaries."""

from __future__ import annotations

import re
import unicodedata

_BOUNDARIES = (
    re.compile(r"\n\s*\n"),  # paragraph
    re.compile(r"\n"),  # line
    re.compile(r"(?<=[.!?…。！？])[\"'”’)）]*\s*"),  # sentence
    re.compile(r"\s+"),  # word
)


def split_point(text: str, limit: int) -> int:
    """Where to cut ``text`` so the head fits in ``limit`` characters, preferring bigger boundaries.

    A boundary in the first third of the window is ignored (it would leave a tiny message).
    """
    if len(text) <= limit:
        return len(text)
    window = text[: limit + 1]
    floor = limit // 3
    for pattern in _BOUNDARIES:
        cuts = [m.end() for m in pattern.finditer(window) if floor <= m.end() <= limit]
        if cuts:
            return cuts[-1]
    return limit


def split_message(text: str, limit: int) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` characters, cut at paragraph, sentence or word ends."""
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = split_point(rest, limit)
        head = rest[:cut].rstrip()
        if head:
            pieces.append(head)
        rest = rest[cut:].lstrip()
    if rest.strip() or not pieces:
        pieces.append(rest)
    return pieces


# C0 controls other than tab and newline, DEL, and the C1 controls: never meaningful in chat text or a
# card, and PostgreSQL refuses NUL in text columns. A carriage return becomes a newline first.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CRLF = re.compile(r"\r\n?")


def clean_text(text: str) -> str:
    """``text`` as it may enter the engine, the database or the model.

    Control characters other than newline and tab are removed (a carriage return becomes a newline),
    lone surrogates become U+FFFD, and the result is in Unicode NFC.
    """
    text = _CRLF.sub("\n", text)
    text = _CONTROLS.sub("", text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Surrogates (a broken UTF-16 pair, a JSON escape, an undecodable CLI byte) cannot be stored or
        # sent: a pair split over two code points is joined, a lone one becomes U+FFFD.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return unicodedata.normalize("NFC", text)


def clean_value(value: object) -> object:
    """``value`` with every string in it (dict keys included, at any depth) passed through ``clean_text``."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k) if isinstance(k, str) else k: clean_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(clean_value(v) for v in value)
    return value


# Strings a model's tokenizer turns into control tokens when they appear in a prompt's text, one
# compiled pattern for every family:
# - Mistral's (Nemo's Tekken: <s>, </s>, <unk>, <pad>, [INST], [/INST], [SYSTEM_PROMPT], [TOOL_CALLS],
#   [PREFIX], [IMG], ..., <SPECIAL_n>, and the older [control_n]): any bracketed upper-case word is
#   treated as one, so a token a later tokenizer adds is covered too;
# - <|...|> and DeepSeek's fullwidth <｜...｜> (ChatML's <|im_start|>, Llama 3's <|start_header_id|>,
#   <|eot_id|>, <|begin▁of▁sentence|>, <｜User｜>, ...); Llama 2's <<SYS>>;
# - the bundled SmolLM2's StarCoder tokens (<filename>, <file_sep>, <repo_name>, <gh_stars>,
#   <issue_start>, <jupyter_code>, <empty_output>, <fim_prefix>, ...: its GGUF vocab's whole list);
# - Gemma's (<start_of_turn>, <end_of_turn>, <bos>, <eos>, <unusedN>, ...) and Qwen's added tags
#   (<tool_call>, <think>, ...).
_CONTROL = re.compile(
    r"</?s>|<unk>|<pad>|<SPECIAL_\d+>|<</?SYS>>|\[/?[A-Z][A-Z_]*\]|\[control_\d+\]"
    r"|<[|｜][^|｜<>\s]{1,64}[|｜]>"
    r"|</?(?:bos|eos|mask|start_of_turn|end_of_turn|start_of_image|end_of_image|unused\d+"
    r"|repo_?name|file_sep|filename|gh_stars|issue_(?:start|comment|closed)"
    r"|jupyter_(?:start|text|code|output|script)|empty_output|fim_(?:prefix|middle|suffix|pad)"
    r"|tool_call|tool_response|think)>"
)
# U+2060 WORD JOINER: invisible, kept by NFC and NFKC (fullwidth brackets would be folded back to
# ASCII by an NFKC normaliser), and it breaks the exact string a special token is matched on.
WORD_JOINER = "\u2060"
NAME_CHARS = 64


def neutralise_controls(text: str) -> str:
    """``text`` with every control-token string made plain text: a word joiner after its first character
    (``[INST]`` -> ``[\\u2060INST]``), which reads the same and tokenises as ordinary characters."""
    if "<" not in text and "[" not in text:
        return text
    return _CONTROL.sub(lambda m: m.group(0)[0] + WORD_JOINER + m.group(0)[1:], text)


# Every character a renderer or a model may read as the end of a line (str.splitlines' set), with the
# spaces around it: one space in its place keeps a field's text on its line.
_LINE_BREAK = re.compile(r"\s*[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]\s*")


def one_line(text: str) -> str:
    """``text`` on one line: each line break (``\\r``, ``\\v``, ``\\f``, U+0085, U+2028, U+2029 too), with the
    spaces around it, becomes one space. Text without a line break is returned as it is."""
    return _LINE_BREAK.sub(" ", text)


def message_text(text: str) -> str:
    """A person's message as the engine takes it in (and ``personae prompt`` shows it): clean, stripped."""
    return clean_text(text).strip()


def display_name(name: str) -> str:
    """A platform display name as the engine takes it in (and ``personae prompt`` uses it)."""
    return one_line_name(clean_text(name))


def one_line_name(name: str, limit: int = NAME_CHARS) -> str:
    """A display name as it may enter a prompt: one line (any run of spaces or line breaks is one
    space), at most ``limit`` characters, control-token strings neutralised."""
    flat = " ".join(name.split())
    if len(flat) > limit:
        flat = flat[: limit - 1].rstrip() + "…"
    return neutralise_controls(flat)
