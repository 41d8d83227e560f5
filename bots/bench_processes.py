"""``personae bench --processes N``: N engine processes on one database and one Redis against one double.

The parent starts the TGI-protocol double, then N children (``personae bench --worker-of URL``), each
simulating its share of the people on a character and channel of its own. Every child sets up, says
``ready`` and waits; the parent says ``go`` to all at once, and each child answers with one JSON line
(its turns, its start and end on the wall clock, what the global model admission cost it). The parent
reads the double's ``GET /stats`` (the most requests it had in flight) and prints one table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from bots.bench import _event, _slot_costs, bench_world, instant_model_server
from bots.settings import Settings
from core.errors import PersonaeError

READY, GO = "ready", "go"
QUIET_TURNS = 20  # one person's turns in sequence in each worker before the start
GUARD_S = 600.0  # a child that says nothing this long has hung: the bench stops instead of waiting forever


@dataclass
class WorkerFigures:
    index: int
    users: int
    turns: int  # turns sent
    answered: int = 0
    failed: int = 0
    start: float = 0.0  # wall clock (time.time), comparable across processes on one machine
    end: float = 0.0
    admission_round_trips: float = 0.0  # Redis round trips to take and give back slots, all turns
    admission_acquire_s: float = 0.0  # includes waiting for a free slot under the cap
    admission_release_s: float = 0.0
    cpu_s: float = 0.0  # this process's CPU time during the pass
    # One person's turns in sequence before the start (no queueing behind other turns): per turn.
    quiet_admission_round_trips: float = 0.0
    quiet_acquire_ms: float = 0.0
    quiet_release_ms: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def turns_per_s(self) -> float:
        return self.turns / (self.end - self.start) if self.end > self.start else 0.0


@dataclass
class ProcessFigures:
    processes: int
    users: int
    turns: int  # turns sent, all processes
    answered: int = 0
    failed_turns: int = 0
    turns_per_s: float = 0.0  # all processes: turns / (last end - first start)
    admission_round_trips_per_turn: float = 0.0
    admission_acquire_ms: float = 0.0  # per turn, including waiting for a slot
    admission_release_ms: float = 0.0
    max_in_flight_seen: int = 0  # at the double
    max_in_flight_cap: int = 0  # PERSONAE_LLM_MAX_IN_FLIGHT
    # One person's turns in sequence in each process before the start: the admission's own cost.
    quiet_admission_round_trips_per_turn: float = 0.0
    quiet_acquire_ms: float = 0.0
    quiet_release_ms: float = 0.0
    cpu_s_engines: float = 0.0  # CPU seconds of every engine process during the pass
    cpu_s_double: float = 0.0  # and of the double
    wall_s: float = 0.0
    database: str = ""
    cache: str = ""
    workers: list[dict[str, Any]] = field(default_factory=list)


def check_shared(settings: Settings, processes: int) -> None:
    """More than one process needs a database and a Redis they share; say which setting, in one line."""
    if processes > 1 and (settings.database_url.startswith("sqlite") or not settings.redis_url):
        raise PersonaeError(
            f"`personae bench --processes {processes}` needs PostgreSQL and Redis shared by the processes: "
            "set PERSONAE_DATABASE_URL to a postgresql+asyncpg:// URL and PERSONAE_REDIS_URL (or use --processes 1)"
        )


def _shares(users: int, processes: int) -> list[int]:
    return [users // processes + (1 if i < users % processes else 0) for i in range(processes)]


async def run_worker(settings: Settings, url: str, *, index: int, users: int, turns: int) -> WorkerFigures:
    """One child: set up, say ``ready``, wait for ``go`` on stdin, run every person at once, print JSON."""
    settings = settings.model_copy(update={"rate_limit_messages": 10**9})
    figures = WorkerFigures(index=index, users=users, turns=users * turns)
    loop = asyncio.get_running_loop()
    async with bench_world(settings, url) as (app, channel):

        async def person(i: int) -> None:
            for t in range(turns):
                reply = app.engine.handle(_event(channel, f"{index}-{i}", f"Turn {t}: tell me about the weather, please."))
                try:
                    text = await reply.collect()
                except Exception as exc:  # counted and reported, not fatal
                    figures.notes.append(f"{type(exc).__name__}: {exc}"[:200])
                    text = ""
                if reply.status.value == "answered" and text:
                    figures.answered += 1
                else:
                    figures.failed += 1

        # One turn first, outside the count: loads the admission script and warms the connections.
        await app.engine.handle(_event(channel, f"{index}-warm", "Hello.")).collect()
        await app.engine.drain()
        # Then one person's turns in sequence: what taking and giving back a slot costs with no queue.
        before = _slot_costs(app.slots)
        for t in range(QUIET_TURNS):
            await app.engine.handle(_event(channel, f"{index}-quiet", f"Turn {t}.")).collect()
            await app.engine.drain()
        quiet = [now - then for now, then in zip(_slot_costs(app.slots), before)]
        figures.quiet_admission_round_trips = (quiet[0] + quiet[1]) / QUIET_TURNS
        figures.quiet_acquire_ms = quiet[2] / QUIET_TURNS * 1000
        figures.quiet_release_ms = quiet[3] / QUIET_TURNS * 1000
        before = _slot_costs(app.slots)
        print(READY, flush=True)
        if (await loop.run_in_executor(None, sys.stdin.readline)).strip() != GO:
            raise PersonaeError("the bench worker was not told to start")
        figures.start, cpu = time.time(), time.process_time()
        await asyncio.gather(*(person(i) for i in range(users)))
        await app.engine.drain()
        figures.end, figures.cpu_s = time.time(), time.process_time() - cpu
        spent = [now - then for now, then in zip(_slot_costs(app.slots), before)]
    figures.admission_round_trips = spent[0] + spent[1]
    figures.admission_acquire_s, figures.admission_release_s = spent[2], spent[3]
    print(json.dumps(asdict(figures)), flush=True)
    return figures


async def _line(proc: asyncio.subprocess.Process, errors: "asyncio.Task[bytes]") -> str:
    assert proc.stdout is not None
    raw = await asyncio.wait_for(proc.stdout.readline(), GUARD_S)
    if not raw:
        err = (await errors).decode(errors="replace").strip()
        raise PersonaeError(f"a bench worker exited early: {err.splitlines()[-1] if err else 'no message'}")
    return raw.decode().strip()


async def run_processes(
    settings: Settings, *, processes: int, users: int, turns: int, token_delay: float, as_json: bool
) -> ProcessFigures:
    """Run ``processes`` workers against one double and print one table (a last JSON line with ``as_json``)."""
    check_shared(settings, processes)
    say = (lambda s: print(s, file=sys.stderr)) if as_json else print
    figures = ProcessFigures(processes=processes, users=users, turns=users * turns)
    figures.database = settings.database_url.split("://", 1)[0]
    figures.cache = "redis" if settings.redis_url else "in-process"
    figures.max_in_flight_cap = settings.llm_max_in_flight
    options = ("--token-delay", str(token_delay)) if token_delay > 0 else ()
    async with instant_model_server(*options) as url:
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bots.cli", "bench", "--worker-of", url, "--worker-index", str(i),
                "--users", str(share), "--turns", str(turns),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            for i, share in enumerate(_shares(users, processes))
        ]
        # Read each child's stderr as it comes, so that a chatty child never blocks on a full pipe.
        errors = [asyncio.create_task(proc.stderr.read()) for proc in procs if proc.stderr is not None]
        try:
            for proc, err in zip(procs, errors):
                while await _line(proc, err) != READY:
                    pass
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                stats = (await http.get("/stats")).json()
            cpu_double = stats["cpu_s"]
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(f"{GO}\n".encode())
                await proc.stdin.drain()
            workers = []
            for proc, err in zip(procs, errors):
                while not (line := await _line(proc, err)).startswith("{"):
                    pass
                workers.append(WorkerFigures(**json.loads(line)))
                await proc.wait()
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    with contextlib.suppress(ProcessLookupError):
                        await proc.wait()
            for err in errors:
                with contextlib.suppress(Exception):
                    await err
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            stats = (await http.get("/stats")).json()
    figures.max_in_flight_seen = stats["max_in_flight"]  # the warm-up and quiet turns included: fewer at once
    figures.cpu_s_double = stats["cpu_s"] - cpu_double
    figures.cpu_s_engines = sum(w.cpu_s for w in workers)
    figures.wall_s = max(w.end for w in workers) - min(w.start for w in workers)
    figures.quiet_admission_round_trips_per_turn = sum(w.quiet_admission_round_trips for w in workers) / len(workers)
    figures.quiet_acquire_ms = sum(w.quiet_acquire_ms for w in workers) / len(workers)
    figures.quiet_release_ms = sum(w.quiet_release_ms for w in workers) / len(workers)
    figures.answered = sum(w.answered for w in workers)
    figures.failed_turns = sum(w.failed for w in workers)
    figures.turns_per_s = figures.turns / figures.wall_s
    figures.admission_round_trips_per_turn = sum(w.admission_round_trips for w in workers) / figures.turns
    figures.admission_acquire_ms = sum(w.admission_acquire_s for w in workers) / figures.turns * 1000
    figures.admission_release_ms = sum(w.admission_release_s for w in workers) / figures.turns * 1000
    figures.workers = [asdict(w) | {"turns_per_s": round(w.turns_per_s, 1)} for w in workers]
    say(table(figures, workers))
    if as_json:
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(figures).items()}))
    return figures


def table(figures: ProcessFigures, workers: list[WorkerFigures]) -> str:
    rows = [
        f"{'process':<9}{'people':>7}{'turns':>7}{'answered':>9}{'turns/s':>9}{'CPU s':>7}"
        f"{'adm. trips/turn':>16}{'acquire ms':>11}{'release ms':>11}{'quiet: trips':>13}{'acq. ms':>8}{'rel. ms':>8}"
    ]
    for w in workers:
        n = max(w.turns, 1)
        rows.append(
            f"{w.index:<9}{w.users:>7}{w.turns:>7}{w.answered:>9}{w.turns_per_s:>9.1f}{w.cpu_s:>7.1f}"
            f"{w.admission_round_trips / n:>16.2f}{w.admission_acquire_s / n * 1000:>11.2f}{w.admission_release_s / n * 1000:>11.2f}"
            f"{w.quiet_admission_round_trips:>13.2f}{w.quiet_acquire_ms:>8.2f}{w.quiet_release_ms:>8.2f}"
        )
    rows.append(
        f"{'all':<9}{figures.users:>7}{figures.turns:>7}{figures.answered:>9}{figures.turns_per_s:>9.1f}{figures.cpu_s_engines:>7.1f}"
        f"{figures.admission_round_trips_per_turn:>16.2f}{figures.admission_acquire_ms:>11.2f}{figures.admission_release_ms:>11.2f}"
        f"{figures.quiet_admission_round_trips_per_turn:>13.2f}{figures.quiet_acquire_ms:>8.2f}{figures.quiet_release_ms:>8.2f}"
    )
    rows.append(
        f"{figures.processes} process(es) on {figures.database} + {figures.cache}; the double saw at most "
        f"{figures.max_in_flight_seen} request{'' if figures.max_in_flight_seen == 1 else 's'} in flight (cap PERSONAE_LLM_MAX_IN_FLIGHT={figures.max_in_flight_cap}); "
        f"failed turns {figures.failed_turns}; {figures.wall_s:.1f} s wall, the double used {figures.cpu_s_double:.1f} CPU s.\n"
        "acquire/release ms under load include waiting for a free slot and for the busy event loop; "
        f"'quiet' is one person's turns in sequence ({QUIET_TURNS} per process, before the start)"
    )
    return "\n".join(rows)
