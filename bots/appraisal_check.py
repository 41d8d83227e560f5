"""``personae appraisal-check``: how many alignment-style answers the model appraiser reads.

It starts the TGI-protocol double with alignment answers (analysis then JSON, fractional scores,
code fences, bare objects, no JSON, JSON cut short), sends ``n`` varied exchanges (English and
Chinese characters, different people and lines) through the real ``ModelAppraiser`` and
``ModelClient``, built as the bots build them (same settings, layout and ``complete`` path), and compares what was read with what was said. The parse rate is taken over the
shapes a reader can read; the unreadable shapes must change nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bots.llm.alignment_answers import READABLE, SHAPES, AlignmentAnswers, Said
from bots.llm.tgi_double import TGIServer
from bots.settings import Settings
from core.cards import new_card, profile_from_card
from core.character import Character
from core.emotions import EmotionState
from core.state import Appraisal, Exchange, RelationshipState

REQUIRED_RATE = 0.95
ROUTES = ("/generate", "/v1/chat/completions", "/v1/completions")

_PEOPLE = ("Elena", "Bob", "小明", "Ada Lovelace", "kai_77")
_LINES = (
    ("Dost thou see the paths unseen?", "(sighs) I see only the night, and what it hides."),
    ("I brought you tea.", "(smiles faintly) You are kinder than this court deserves."),
    ("Why are you so angry with me?", "Angry? (turns away) I am tired, not angry."),
    ("你今天还好吗？", "（轻叹）还好，只是心里有些乱。"),
    ("Tell me a secret.", "(leans closer) The king is not who he seems."),
)


@dataclass
class CheckResult:
    """What was said and what was read, per shape."""

    answers: Counter[str] = field(default_factory=Counter)  # shape -> answers given
    read_right: Counter[str] = field(default_factory=Counter)  # shape -> answers read with the levels said
    changed_unreadable: int = 0  # unreadable answers that nevertheless moved something
    layout: str = ""  # the prompt layout the appraisals went in, and why
    routes: Counter[str] = field(default_factory=Counter)  # the double's generation routes -> requests they got

    @property
    def readable(self) -> int:
        return sum(self.answers[s] for s in READABLE)

    @property
    def parse_rate(self) -> float:
        return sum(self.read_right[s] for s in READABLE) / self.readable if self.readable else 0.0

    @property
    def ok(self) -> bool:
        return self.parse_rate >= REQUIRED_RATE and self.changed_unreadable == 0

    def table(self) -> str:
        lines = [f"layout: {self.layout}"] if self.layout else []
        lines.append(f"{'shape':<10} {'answers':>8} {'read':>6}")
        for shape in SHAPES:
            if self.answers[shape]:
                lines.append(f"{shape:<10} {self.answers[shape]:>8} {self.read_right[shape]:>6}")
        lines.append(
            f"parse rate over readable shapes: {self.parse_rate:.1%} of {self.readable} "
            f"(needed: {REQUIRED_RATE:.0%}); unreadable answers that changed something: {self.changed_unreadable}"
        )
        return "\n".join(lines)


def _characters() -> list[Character]:
    emotion = {"happiness": 1, "sadness": 8, "disgust": 5, "fear": 7, "surprise": 6, "anger": 4}
    en = new_card(name="Hamlet", world="Denmark", traits=["brooding", "witty"], mbti="INFP", style=["poetic"],
                  scene="Elsinore at night.", emotion=emotion, relationship=5)
    zh = new_card(name="林黛玉", world="红楼梦", traits=["敏感", "聪慧"], mbti="INFJ", style=["含蓄"], language="zh",
                  scene="大观园的黄昏。", emotion=emotion, relationship=5)
    return [Character(i + 1, profile_from_card(card), card) for i, card in enumerate((en, zh))]


def _exchange(index: int, character: Character) -> Exchange:
    person = _PEOPLE[index % len(_PEOPLE)]
    user_text, reply = _LINES[index % len(_LINES)]
    history = tuple((role, text) for pair in _LINES[: index % 3] for role, text in zip(("user", "assistant"), pair))
    state = RelationshipState(character.id, "console", f"u{index}", EmotionState(), 5)
    return Exchange(character.id, "console", "check", f"u{index}", person, character.profile.scene, state,
                    history, user_text, reply, 2 * index + 1, 2 * index + 2)


def _compare(result: CheckResult, said: Said, read: dict[str, int] | None) -> None:
    result.answers[said.shape] += 1
    if said.levels is None:
        result.changed_unreadable += bool(read)
    elif read == said.levels:
        result.read_right[said.shape] += 1


async def run_check(n: int = 120, *, max_tokens: int | None = None, settings: Settings | None = None) -> CheckResult:
    """Appraise ``n`` exchanges against the double; exchanges run one after another so answers pair up.

    The appraiser and its client are built as the bots build them (``bots.compose.model_client`` and
    ``model_appraiser`` with ``settings``: the layout PERSONAE_PROMPT_LAYOUT picks, the answer budget,
    window and temperature), pointed at the double, so the requests take the real ``complete`` path:
    with ``auto`` the double's BD-RP model id picks the training layout (TGI ``/generate``, the raw
    string and the grammar that lets the analysis come first). ``max_tokens`` overrides the budget."""
    from bots.compose import model_appraiser, model_client

    settings = settings or Settings(_env_file=None)
    update: dict[str, object] = {"llm_retries": 0, "llm_timeout_s": 10.0}
    if max_tokens is not None:
        update["appraisal_max_tokens"] = max_tokens
    settings = settings.model_copy(update=update)
    answers = AlignmentAnswers()
    result = CheckResult()
    characters = _characters()
    async with TGIServer(alignment=answers) as server:
        client = model_client(settings, server.base_url, url_setting="PERSONAE_LLM_URL",
                              concurrency=settings.appraiser_concurrency)
        appraiser = model_appraiser(settings, client)
        try:
            for index in range(n):
                character = characters[index % len(characters)]
                start = len(answers.said)
                appraisal: Appraisal | None = await appraiser.appraise(_exchange(index, character), character)
                given = {s.task: s for s in answers.said[start:]}
                emotion = dict(appraisal.emotion) if appraisal and appraisal.emotion else None
                intimacy = appraisal.intimacy if appraisal else None
                _compare(result, given["emotion"], emotion)
                _compare(result, given["relationship"], None if intimacy is None else {"relationship": intimacy})
            result.layout = f"{getattr(client, 'layout', '?')} ({getattr(client, 'layout_reason', '')})"
            result.routes = Counter({path: server.count(path) for path in ROUTES if server.count(path)})
        finally:
            await client.close()
    return result
