"""Answers to the BeyondDialogue alignment tasks in the shapes a real model gives them.

The TGI-protocol double answers appraisal requests with these (``TGIServer(alignment=True)``), and
``personae appraisal-check`` measures how many of them the model appraiser reads. Shapes, in turn:

- ``analysis``: a few sentences, then the JSON object (the trained shape);
- ``float``: the same with fractional scores (``"relationship": 7.5``), as in the alignment data;
- ``fence``: the object inside a ```json code fence after the analysis;
- ``bare``: the object alone;
- ``no_json``: analysis only, no object (unreadable);
- ``cut``: the object cut short by the token budget (unreadable).

Every answer is logged with its shape and the levels a correct reader finds in it (fractions
rounded half up, clamped to 0-10), so a check can compare what was read with what was said.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any, Mapping

from core.emotions import EMOTIONS, EMOTIONS_ZH

SHAPES = ("analysis", "float", "fence", "bare", "no_json", "cut")
READABLE = ("analysis", "float", "fence", "bare")
_EMOTION_MARKERS = ("happiness score", "快乐评分")
_RELATIONSHIP_MARKERS = ('"relationship": intimacy score', '"relationship": 亲密度评分')

_ANALYSIS_EN = (
    "{name} speaks with restraint, but the questions betray a mind that is troubled. The pauses and the"
    " sharp replies show sorrow held back and a flicker of anger at the situation, while there is little"
    " sign of joy. Fear surfaces when the future is mentioned."
)
_ANALYSIS_ZH = "{name}说话克制，但言语中透出内心的不安。停顿和尖锐的回答显示出压抑的悲伤与一丝愤怒，很少有喜悦的迹象。"


@dataclass(frozen=True, slots=True)
class Said:
    """One answer given: the task (``emotion`` or ``relationship``), its shape, and the levels in it (None: unreadable)."""

    task: str
    shape: str
    levels: dict[str, int] | None
    text: str


def half_up(value: float) -> int:
    """``value`` rounded half up and clamped to 0-10 (how the appraiser reads a fractional score)."""
    return max(0, min(10, math.floor(value + 0.5)))


def task_in_text(text: str) -> str | None:
    """``emotion`` or ``relationship`` when ``text`` (a prompt, in any layout) carries an alignment task, else None."""
    if any(m in text for m in _EMOTION_MARKERS):
        return "emotion"
    if any(m in text for m in _RELATIONSHIP_MARKERS):
        return "relationship"
    return None


def prompt_text(body: Mapping[str, Any]) -> str | None:
    """The text a request asks about: the last chat message, the ``/generate`` inputs or the completion prompt."""
    messages = body.get("messages")
    if isinstance(messages, list):
        content = messages[-1].get("content") if messages and isinstance(messages[-1], dict) else None
        return content if isinstance(content, str) else None
    for key in ("inputs", "prompt"):
        if isinstance(body.get(key), str):
            return body[key]
    return None


def task_of(body: Mapping[str, Any]) -> str | None:
    """``emotion`` or ``relationship`` when ``body`` carries an alignment task (a chat request, or a
    raw prompt in the training layout), else None."""
    content = prompt_text(body)
    return None if content is None else task_in_text(content)


class AlignmentAnswers:
    """Gives each alignment request the next shape in ``shapes`` (cycled) with seeded random scores."""

    def __init__(self, shapes: tuple[str, ...] = SHAPES, *, seed: int = 12, analysis: str | None = None) -> None:
        unknown = set(shapes) - set(SHAPES)
        if unknown or not shapes:
            raise ValueError(f"unknown answer shapes {sorted(unknown)}; use some of {', '.join(SHAPES)}")
        self.shapes = shapes
        self._random = random.Random(seed)
        self._turns = {"emotion": 0, "relationship": 0}
        self.said: list[Said] = []
        self.analysis_en = analysis or _ANALYSIS_EN  # the English analysis ("{name}": the role)

    def __call__(self, body: Mapping[str, Any]) -> str | None:
        """The answer to ``body``, or None when it is no alignment task."""
        task = task_of(body)
        if task is None:
            return None
        content = prompt_text(body) or ""
        zh = "快乐评分" in content or "亲密度评分" in content
        shape = self.shapes[self._turns[task] % len(self.shapes)]
        self._turns[task] += 1
        said = self._answer(task, shape, zh)
        self.said.append(said)
        return said.text

    def _scores(self, task: str, shape: str, zh: bool) -> tuple[dict[str, Any], dict[str, int]]:
        """The object's keys and values as written, and the levels a reader should find."""
        if task == "emotion":
            keys = [EMOTIONS_ZH[e] for e in EMOTIONS] if zh else list(EMOTIONS)
            names = list(EMOTIONS)
        else:
            keys = names = ["relationship"]
        written: dict[str, Any] = {}
        levels: dict[str, int] = {}
        for key, name in zip(keys, names):
            if shape == "float":
                value: float | int = self._random.randrange(0, 21) / 2  # 0, 0.5, ..., 10
            else:
                value = self._random.randrange(0, 11)
            written[key] = value
            levels[name] = half_up(value)
        return written, levels

    def _answer(self, task: str, shape: str, zh: bool) -> Said:
        written, levels = self._scores(task, shape, zh)
        analysis = (_ANALYSIS_ZH if zh else self.analysis_en).format(name="角色" if zh else "The role")
        obj = json.dumps(written, ensure_ascii=False)
        if shape in ("analysis", "float"):
            text = f"{analysis}\n{obj}"
        elif shape == "fence":
            text = f"{analysis}\n\n```json\n{obj}\n```"
        elif shape == "bare":
            text = obj
        elif shape == "no_json":
            text = analysis
        else:  # cut: the token budget ran out inside the object
            text = f"{analysis}\n{obj[: max(2, len(obj) // 2)]}"
        readable = shape in READABLE
        return Said(task, shape, levels if readable else None, text)
