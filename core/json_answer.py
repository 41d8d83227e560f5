"""Reading the JSON object a model's answer ends with (the appraisals and ``derive`` share it).

BeyondDialogue's answers are a short analysis that ends in one JSON object, and BD parses the last
``{...}`` of the answer. Here that is the answer's last *top-level* object: an object nested in it
(``{"relationship": 4, "why": {"x": 1}}``) does not stand for it. When the answer's final ``{...}``
is broken (``{"relationship": 9,}``), an earlier object of the analysis is not taken in its place:
the answer has no usable object (the final one is what the model answered; an object quoted in its
reasoning is not).

The search is bounded, since an answer is a stranger's text as far as cost goes: only the last
``TAIL_CHARS`` characters are read, and at most ``MAX_ATTEMPTS`` ``{`` positions are tried, from the
end backwards (each try costs at most the tail's length), so a megabyte of ``{`` costs milliseconds.
Nesting too deep to decode counts as broken.
"""

from __future__ import annotations

import json
from typing import Any

TAIL_CHARS = 16_384
MAX_ATTEMPTS = 64

_DECODER = json.JSONDecoder()


def last_json_object(text: str, *, tail: int = TAIL_CHARS, attempts: int = MAX_ATTEMPTS) -> dict[str, Any] | None:
    """The last top-level JSON object of ``text`` (within its last ``tail`` characters), or None.

    None too when the final ``{`` of the answer starts no object and lies after the last object found.
    """
    if len(text) > tail:
        text = text[-tail:]
    found: dict[str, Any] | None = None
    found_end = -1
    broken_at = -1  # the last ``{`` that started no object
    at = len(text)
    for _ in range(attempts):
        at = text.rfind("{", 0, at)
        if at == -1:
            break
        try:
            value, end = _DECODER.raw_decode(text, at)
        except (ValueError, RecursionError):
            broken_at = max(broken_at, at)
            continue
        if not isinstance(value, dict):
            continue
        if found is None or end >= found_end:
            found, found_end = value, end  # the last object, or an object around it
        # else an earlier object beside it (at the top level or in a parent still to come): not it
    if found is not None and broken_at >= found_end:
        return None  # the answer's final object is broken
    return found
