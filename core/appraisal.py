"""The model appraiser: BD-RP's own alignment tasks rate the emotions a character shows and its
intimacy with the person, over the last few exchanges.

Mistral-Nemo-BD-RP was trained on these two tasks (system message "You are a helpful assistant.",
the appraisal template as the user message, an answer of a few sentences of analysis that ends in a
JSON object). The answer is read as BeyondDialogue reads it: the last ``{...}`` object (a ```json
code fence around it is fine), scores that are fractions rounded half up (``7.5`` -> 8), scores off
the scale clamped to 0-10. The tasks go in the same layout as the replies (``ChatModel.complete``):
for BD-RP, the raw ``You are a helpful assistant.[INST] {task} [/INST]`` it was trained on. On TGI a
regex grammar lets the analysis come first and only shapes the object at its end
(``analysis_first``); an answer with no object, or a score missing, changes nothing and is logged.
Which exchanges are appraised at all is the cadence's call (``core.cadence``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from typing import Any, Mapping, Sequence

from core import observe
from core.character import Character, CharacterProfile
from core.emotions import EMOTIONS, EMOTIONS_ZH, SCALE_MAX, SCALE_MIN
from core.errors import ModelError
from core.json_answer import last_json_object
from core.ports import ChatModel
from core.prompt import dialogue_lines, estimate_tokens, fill_placeholders, render_emotion_appraisal, render_relationship_appraisal
from core.state import Appraisal, Exchange
from core.text import one_line

log = logging.getLogger(__name__)

APPRAISAL_SYSTEM = "You are a helpful assistant."
RELATIONSHIP_KEY = "relationship"
# The answer budget: the trained answer is a short analysis and then the object. GPT-4o's analyses
# of the same tasks in AutoRPEval run about 300 Mistral tokens at the median, three in four over
# 256, so 256 cut most answers before their object; 768 leaves the long tail room (the answer stops
# at its own end, so the budget costs nothing when it is not used).
DEFAULT_MAX_TOKENS = 768


def emotion_keys(language: str) -> list[str]:
    """The answer's keys, in the template's order: English names, or the Chinese ones for zh."""
    return [EMOTIONS_ZH[e] for e in EMOTIONS] if language == "zh" else list(EMOTIONS)


def _level_schema() -> dict[str, Any]:
    return {"type": "integer", "minimum": SCALE_MIN, "maximum": SCALE_MAX}


def emotion_schema(language: str) -> dict[str, Any]:
    """The guided-JSON schema of the emotion answer (TGI wants ``properties`` at the top)."""
    keys = emotion_keys(language)
    return {"type": "object", "properties": {k: _level_schema() for k in keys}, "required": keys}


def relationship_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {RELATIONSHIP_KEY: _level_schema()}, "required": [RELATIONSHIP_KEY]}


class BadAnswer(ValueError):
    """A model answer that cannot be used; the message says why."""


# A quoted score as BeyondDialogue's data writes one: plain ASCII decimal ("7", "7.5", "-2"); not
# "7_5" (Python's float would read 75), "1e3", "0x10", "inf" or other scripts' digits.
_PLAIN_NUMBER = re.compile(r"[-+]?[0-9]+(?:\.[0-9]+)?")


def _level(name: str, value: object) -> int:
    """A score as a level 0-10: fractions rounded half up (the alignment data has ``7.5``), clamped to the scale.

    Anything else (a boolean, NaN, an exotic string) is a BadAnswer; so is nothing: a score of any
    size, even 400 digits, is clamped, never an overflow.
    """
    if isinstance(value, str):
        text = value.strip()
        if not _PLAIN_NUMBER.fullmatch(text):  # "7" or "7.5": a model that quotes its numbers still said them
            raise BadAnswer(f"{name} is {_clip(value, 40)!r}, not a number")
        value = float(text) if "." in text else int(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadAnswer(f"{name} is {_clip(repr(value), 40)}, not a number")
    if isinstance(value, int):  # exact: a huge int never goes through a float
        return max(SCALE_MIN, min(SCALE_MAX, value))
    if not math.isfinite(value):
        raise BadAnswer(f"{name} is {value!r}, not a number")
    # Half up, not Python's round() (banker's rounding would make 6.5 a 6 and 7.5 an 8).
    level = math.floor(value + 0.5)
    return max(SCALE_MIN, min(SCALE_MAX, level))


# What reading an answer may raise: BadAnswer, and (should a case slip past it) any other trouble a
# stranger's text can cause; each costs that one answer, logged in one line, never the other answer.
_UNUSABLE = (BadAnswer, ValueError, ArithmeticError, RecursionError, TypeError)


def read_emotions(answer: str, language: str) -> dict[str, int]:
    """The six levels from an emotion answer (keys in the character's language, or English)."""
    found = last_json_object(answer)
    if found is None:
        raise BadAnswer("has no usable JSON object at its end")
    levels: dict[str, int] = {}
    for name, key in zip(EMOTIONS, emotion_keys(language)):
        value = found.get(key, found.get(name))
        if value is None:
            raise BadAnswer(f"has no score for {key}")
        levels[name] = _level(key, value)
    return levels


def read_relationship(answer: str) -> int:
    found = last_json_object(answer)
    if found is None:
        raise BadAnswer("has no usable JSON object at its end")
    if RELATIONSHIP_KEY not in found:
        raise BadAnswer("has no relationship score")
    return _level(RELATIONSHIP_KEY, found[RELATIONSHIP_KEY])


def recent_turns(exchange: Exchange, profile: CharacterProfile, window: int) -> list[tuple[str, str]]:
    """The last ``window`` exchanges as (name, text): the person's display name, the character's name."""
    turns = [*exchange.history, ("user", exchange.user_text), ("assistant", exchange.reply_text)]
    names = {"user": exchange.display_name, "assistant": profile.name}
    return [(names[role], text) for role, text in turns[-2 * window :] if text]


def recent_dialogue(exchange: Exchange, profile: CharacterProfile, window: int) -> str:
    """The last ``window`` exchanges as ``Name: text`` lines."""
    return dialogue_lines(recent_turns(exchange, profile, window))


# Fitting the tasks to the server's input budget (PERSONAE_MAX_INPUT_TOKENS less the answer's
# PERSONAE_APPRAISAL_MAX_TOKENS): the oldest exchanges of the window go first, then over-long
# utterances are cut (an ellipsis marks the cut), never below this many characters each.
MIN_UTTERANCE_CHARS = 200
CUT_MARK = "…"
# The layout's own tokens around the task (``You are a helpful assistant.[INST] ... [/INST]``).
_LAYOUT_TOKENS = 8


def cut_turns(turns: Sequence[tuple[str, str]], limit: int) -> list[tuple[str, str]]:
    """``turns`` with every text longer than ``limit`` characters cut to ``limit``, the cut marked."""
    return [(name, text if len(text) <= limit else text[:limit].rstrip() + CUT_MARK) for name, text in turns]


def _clip(text: str, limit: int = 300) -> str:
    """A model answer about an exchange, for a log line (hidden unless PERSONAE_LOG_MESSAGE_TEXT)."""
    text = observe.quoted(" ".join(text.split()))
    return text if len(text) <= limit else text[:limit] + "…"


class ModelAppraiser:
    """``core.ports.Appraiser`` that asks the model the two BeyondDialogue alignment questions."""

    name = "model"

    def __init__(
        self,
        model: ChatModel,
        *,
        window: int = 3,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = 0.2,
        max_input_tokens: int | None = None,
    ) -> None:
        if window < 1:
            raise ValueError("the appraisal window must be at least one exchange")
        self.model = model
        self.window = window
        self.max_tokens = max_tokens
        self.temperature = temperature
        # What the prompt may take: the server's input budget less the answer's (None: not fitted).
        self.budget = None if max_input_tokens is None else max_input_tokens - max_tokens

    def prompts(
        self, exchange: Exchange, character: Character, turns: Sequence[tuple[str, str]] | None = None
    ) -> tuple[str, str]:
        """The emotion and relationship prompts for ``exchange``, exactly as the model was trained on them
        (``turns``: the dialogue's (name, text) utterances, by default the window's)."""
        profile = character.profile
        # One line: a scene (an admin's text) must not add a line such as ``[Dialogues]`` to the task.
        scene = one_line(fill_placeholders(exchange.scene, char=profile.name, user=exchange.display_name)).strip()
        dialogues = dialogue_lines(recent_turns(exchange, profile, self.window) if turns is None else turns)
        return (
            render_emotion_appraisal(profile, scene=scene, dialogues=dialogues),
            render_relationship_appraisal(profile, target_name=exchange.display_name, scene=scene, dialogues=dialogues),
        )

    async def fitted_prompts(self, exchange: Exchange, character: Character) -> tuple[str, str]:
        """``prompts`` within the budget: the oldest exchanges dropped first, then long utterances cut.

        As for the replies (``core.turn``), the estimate over-counts, so a prompt it fits costs no
        request; only one near the budget is counted by the model server, and a fit found on the
        estimate scaled to the server's count is checked by it once more.
        """
        turns = recent_turns(exchange, character.profile, self.window)
        pair = self.prompts(exchange, character, turns)
        budget = self.budget
        if budget is None or self._estimate(pair) <= budget:
            return pair
        exact = await self._count(pair)
        if exact <= budget:
            return pair
        scale = exact / max(1, self._estimate(pair))
        for factor in (scale * 1.05, 1.0):  # the server's ratio with a margin, then the plain (over-counting) estimate
            fitted = self._fit(exchange, character, turns, budget, factor)
            if factor == 1.0 or await self._count(fitted) <= budget:
                return fitted
        return fitted  # pragma: no cover - the loop always returns

    def _fit(
        self, exchange: Exchange, character: Character, turns: list[tuple[str, str]], budget: int, factor: float
    ) -> tuple[str, str]:
        size = lambda pair: self._estimate(pair) * factor  # noqa: E731
        # The oldest exchanges first (the newest exchange always stays; its user turn stays first).
        while len(turns) > 2 and size(self.prompts(exchange, character, turns)) > budget:
            turns = turns[2:] if len(turns) % 2 == 0 else turns[1:]
        pair = self.prompts(exchange, character, turns)
        if size(pair) <= budget:
            return pair
        # Then cut long utterances: the largest length per utterance that fits (binary search).
        low, high = MIN_UTTERANCE_CHARS, max((len(text) for _, text in turns), default=0)
        while low < high:
            mid = (low + high + 1) // 2
            if size(self.prompts(exchange, character, cut_turns(turns, mid))) <= budget:
                low = mid
            else:
                high = mid - 1
        fitted = self.prompts(exchange, character, cut_turns(turns, low))
        if size(fitted) > budget:
            log.warning("the appraisal prompt for reply %s is over the input budget even cut down (PERSONAE_MAX_INPUT_TOKENS)", exchange.reply_message_id)
        return fitted

    @staticmethod
    def _estimate(pair: tuple[str, str]) -> int:
        return max(estimate_tokens(APPRAISAL_SYSTEM + prompt) for prompt in pair) + _LAYOUT_TOKENS

    async def _count(self, pair: tuple[str, str]) -> int:
        counts = await asyncio.gather(*(self.model.count_tokens(APPRAISAL_SYSTEM + prompt) for prompt in pair))
        return max(counts) + _LAYOUT_TOKENS

    async def appraise(self, exchange: Exchange, character: Character) -> Appraisal | None:
        language = character.profile.language
        emotion_prompt, relationship_prompt = await self.fitted_prompts(exchange, character)
        emotion_answer, relationship_answer = await asyncio.gather(
            self._ask(emotion_prompt, emotion_schema(language)),
            self._ask(relationship_prompt, relationship_schema()),
        )
        where = f"reply {exchange.reply_message_id}"
        emotion: dict[str, int] = {}
        intimacy: int | None = None
        if emotion_answer is not None:
            try:
                emotion = read_emotions(emotion_answer, language)
            except _UNUSABLE as exc:
                log.warning("model appraisal of %s: the emotion answer %s; emotions unchanged: %r", where, exc, _clip(emotion_answer))
        if relationship_answer is not None:
            try:
                intimacy = read_relationship(relationship_answer)
            except _UNUSABLE as exc:
                log.warning("model appraisal of %s: the relationship answer %s; intimacy unchanged: %r", where, exc, _clip(relationship_answer))
        if not emotion and intimacy is None:
            return None
        read = [f"{k} {v}" for k, v in emotion.items()] + ([f"intimacy {intimacy}"] if intimacy is not None else [])
        return Appraisal(self.name, emotion, intimacy, "model read " + ", ".join(read))

    async def _ask(self, prompt: str, schema: Mapping[str, Any]) -> str | None:
        messages = [{"role": "system", "content": APPRAISAL_SYSTEM}, {"role": "user", "content": prompt}]
        observe.metrics.appraisal_tokens("prompt", sum(estimate_tokens(m["content"]) for m in messages))
        try:
            answer = await self.model.complete(
                messages, max_tokens=self.max_tokens, temperature=self.temperature, json_schema=schema, analysis_first=True
            )
        except ModelError as exc:
            observe.metrics.error("appraisal", exc)
            log.warning("model appraisal failed: %s; nothing changed", exc)
            return None
        observe.metrics.appraisal_tokens("answer", estimate_tokens(answer))
        return answer
