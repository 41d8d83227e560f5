"""What ``personae eval`` does: gather the roles, open the three models and the appraiser, run, report."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable, Sequence

from bots.compose import appraiser_kind, dynamics, model_appraiser, model_client, open_appraiser, open_model
from bots.eval import report
from bots.eval.cadences import CountingModel, frozen_clock
from bots.eval.roles import EvalRole, bundled_role_files, load_role_file, role_from_character
from bots.eval.run import EvalConfig, Endpoints, items_for, run_items
from bots.settings import Settings
from core.appraisal import ModelAppraiser
from core.errors import InvalidInput, PersonaeError
from core.ports import ChatModel

RESULTS = "results.jsonl"
SUMMARY = "summary.json"
CHART = "chart.png"


class EvalIncomplete(PersonaeError):
    """Some dialogues failed; the results file says why, and the same command resumes them."""


@dataclass(frozen=True, slots=True)
class EvalRequest:
    """What to evaluate and where to write it (the command line's options)."""

    role_files: Sequence[Path] = ()
    characters: Sequence[str] = ()
    out: Path = Path("eval-results")
    chats: int | None = None  # scenes per role (None: all)
    fresh: bool = False  # forget earlier results in ``out``
    config: EvalConfig = EvalConfig()


async def gather_roles(settings: Settings, request: EvalRequest, say: Callable[[str], None] = lambda _: None) -> list[EvalRole]:
    """The role files, the named characters (from the database), or the bundled role set.

    A named character whose profile cannot be measured is skipped with one line from ``say``; when
    no role is left the first such reason is the error."""
    skipped: list[InvalidInput] = []
    roles = [load_role_file(path) for path in request.role_files]
    if request.characters:
        from bots.compose import open_store
        from bots.samples import ensure_samples

        store = await open_store(settings)
        try:
            await ensure_samples(store)
            everyone = await store.characters.list()
            for name in request.characters:
                found = await store.characters.get_by_name(name)
                if found is None:
                    raise InvalidInput(f"there is no character called {name!r} (see `personae characters list`)")
                others = [c.profile for c in everyone if c.id != found.id and c.profile.mbti and not c.profile.missing
                          and c.profile.language == found.profile.language]
                try:
                    roles.append(role_from_character(found, others))
                except InvalidInput as exc:
                    skipped.append(exc)
                    say(f"skipping {found.profile.name}: {exc}")
        finally:
            await store.close()
        if skipped and not roles:
            raise skipped[0]
    if not roles:
        roles = [load_role_file(path) for path in bundled_role_files()]
    return roles


@contextlib.asynccontextmanager
async def _client(settings: Settings, url: str | None, model: str | None, setting: str, actor: ChatModel) -> AsyncIterator[ChatModel]:
    if url is None:
        yield actor
        return
    client = model_client(settings, url, url_setting=setting, model=model)
    try:
        yield client
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def open_endpoints(settings: Settings) -> AsyncIterator[Endpoints]:
    """The model under test (as the bots open it), the partner and the judge (the same one unless
    PERSONAE_EVAL_PARTNER_URL / PERSONAE_EVAL_JUDGE_URL say otherwise), and the configured appraiser."""
    async with contextlib.AsyncExitStack() as stack:
        about: list[str] = []
        actor = await stack.enter_async_context(open_model(settings, about=about))
        partner = await stack.enter_async_context(
            _client(settings, settings.eval_partner_url, settings.eval_partner_model, "PERSONAE_EVAL_PARTNER_URL", actor))
        judge = await stack.enter_async_context(
            _client(settings, settings.eval_judge_url, settings.eval_judge_model, "PERSONAE_EVAL_JUDGE_URL", actor))
        if appraiser_kind(settings) == "model" and not (settings.appraiser_url or settings.llm_url):
            appraiser = model_appraiser(settings, actor)  # the bundled model appraises itself
        else:
            appraiser = await stack.enter_async_context(open_appraiser(settings, None))
        meter = None
        if isinstance(appraiser, ModelAppraiser):  # count its requests and tokens, per cadence
            meter = appraiser.model = CountingModel(appraiser.model)
        where = {
            "model": "; ".join(a.removeprefix("model: ").removeprefix("model server: ") for a in about),
            "layout": settings.prompt_layout,
            "partner": settings.eval_partner_url or "the model under test",
            "judge": settings.eval_judge_url or "the model under test",
            "appraiser": appraiser_kind(settings),
        }
        yield Endpoints(actor, partner, judge, appraiser, where, meter=meter, dynamics=frozen_clock(dynamics(settings)))


def scene_line(records: Sequence[dict], scene: str) -> str:
    """One line on the partner's thread, for comparing a scene's layouts with a private thread: the
    share of role replies that wrote a ``Name:`` line (speaking for others), the mean estimated
    prompt tokens of a role turn, and the mean scene lines it saw."""
    figures = [r["format"] for r in records if r.get("status") == "done" and r.get("format")]
    replies = sum(f["replies"] for f in figures)
    if not replies:
        return ""
    leaks = sum(f["name_lines"] for f in figures)
    echoes = sum(f.get("prompt_echoes", 0) for f in figures)
    prompts = [t for f in figures for t in f["prompt_tokens"]]
    seen = [n for f in figures for n in f["scene_lines"]]
    return (
        f"\nscene {scene}: {replies} role replies to the partner; {100 * leaks / replies:.0f}% wrote a 'Name:' line, "
        f"{100 * echoes / replies:.0f}% repeated the system prompt; "
        f"prompt {sum(prompts) / len(prompts):.0f} tokens a turn (estimate); {sum(seen) / len(seen):.1f} scene lines seen"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


async def run_eval(settings: Settings, request: EvalRequest, say: Callable[[str], None]) -> str:
    """Run the evaluation, write results, summary and chart into ``request.out``; the table.

    Raises EvalIncomplete (after writing the figures of what is done) when dialogues are left undone.
    """
    roles = await gather_roles(settings, request, say)
    items = items_for(roles, samples=request.config.samples, chats=request.chats, recorded=request.config.recorded)
    if not items:
        raise InvalidInput("no chat in the role files has a recorded 'dialogues' list to judge (drop --recorded to play new ones)")
    results = request.out / RESULTS
    if request.fresh and results.exists():
        results.unlink()
    say(f"evaluating {_count(len(items), 'dialogue')} ({', '.join(r.name for r in roles)}), "
        f"{_count(request.config.turns, 'exchange')} each; "
        f"results in {results}")
    async with open_endpoints(settings) as endpoints:
        say("; ".join(f"{k}: {v}" for k, v in endpoints.where.items()))
        outcome = await run_items(endpoints, items, request.config, results, say)
    summary = report.summarize(outcome.records, about={
        **endpoints.where, "turns": request.config.turns, "max_tokens": request.config.max_tokens,
        "temperature": request.config.temperature, "judge_max_tokens": request.config.judge_max_tokens,
        "cadences": list(request.config.cadences), "scene": request.config.scene,
    })
    report.write_json(summary, request.out / SUMMARY)
    report.write_chart(summary, request.out / CHART)
    text = report.table(summary) + scene_line(outcome.records, request.config.scene) + f"\nwrote {request.out / SUMMARY} and {request.out / CHART}"
    if outcome.incomplete:
        say(text)
        raise EvalIncomplete(outcome.incomplete)
    return text
