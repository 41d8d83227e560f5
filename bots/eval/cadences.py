"""What each appraisal cadence (PERSONAE_APPRAISAL_CADENCE) costs in accuracy, measured on the same answers.

Every exchange of a dialogue is appraised at most once, and only if some cadence under test asks
for it; each cadence then replays the dialogue from the same start state, with the real cadence
object (``bots.compose.cadence_named``: ``core.cadence``'s ``EveryExchange``, ``EveryNth``,
``WhenMoved`` on the lexicon) deciding which exchanges it appraises, and the real update rule
(``core.dynamics.Dynamics.apply``, as ``core.feelings.Feelings`` applies it) moving the state by
those exchanges' appraisals only. So the cadences are compared on the very same model answers: the
differences are the cadence's, not the sampling's, and ``all`` costs no more model time than ``every``.

Per cadence and dialogue: how many exchanges it appraised and what that cost (model requests and
tokens, read from a ``CountingModel`` around the appraiser's client), the share of those appraisals
that gave an emotion and an intimacy reading, the error of those readings against the scene's
labels (what the eval always measured), and the error of the state the cadence reached after each
exchange (the feelings the next reply would be written with), from a neutral start.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Mapping, Sequence

from core.character import Character
from core.emotions import EMOTIONS, EmotionState
from core.errors import ModelError
from core.ports import Appraiser, ChatModel
from core.prompt import estimate_tokens
from core.state import Appraisal, Exchange, RelationshipState

ALL = ("every", "every:2", "every:3", "moved")
# The state every cadence starts from: no emotion shown yet, intimacy halfway (as `personae
# appraisal-check` starts). Starting at the labels would make appraising nothing score best.
START_EMOTION = EmotionState()
START_INTIMACY = 5
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # the replay's one instant: no drift between exchanges


def cadence_names(value: str) -> tuple[str, ...]:
    """``all`` -> every, every:2, every:3, moved; else a comma-separated list of cadences, each
    written as PERSONAE_APPRAISAL_CADENCE is (``every``, ``every:N``, ``moved``). ValueError otherwise."""
    from core.cadence import parse_cadence

    if value.strip().lower() == "all":
        return ALL
    names: list[str] = []
    for part in value.split(","):
        try:
            kind, n = parse_cadence(part)
        except ValueError:
            raise ValueError(f"{part.strip()!r}: name every, every:N (N 1 or more) or moved, "
                             "several with commas, or all") from None
        name = f"{kind}:{n}" if kind == "every" and n > 1 else kind
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("name at least one cadence")
    return tuple(names)


def frozen_clock(dynamics: Any) -> Any:
    """``dynamics`` (a ``core.dynamics.Dynamics``) on the replay's fixed clock: the dialogue is one
    sitting, so the emotions do not drift back toward the baseline between its exchanges."""
    return replace(dynamics, clock=lambda: EPOCH)


class CountingModel:
    """A ``ChatModel`` that counts the ``complete`` requests sent through it and their tokens (the
    server's count where it has a tokenize route, else the estimate ``core.prompt`` uses)."""

    def __init__(self, inner: ChatModel) -> None:
        self.inner = inner
        self.calls = 0
        self.prompt_tokens = 0
        self.answer_tokens = 0

    def snapshot(self) -> tuple[int, int, int]:
        return self.calls, self.prompt_tokens, self.answer_tokens

    def stream(self, messages: Sequence[Mapping[str, str]], **kw: Any) -> AsyncIterator[str]:
        return self.inner.stream(messages, **kw)

    async def complete(self, messages: Sequence[Mapping[str, str]], **kw: Any) -> str:
        self.calls += 1
        # Counted before adding: `x += await ...` reads x before the await and loses a concurrent request's count.
        prompt = await self._count("\n".join(m["content"] for m in messages))
        self.prompt_tokens += prompt
        answer = await self.inner.complete(messages, **kw)
        tokens = await self._count(answer)
        self.answer_tokens += tokens
        return answer

    async def count_tokens(self, text: str) -> int:
        return await self._count(text)

    async def _count(self, text: str) -> int:
        counter = getattr(self.inner, "count_tokens", None)
        if counter is None:
            return estimate_tokens(text)
        try:
            return await counter(text)
        except ModelError:
            return estimate_tokens(text)

    async def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            await close()


@dataclass(frozen=True, slots=True)
class Reading:
    """One exchange's appraisal, asked once, and what asking cost."""

    appraisal: Appraisal | None
    calls: int = 0
    prompt_tokens: int = 0
    answer_tokens: int = 0


def emotion_error(levels: Mapping[str, int], label: EmotionState) -> float | None:
    """Mean |level − label| over the emotions in ``levels``, in percent of the 0-10 scale."""
    wanted = label.as_dict()
    named = [e for e in EMOTIONS if e in levels]
    return 100.0 * sum(abs(levels[e] - wanted[e]) for e in named) / len(named) / 10 if named else None


def relationship_error(intimacy: int, label: int) -> float:
    return 100.0 * abs(intimacy - label) / 10


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


async def replay(
    appraiser: Appraiser,
    meter: CountingModel | None,
    character: Character,
    exchanges: Sequence[Exchange],
    cadences: Sequence[str],
    dynamics: Any,
    label_emotion: EmotionState,
    label_relationship: int,
) -> dict[str, Any]:
    """Replay ``exchanges`` (their ``state_before`` is replaced) under each of ``cadences``; the figures.

    ``dynamics`` should run on a fixed clock (``frozen_clock``); the start state is the neutral one.
    """
    from bots.compose import cadence_named

    readings: dict[int, Reading] = {}

    async def read(k: int, exchange: Exchange) -> Reading:
        if k not in readings:
            before = meter.snapshot() if meter is not None else (0, 0, 0)
            appraisal = await appraiser.appraise(exchange, character)
            after = meter.snapshot() if meter is not None else (0, 0, 0)
            readings[k] = Reading(appraisal, *(a - b for a, b in zip(after, before)))
        return readings[k]

    baseline = character.profile.emotion
    start = RelationshipState(0, "eval", "eval", START_EMOTION, START_INTIMACY, updated_at=EPOCH)
    figures: dict[str, Any] = {}
    number = 0  # the exchange's number in its dialogue (what stored messages give the bots)

    async def position(_exchange: Exchange) -> int:
        return number

    for name in cadences:
        cadence = cadence_named(name, dynamics, position)
        state = start
        appraised = calls = prompt_tokens = answer_tokens = 0
        read_emotion: list[float] = []
        read_relationship: list[float] = []
        state_emotion: list[float] = []
        state_relationship: list[float] = []
        for k, exchange in enumerate(exchanges):
            number = k + 1
            exchange = replace(exchange, state_before=state)
            if await cadence.due(exchange, character):
                reading = await read(k, exchange)
                appraised += 1
                calls += reading.calls
                prompt_tokens += reading.prompt_tokens
                answer_tokens += reading.answer_tokens
                appraisal = reading.appraisal
                if appraisal is not None and not appraisal.empty:
                    error = emotion_error(appraisal.emotion, label_emotion)
                    if error is not None:
                        read_emotion.append(error)
                    if appraisal.intimacy is not None:
                        read_relationship.append(relationship_error(appraisal.intimacy, label_relationship))
                    state = dynamics.apply(state, appraisal, baseline)  # as Feelings moves the stored state
            state_emotion.append(emotion_error(state.emotion.as_dict(), label_emotion) or 0.0)
            state_relationship.append(relationship_error(state.intimacy, label_relationship))
        figures[name] = {
            "appraised": appraised,
            "calls": calls,
            "prompt_tokens": prompt_tokens,
            "answer_tokens": answer_tokens,
            "emotion_read": len(read_emotion),
            "relationship_read": len(read_relationship),
            "emotion_error": _mean(read_emotion),
            "relationship_error": _mean(read_relationship),
            "state_emotion_error": _mean(state_emotion),
            "state_relationship_error": _mean(state_relationship),
            "final_emotion_error": state_emotion[-1] if state_emotion else None,
            "final_relationship_error": state_relationship[-1] if state_relationship else None,
            "final_state": {"emotion": state.emotion.as_dict(), "intimacy": state.intimacy},
        }
    return {
        "exchanges": len(exchanges),
        "start_emotion_error": emotion_error(START_EMOTION.as_dict(), label_emotion),
        "start_relationship_error": relationship_error(START_INTIMACY, label_relationship),
        "cadences": figures,
    }
