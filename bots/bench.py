"""``personae bench``: simulated people through the Engine against an instant model server, with figures.

The model server is the TGI-protocol test double, run in its own process and answering instantly
(with replies and appraisals of realistic length, ``bots.llm.bench_answers``), so what is measured
is personae itself: the engine, storage and cache round trips, and the client. The same number of
requests is then sent as a bare loop of ``AsyncInferenceClient`` calls for scale. Last, a few
conversations are run one at a time and the double's ledger gives the model tokens per turn
(``bots.bench_tokens``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
import socket
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Mapping, Sequence

import httpx
import psutil

from bots import bench_tokens
from bots.compose import model_client, open_cache, open_slots, open_store, wire
from bots.llm import bench_answers
from bots.settings import Settings
from core.cards import new_card
from core.commands import Actor, Place
from core.errors import PersonaeError
from core.events import ChatEvent, Platform

SERVER_MODULE = "bots.llm.tgi_double"
TOKEN_CONVERSATIONS = 4  # conversations run one at a time for the token figures


# The time the current turn spent waiting on the model server (each simulated person is a task).
_model_time: contextvars.ContextVar[list[float]] = contextvars.ContextVar("model_time")


class TimedModel:
    """Wraps the model client and adds the time spent waiting on the model server to the turn's tally."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @staticmethod
    def _add(seconds: float) -> None:
        cell = _model_time.get(None)
        if cell is not None:
            cell[0] += seconds

    async def stream(self, messages: Sequence[Mapping[str, str]], **kw: Any) -> AsyncIterator[str]:
        start = time.perf_counter()
        try:
            async for delta in self.inner.stream(messages, **kw):
                yield delta
        finally:
            self._add(time.perf_counter() - start)

    async def count_tokens(self, text: str) -> int:
        start = time.perf_counter()
        try:
            return await self.inner.count_tokens(text)
        finally:
            self._add(time.perf_counter() - start)

    async def complete(self, *a: Any, **kw: Any) -> str:
        return await self.inner.complete(*a, **kw)

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class Figures:
    users: int
    turns: int
    turns_per_s: float = 0.0
    bare_requests_per_s: float = 0.0
    ratio_vs_bare_client: float = 0.0
    overhead_p50_ms: float = 0.0  # one person's turns in sequence: the engine's own latency
    overhead_p99_ms: float = 0.0
    loaded_overhead_p50_ms: float = 0.0  # all users at once: includes queueing behind other turns
    loaded_overhead_p99_ms: float = 0.0
    turn_p50_ms: float = 0.0
    turn_p99_ms: float = 0.0
    db_round_trips_per_turn: float = 0.0
    redis_round_trips_per_turn: float = 0.0
    db_round_trips_first_turn: float = 0.0
    redis_round_trips_first_turn: float = 0.0
    state_update_db_round_trips: float = 0.0  # off the critical path, after the reply
    state_update_redis_round_trips: float = 0.0
    # The deployment's model budget (PERSONAE_LLM_MAX_IN_FLIGHT), per turn of one person: Redis round
    # trips to take and give back a slot (part of redis_round_trips_per_turn), and their ms.
    admission_round_trips_per_turn: float = 0.0
    admission_acquire_ms: float = 0.0
    admission_release_ms: float = 0.0
    appraiser: str = ""
    peak_rss_mb: float = 0.0
    database: str = ""
    cache: str = ""
    failed_turns: int = 0
    tokens: dict[str, Any] = field(default_factory=dict)  # model tokens per turn (bench_tokens.TokenReport)
    notes: list[str] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def instant_model_server(*options: str) -> AsyncIterator[str]:
    """Start the TGI-protocol double in its own process (answers of realistic length, in 4 stream
    events, and ``options``); yield its base URL."""
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", SERVER_MODULE, "--port", str(port), "--chunks", "4", "--bench-answers", *options,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=1.0) as client:
            for _ in range(200):
                if proc.returncode is not None:
                    err = (await proc.stderr.read()).decode(errors="replace")[-500:] if proc.stderr else ""
                    raise PersonaeError(f"the benchmark's model server exited: {err}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/health")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
            else:
                raise PersonaeError("the benchmark's model server did not start within 10 s")
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(ProcessLookupError):
                await asyncio.wait_for(proc.wait(), 5)


class RssSampler:
    """Samples this process's resident memory every few milliseconds; keeps the peak."""

    def __init__(self) -> None:
        self.process = psutil.Process(os.getpid())
        self.peak = self.process.memory_info().rss
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.process.memory_info().rss)
            await asyncio.sleep(0.05)

    def __enter__(self) -> "RssSampler":
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
        self.peak = max(self.peak, self.process.memory_info().rss)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.asynccontextmanager
async def bench_world(settings: Settings, url: str) -> AsyncIterator[tuple[Any, str]]:
    """An App on the configured database and cache with a fresh character bound to a fresh channel.

    Yields (app, channel); the character and everything stored with it are deleted afterwards.
    """
    store = await open_store(settings)
    cache = await open_cache(settings)
    slots = open_slots(settings, cache)
    model = TimedModel(model_client(settings, url, slots=slots))
    app = wire(settings, store, cache, model)
    app.slots = slots
    name = f"bench-{uuid.uuid4().int % 10**10:010d}"  # digits: the same number of tokens every run
    channel = f"bench-{uuid.uuid4().hex[:10]}"
    character = await store.characters.add(
        new_card(name=name, world="a benchmark", traits=["steady"], mbti="ISTJ", style=["brief"], scene="A quiet room.")
    )
    try:
        outcome = await app.commands.bind(
            Actor(Platform.CONSOLE, "bench", "bench", is_owner=True), Place(Platform.CONSOLE, "bench", channel), name
        )
        if not outcome.ok:
            raise PersonaeError(f"the benchmark could not bind its character: {outcome.message}")
        yield app, channel
    finally:
        await app.engine.drain()
        await store.characters.delete(character.id)
        await model.close()
        await slots.close()
        await cache.close()
        await store.close()


def _event(channel: str, user: int | str, text: str) -> ChatEvent:
    return ChatEvent(Platform.CONSOLE, "bench", channel, f"user-{user}", f"User {user}", uuid.uuid4().hex, text)


async def _engine_pass(settings: Settings, url: str, users: int, turns: int, figures: Figures, say) -> None:
    """Every person at once, each sending ``turns`` messages in sequence: throughput and memory."""
    overheads: list[float] = []
    totals: list[float] = []
    async with bench_world(settings, url) as (app, channel):

        async def person(i: int) -> None:
            for t in range(turns):
                waited = [0.0]
                _model_time.set(waited)
                start = time.perf_counter()
                reply = app.engine.handle(_event(channel, i, f"Turn {t}: tell me about the weather, please."))
                try:
                    text = await reply.collect()
                except Exception as exc:  # counted and reported, not fatal: the figures say how many
                    figures.notes.append(f"{type(exc).__name__}: {exc}"[:200])
                    text = ""
                elapsed = time.perf_counter() - start
                if reply.status.value != "answered" or not text:
                    figures.failed_turns += 1
                totals.append(elapsed)
                overheads.append(elapsed - waited[0])

        with RssSampler() as rss:
            start = time.perf_counter()
            await asyncio.gather(*(person(i) for i in range(users)))
            await app.engine.drain()  # the feelings of the last turns are part of the work
            wall = time.perf_counter() - start
    figures.turns_per_s = users * turns / wall
    figures.peak_rss_mb = rss.peak / 2**20
    say(f"engine: {users * turns} turns in {wall:.2f} s = {figures.turns_per_s:.0f} turns/s")
    figures.loaded_overhead_p50_ms = _pct(overheads, 0.5) * 1000
    figures.loaded_overhead_p99_ms = _pct(overheads, 0.99) * 1000
    figures.turn_p50_ms = _pct(totals, 0.5) * 1000
    figures.turn_p99_ms = _pct(totals, 0.99) * 1000


async def _round_trip_pass(settings: Settings, url: str, turns: int, figures: Figures) -> None:
    """One person, turns in sequence: the engine's own latency and exact round trips per turn.

    Round trips are counted while the reply is produced (the hot path) and, separately, for the
    state update that follows it off the critical path.
    """
    per_turn = []
    background = []
    overheads = []
    async with bench_world(settings, url) as (app, channel):
        store, cache, slots = app.store, app.cache, app.slots
        counted = _slot_costs(slots)
        for t in range(max(turns, 3) * 20):
            db0, rd0 = store.round_trips, cache.round_trips
            waited = [0.0]
            _model_time.set(waited)
            start = time.perf_counter()
            await app.engine.handle(_event(channel, "solo", f"Turn {t}.")).collect()
            overheads.append(time.perf_counter() - start - waited[0])
            db1, rd1 = store.round_trips, cache.round_trips
            per_turn.append((db1 - db0, rd1 - rd0))
            await app.engine.drain()
            background.append((store.round_trips - db1, cache.round_trips - rd1))
            if t == 0:
                counted = _slot_costs(slots)  # the first turn also loads the script
        hot_turns = len(per_turn) - 1
        spent = [now - then for now, then in zip(_slot_costs(slots), counted)]
        figures.admission_round_trips_per_turn = (spent[0] + spent[1]) / hot_turns
        figures.admission_acquire_ms = spent[2] / hot_turns * 1000
        figures.admission_release_ms = spent[3] / hot_turns * 1000
    figures.db_round_trips_first_turn, figures.redis_round_trips_first_turn = per_turn[0]
    hot = per_turn[1:]
    figures.db_round_trips_per_turn = statistics.mean(d for d, _ in hot)
    figures.redis_round_trips_per_turn = statistics.mean(r for _, r in hot)
    figures.state_update_db_round_trips = statistics.mean(d for d, _ in background[1:])
    figures.state_update_redis_round_trips = statistics.mean(r for _, r in background[1:])
    figures.overhead_p50_ms = _pct(overheads[1:], 0.5) * 1000
    figures.overhead_p99_ms = _pct(overheads[1:], 0.99) * 1000


async def _token_pass(settings: Settings, url: str, conversations: int, turns: int) -> bench_tokens.TokenReport:
    """``conversations`` people, one after the other, ``turns`` turns each (the state update of each
    turn finished before the next): the double's ledger, read per conversation, in tokens per turn."""
    grouped: list[list[dict[str, Any]]] = []
    tokenizer = ""
    async with bench_world(settings, url) as (app, channel), httpx.AsyncClient(base_url=url, timeout=30) as http:
        for c in range(conversations):
            since = (await http.get("/ledger", params={"since": 1 << 30})).json()["size"]  # entries so far
            for t in range(turns):
                await app.engine.handle(_event(channel, f"tokens-{c}", f"Turn {t}: tell me about the weather, please.")).collect()
                await app.engine.drain()
            ledger = (await http.get("/ledger", params={"since": since})).json()
            tokenizer = ledger["tokenizer"]
            grouped.append(ledger["entries"])
        layout = getattr(app.model.inner, "layout", "?")
    return bench_tokens.report(
        grouped, turns, tokenizer=tokenizer, answers=bench_answers.DESCRIPTION, layout=layout, appraiser=_appraiser(settings)
    )


def _slot_costs(slots: Any) -> tuple[float, float, float, float]:
    """(acquire round trips, release round trips, acquire s, release s) so far; zeros in one process."""
    return (
        getattr(slots, "acquire_trips", 0), getattr(slots, "release_trips", 0),
        getattr(slots, "acquire_s", 0.0), getattr(slots, "release_s", 0.0),
    )


def _appraiser(settings: Settings) -> str:
    """The appraiser ``wire`` builds for the bench: model or none when asked for, else the lexicon."""
    return settings.appraiser if settings.appraiser in ("model", "none") else "lexicon"


async def _bare_pass(url: str, users: int, turns: int, settings: Settings) -> float:
    from huggingface_hub import AsyncInferenceClient

    client = AsyncInferenceClient(base_url=url, timeout=30)
    messages = [{"role": "system", "content": "You are a character."}, {"role": "user", "content": "Tell me about the weather, please."}]

    # The same number of requests as the engine pass, with the same cap on requests in flight.
    remaining = users * turns

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            stream = await client.chat_completion(messages, model="tgi", stream=True, max_tokens=settings.max_tokens)
            async for _chunk in stream:
                pass

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(users, settings.llm_concurrency))))
    rate = users * turns / (time.perf_counter() - start)
    with contextlib.suppress(Exception):
        await client.close()
    return rate


async def run_bench(settings: Settings, *, users: int, turns: int, as_json: bool) -> Figures:
    """Run the benchmark and print its figures (a last JSON line with ``as_json``)."""
    settings = settings.model_copy(update={"rate_limit_messages": 10**9})
    say = (lambda s: print(s, file=sys.stderr)) if as_json else print
    figures = Figures(users=users, turns=turns)
    figures.database = settings.database_url.split("://", 1)[0]
    figures.cache = "redis" if settings.redis_url else "in-process"
    figures.appraiser = _appraiser(settings)
    async with instant_model_server() as url:
        await _round_trip_pass(settings, url, turns, figures)
        say(
            f"round trips per turn: database {figures.db_round_trips_per_turn:.2f} hot / {figures.db_round_trips_first_turn} first, "
            f"cache {figures.redis_round_trips_per_turn:.2f} hot / {figures.redis_round_trips_first_turn} first; "
            f"state update after the reply: database {figures.state_update_db_round_trips:.2f}, "
            f"cache {figures.state_update_redis_round_trips:.2f}"
        )
        say(
            f"model budget (PERSONAE_LLM_MAX_IN_FLIGHT) per turn: {figures.admission_round_trips_per_turn:.2f} Redis round trips, "
            f"take {figures.admission_acquire_ms:.2f} ms, give back {figures.admission_release_ms:.2f} ms"
            + ("" if settings.redis_url else " (in-process: no Redis)")
        )
        await _engine_pass(settings, url, users, turns, figures, say)
        say(
            f"engine overhead per turn: p50 {figures.overhead_p50_ms:.2f} ms, p99 {figures.overhead_p99_ms:.2f} ms "
            f"(one person); with {users} people at once p50 {figures.loaded_overhead_p50_ms:.1f} ms, "
            f"p99 {figures.loaded_overhead_p99_ms:.1f} ms"
        )
        figures.bare_requests_per_s = await _bare_pass(url, users, turns, settings)
        figures.ratio_vs_bare_client = figures.turns_per_s / figures.bare_requests_per_s
        say(f"bare client: {figures.bare_requests_per_s:.0f} requests/s; ratio {figures.ratio_vs_bare_client:.2f}")
        say(f"peak RSS {figures.peak_rss_mb:.0f} MB; failed turns {figures.failed_turns}")
    # A double of its own that counts with SmolLM2's tokenizer (too slow for the passes above).
    async with instant_model_server("--tokenizer", "smollm2") as url:
        tokens = await _token_pass(settings, url, TOKEN_CONVERSATIONS, max(turns, 2))
    figures.tokens = tokens.to_json()
    say(bench_tokens.table(tokens))
    if as_json:
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.__dict__.items()}))
    return figures
