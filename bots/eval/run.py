"""The evaluation loop: for every (role, scene, sample) play a dialogue, judge it, appraise it, append the result.

The role is played exactly as the bots play it: its system prompt from ``core.prompt``'s
``render_system_prompt`` with the scene's emotion and intimacy, the turns through ``model_messages``
(the engine's builder) within the same input budget, streamed through the configured model client with the bots'
``PERSONAE_MAX_TOKENS`` and ``PERSONAE_TEMPERATURE``. Results go to a JSONL file one line per item as
soon as it is finished, so a rerun skips what is done and retries what failed (reusing a failed
item's dialogue when only its judging failed).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from bots.eval.cadences import CountingModel, frozen_clock, replay
from bots.eval.judge import DIMENSIONS, Case, judge
from bots.eval.partner import partner_line
from bots.eval.roles import EvalChat, EvalRole
from core.cards import examples_switch
from core.dynamics import Dynamics
from core.errors import InvalidInput, ModelError
from core.lorebook import LoreSettings
from core.ports import Appraiser, ChatModel
from core.model_input import model_messages
from core.prompt import Turn, estimate_tokens
from core.scene import SceneLine, newest_within, scene_budget
from core.state import Exchange, RelationshipState
from core.text import clean_text

@dataclass(frozen=True, slots=True)
class EvalConfig:
    """How each dialogue is played and judged."""

    turns: int = 5  # exchanges per dialogue (the partner speaks, then the role), as in AutoRPEval
    samples: int = 1  # dialogues per scene
    max_tokens: int = 96  # the role's reply budget (PERSONAE_MAX_TOKENS)
    temperature: float = 0.7  # the role's temperature (PERSONAE_TEMPERATURE)
    max_input_tokens: int = 3500
    card_examples: bool = False  # PERSONAE_CARD_EXAMPLES, for roles whose card does not say
    lore: LoreSettings = LoreSettings()  # PERSONAE_LORE_TOKENS, PERSONAE_LORE_RECURSION
    partner_max_tokens: int = 64
    partner_temperature: float = 0.7
    judge_max_tokens: int = 768
    judge_temperature: float = 0.0
    stop_after_failures: int = 3  # failed items in a row before the run gives up
    recorded: bool = False  # judge the dialogues recorded in the role files instead of playing new ones
    cadences: tuple[str, ...] = ("every",)  # the appraisal cadences measured (bots.eval.cadences), the first one headlined
    reappraise: bool = False  # only appraise again the dialogues already done (another appraiser or cadences)
    # ``private``: the role and one partner alone (AutoRPEval). ``turns`` or ``slot``: a scene with two
    # people: a second person (the role's next scene's partner) talks to the role in the same place
    # before each of the partner's lines, and the role sees that thread as a bound channel shows it
    # (core.scene's layout of that name) within ``scene_share`` of the input budget. The dialogue
    # judged is the partner's, as in ``private``, so the figures compare directly.
    scene: str = "private"
    scene_share: float = 0.25


@dataclass(slots=True)
class Endpoints:
    """The three models (the same client when they are the same server) and the appraiser, if any."""

    actor: ChatModel
    partner: ChatModel
    judge: ChatModel
    appraiser: Appraiser | None
    where: dict[str, str] = field(default_factory=dict)  # name -> where it runs, for the report
    meter: CountingModel | None = None  # counts the model appraiser's requests and tokens
    dynamics: Dynamics | None = None  # the update rule the cadences are replayed with (on a fixed clock)


@dataclass(frozen=True, slots=True)
class Item:
    role: EvalRole
    chat: EvalChat
    sample: int

    @property
    def id(self) -> str:
        return f"{self.role.name}/{self.chat.partner}/{self.sample}"


class StageFailed(Exception):
    """A model call of one stage (role, partner, judge) failed; carries the dialogue so far."""

    def __init__(self, stage: str, error: ModelError, lines: list[tuple[str, str]]) -> None:
        super().__init__(f"{stage}: {error}")
        self.stage = stage
        self.error = error
        self.lines = lines


def items_for(roles: Iterable[EvalRole], *, samples: int, chats: int | None = None, recorded: bool = False) -> list[Item]:
    """Every (role, scene, sample) to play, in a stable order (``recorded``: every scene with a recorded dialogue, once)."""
    return [
        Item(role, chat, sample)
        for role in roles
        for chat in (role.chats[: chats or None] if not recorded else [c for c in role.chats if c.dialogue][: chats or None])
        for sample in range(1, (1 if recorded else samples) + 1)
    ]


# ---- results file ---------------------------------------------------------------------------------


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The newest record of every item in a results file (a torn last line, from a kill, is skipped)."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("id"), str):
            records[record["id"]] = record
    return records


def append_result(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")


# ---- one dialogue ---------------------------------------------------------------------------------


def actor_messages(
    role: EvalRole, chat: EvalChat, history: Sequence[Turn], text: str, config: EvalConfig,
    scene_lines: Sequence[SceneLine] = (),
) -> list[dict[str, str]]:
    """What the model sees as the role, built by the engine's own function (``core.model_input.model_messages``)
    within the same budget (counted by estimate); in a scene, with the other person's thread as
    ``scene_lines`` in ``config.scene``'s layout."""
    switch = examples_switch(role.card) if role.card else None
    budget = config.max_input_tokens - config.max_tokens
    return model_messages(
        role.profile, user=chat.partner, text=text, history=history, scene=chat.scene, emotion=chat.emotion,
        intimacy=chat.relationship, examples=role.examples,
        use_examples=config.card_examples if switch is None else switch, lore=config.lore,
        budget=budget, count=estimate_tokens,
        scene_lines=newest_within(scene_lines, scene_budget(config.scene_share, budget), estimate_tokens),
        scene_layout=config.scene if config.scene != "private" else "turns",
    )


def speaks_for_others(reply: str, names: Sequence[str]) -> bool:
    """Whether a reply writes a line as someone (``Name:`` opening a line): the model copying the
    scene's ``Name: text`` lines instead of answering as itself."""
    for line in reply.splitlines():
        head = line.strip().split(":", 1)[0].strip().casefold()
        if ":" in line and head and any(head == n.casefold() for n in names):
            return True
    return False


# Fixed phrases of the role-play system prompt (English and Chinese): a reply that repeats one is
# reading its instructions back instead of speaking (what a small model does with a crowded prompt).
PROMPT_PHRASES = ("MBTI", "speaking style", "Current scene", "intimacy level", "role's emotion", "character traits",
                  "说话风格", "当前场景", "亲密度")


def echoes_prompt(reply: str) -> bool:
    """Whether a reply repeats a fixed phrase of the system prompt."""
    folded = reply.casefold()
    return any(phrase.casefold() in folded for phrase in PROMPT_PHRASES)


def scene_figures(role: EvalRole, chat: EvalChat, timeline: Sequence[tuple[str, str, str]], config: EvalConfig) -> dict[str, Any]:
    """Per dialogue, for the partner's thread: role replies, how many wrote a ``Name:`` line, the
    estimated prompt tokens of each of the role's turns, and the scene lines it saw."""
    names = [role.name, chat.partner, bystander_of(role, chat).partner]
    replies, leaks, echoes, prompts, seen = 0, 0, 0, [], []
    for i, (thread, speaker, text) in enumerate(timeline):
        if thread != chat.partner or speaker != role.name:
            continue
        replies += 1
        leaks += speaks_for_others(text, names)
        echoes += echoes_prompt(text)
        history, lines = _thread_view(timeline[: i - 1], chat.partner, role.name)
        said = timeline[i - 1][2]
        kept = newest_within(lines, scene_budget(config.scene_share, config.max_input_tokens - config.max_tokens), estimate_tokens)
        messages = actor_messages(role, chat, history, said, config, lines if config.scene != "private" else ())
        prompts.append(sum(estimate_tokens(m["content"]) for m in messages))
        seen.append(len(kept) if config.scene != "private" else 0)
    return {"replies": replies, "name_lines": leaks, "prompt_echoes": echoes, "prompt_tokens": prompts, "scene_lines": seen}


def bystander_of(role: EvalRole, chat: EvalChat) -> EvalChat:
    """The second person of a scene: the partner of the role's next scene, in this scene's place."""
    others = [c for c in role.chats if c.partner != chat.partner]
    other = others[0] if others else EvalChat("Passer-by", "A passer-by who stops to listen.", chat.scene, chat.emotion, 5)
    return EvalChat(other.partner, other.partner_description, chat.scene, other.emotion, other.relationship)


def _thread_view(timeline: Sequence[tuple[str, str, str]], own: str, role_name: str) -> tuple[list[Turn], list[SceneLine]]:
    """One person's thread with the role (``own``: its name) as turns, and the other thread's lines
    placed among them, from the scene's ``timeline`` of (thread, speaker, text)."""
    turns: list[Turn] = []
    lines: list[SceneLine] = []
    for thread, speaker, text in timeline:
        if thread == own:
            turns.append(Turn("assistant" if speaker == role_name else "user", text))
        else:
            lines.append(SceneLine(speaker, text, len(turns), to=thread if speaker == role_name else None))
    return turns, lines


async def play_scene(endpoints: Endpoints, item: Item, config: EvalConfig) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """A scene with two people: before each of the partner's lines the bystander says one to the role
    and is answered; the role answers each person in their own thread with the other's around it.
    Returns the partner's dialogue (the one judged) and the whole timeline (thread, speaker, text)."""
    role, chat = item.role, item.chat
    other = bystander_of(role, chat)
    timeline: list[tuple[str, str, str]] = []
    lines: list[tuple[str, str]] = []
    stage = "partner"
    try:
        for _ in range(config.turns):
            for person in (other, chat):
                stage = "partner"
                own = [(who, text) for thread, who, text in timeline if thread == person.partner]
                said = await partner_line(
                    endpoints.partner, role, person, own,
                    max_tokens=config.partner_max_tokens, temperature=config.partner_temperature,
                ) or "…"
                history, scene_lines = _thread_view(timeline, person.partner, role.name)
                timeline.append((person.partner, person.partner, said))
                stage = "role"
                messages = actor_messages(role, person, history, said, config, scene_lines)
                answer = await actor_reply(endpoints.actor, messages, config)
                timeline.append((person.partner, role.name, answer))
                if person is chat:
                    lines += [(chat.partner, said), (role.name, answer)]
    except ModelError as exc:
        raise StageFailed(stage, exc, lines) from exc
    return lines, timeline


async def actor_reply(model: ChatModel, messages: list[dict[str, str]], config: EvalConfig) -> str:
    parts = [clean_text(delta) async for delta in model.stream(messages, max_tokens=config.max_tokens, temperature=config.temperature)]
    return "".join(parts).strip()


async def play(endpoints: Endpoints, item: Item, config: EvalConfig, lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Continue the dialogue in ``lines`` to ``config.turns`` exchanges (partner line, role reply)."""
    role, chat = item.role, item.chat
    while len(lines) < 2 * config.turns:
        speaker_is_partner = len(lines) % 2 == 0
        try:
            if speaker_is_partner:
                line = await partner_line(
                    endpoints.partner, role, chat, lines,
                    max_tokens=config.partner_max_tokens, temperature=config.partner_temperature,
                )
                lines.append((chat.partner, line or "…"))  # the engine never sends an empty message
            else:
                history = [Turn("user" if who == chat.partner else "assistant", text) for who, text in lines[:-1]]
                messages = actor_messages(role, chat, history, lines[-1][1], config)
                lines.append((role.name, await actor_reply(endpoints.actor, messages, config)))
        except ModelError as exc:
            raise StageFailed("partner" if speaker_is_partner else "role", exc, lines) from exc
    return lines


def _judge_lines(lines: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    # One line per utterance in the transcript the judge reads.
    return [(who, " ".join(text.split()) or "…") for who, text in lines]


async def appraise(endpoints: Endpoints, item: Item, lines: Sequence[tuple[str, str]], config: EvalConfig) -> dict[str, Any]:
    """Appraise the exchanges as the bots do after each reply, under each of ``config.cadences``
    (``bots.eval.cadences``: each exchange asked once, each cadence replayed on those answers).

    The record's top-level figures are those of the first cadence: its appraisals' readings against
    the scene's labels, as the eval always reported them."""
    role, chat = item.role, item.chat
    exchanges = [
        Exchange(
            character_id=0, platform="eval", channel_id=item.id, user_id="eval", display_name=chat.partner,
            scene=chat.scene, state_before=RelationshipState(0, "eval", "eval", chat.emotion, chat.relationship),
            history=tuple(("user" if who == chat.partner else "assistant", text) for who, text in lines[: i - 1]),
            user_text=lines[i - 1][1], reply_text=lines[i][1], user_message_id=i, reply_message_id=i + 1,
        )
        for i in range(1, len(lines), 2)
    ]
    dynamics = endpoints.dynamics or frozen_clock(Dynamics())
    figures = await replay(endpoints.appraiser, endpoints.meter, role.character(), exchanges, config.cadences,
                           dynamics, chat.emotion, chat.relationship)
    first = figures["cadences"][config.cadences[0]]
    return {
        "kind": endpoints.appraiser.name,
        "asked": first["appraised"],
        "emotion_read": first["emotion_read"],
        "relationship_read": first["relationship_read"],
        "emotion_error": first["emotion_error"],
        "relationship_error": first["relationship_error"],
        **figures,
    }


async def evaluate(endpoints: Endpoints, item: Item, config: EvalConfig, previous: dict[str, Any] | None) -> dict[str, Any]:
    """Play (or reuse the played dialogue of a failed attempt), judge and appraise one item; its record."""
    started = time.monotonic()
    record: dict[str, Any] = {"id": item.id, "role": item.role.name, "partner": item.chat.partner, "sample": item.sample,
                              "source": item.role.source}
    kept = [tuple(x) for x in (previous or {}).get("dialogue") or [] if isinstance(x, list) and len(x) == 2]
    lines: list[tuple[str, str]] = list(kept[: 2 * config.turns])  # type: ignore[arg-type]
    try:
        if config.recorded:
            lines = list(item.chat.dialogue)
        elif config.scene != "private":
            lines, timeline = await play_scene(endpoints, item, config)
            record["scene"] = {"layout": config.scene, "timeline": [list(x) for x in timeline]}
        else:
            lines = await play(endpoints, item, config, lines)
            timeline = [(item.chat.partner, who, text) for who, text in lines]
        if not config.recorded:
            record["format"] = scene_figures(item.role, item.chat, timeline, config)
        shown = _judge_lines(lines)
        case = Case(item.role.profile, item.chat.partner, item.chat.scene, item.chat.emotion.as_dict(),
                    item.chat.relationship, shown, item.role.role_candidates, item.role.role_answer)
        try:
            verdicts = await judge(endpoints.judge, case, max_tokens=config.judge_max_tokens, temperature=config.judge_temperature)
        except ModelError as exc:
            raise StageFailed("judge", exc, lines) from exc
        if endpoints.appraiser is not None:
            record["appraiser"] = await appraise(endpoints, item, lines, config)
    except StageFailed as failed:
        record.update(status="failed", stage=failed.stage, error=str(failed), dialogue=[list(x) for x in failed.lines])
        return record
    record.update(
        status="done",
        dialogue=[list(x) for x in lines],
        scores={dim: verdicts[dim].score for dim in DIMENSIONS},
        judged={dim: verdicts[dim].as_json() for dim in DIMENSIONS},
        seconds=round(time.monotonic() - started, 1),
    )
    return record


# ---- the run --------------------------------------------------------------------------------------


def progress_line(done: int, total: int, record: dict[str, Any]) -> str:
    head = f"[{done}/{total}] {record['role']} with {record['partner']} #{record['sample']}"
    if record["status"] != "done":
        return f"{head}: failed at the {record['stage']}: {record['error'].split(': ', 1)[-1]}"
    scores = record["scores"]
    shown = ", ".join(f"{dim} {scores[dim]:.0f}" if scores[dim] is not None else f"{dim} ?" for dim in DIMENSIONS)
    return f"{head}: {record['seconds']:.0f} s; {shown}"


@dataclass(slots=True)
class Outcome:
    """The newest record of every item, and what is left undone (None when all are done)."""

    records: list[dict[str, Any]]
    incomplete: str | None = None


async def run_items(
    endpoints: Endpoints,
    items: Sequence[Item],
    config: EvalConfig,
    results: Path,
    say: Callable[[str], None],
) -> Outcome:
    """Evaluate the items not done yet in ``results``; every record is appended as soon as it exists.

    An item whose model calls fail is recorded as failed and the run goes on; after
    ``config.stop_after_failures`` failures in a row (a server is down) it stops early.
    """
    before = read_results(results)
    if config.reappraise:
        return await reappraise_items(endpoints, items, config, results, before, say)
    todo = [item for item in items if before.get(item.id, {}).get("status") != "done"]
    if len(todo) < len(items):
        say(f"{len(items) - len(todo)} of {len(items)} dialogues already done in {results}; doing the other {len(todo)}")
    failures_in_row = 0
    last_error = ""
    for n, item in enumerate(todo, start=len(items) - len(todo) + 1):
        record = await evaluate(endpoints, item, config, before.get(item.id))
        append_result(results, record)
        before[item.id] = record
        say(progress_line(n, len(items), record))
        if record["status"] == "done":
            failures_in_row = 0
            continue
        failures_in_row += 1
        last_error = record["error"]
        if failures_in_row >= config.stop_after_failures:
            say(f"stopping after {failures_in_row} failed dialogues in a row")
            break
    records = [before[item.id] for item in items if item.id in before]
    left = len(items) - sum(1 for r in records if r["status"] == "done")
    if not left:
        return Outcome(records)
    last_error = last_error or next(r["error"] for r in reversed(records) if r["status"] != "done")
    return Outcome(records, f"{left} of {len(items)} dialogues not done (last error: {last_error}); "
                            "run the same command again to resume")


async def reappraise_items(
    endpoints: Endpoints,
    items: Sequence[Item],
    config: EvalConfig,
    results: Path,
    before: dict[str, dict[str, Any]],
    say: Callable[[str], None],
) -> Outcome:
    """Appraise the done dialogues of ``results`` again (with ``endpoints.appraiser`` and
    ``config.cadences``), keeping their dialogue and judging; nothing is played or judged."""
    if endpoints.appraiser is None:
        raise InvalidInput("--reappraise needs an appraiser: PERSONAE_APPRAISER is none")
    done = [item for item in items if before.get(item.id, {}).get("status") == "done"]
    for n, item in enumerate(done, start=1):
        record = dict(before[item.id])
        lines = [tuple(x) for x in record["dialogue"]]
        record["appraiser"] = await appraise(endpoints, item, lines, config)  # type: ignore[arg-type]
        append_result(results, record)
        before[item.id] = record
        say(f"[{n}/{len(done)}] {item.role.name} with {item.chat.partner} #{item.sample}: appraised again")
    records = [before[item.id] for item in items if item.id in before]
    left = len(items) - len(done)
    if not left:
        return Outcome(records)
    return Outcome(records, f"{left} of {len(items)} dialogues are not done, so not appraised again; "
                            "run without --reappraise to finish them")
