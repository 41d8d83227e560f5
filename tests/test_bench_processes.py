"""``personae bench --processes N``: several engine processes share one model budget at one double."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli_process import personae
from tests.conftest import TEST_REDIS_URL

CAP = 2


async def test_two_processes_never_exceed_the_global_cap_at_the_double(
    postgres_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    # 2 processes x 4 people, each process would send 4 requests at once on its own (its local limit
    # is 96); slow streams keep them in flight. One channel may take the whole cap (share 1), so
    # only the deployment's cap, through Redis, keeps the double at CAP.
    users, turns = 8, 2
    result = await personae(
        "bench", "--processes", "2", "--users", str(users), "--turns", str(turns), "--token-delay", "0.02", "--json",
        home=tmp_path,
        PERSONAE_DATABASE_URL=postgres_url,
        PERSONAE_REDIS_URL=TEST_REDIS_URL,
        PERSONAE_REDIS_PREFIX=f"{redis_prefix}bench-processes:",
        PERSONAE_LLM_MAX_IN_FLIGHT=str(CAP),
        PERSONAE_LLM_CHANNEL_SHARE="1",
    )
    assert result.code == 0, result.output
    figures = json.loads(result.lines[-1])
    assert figures["processes"] == 2 and len(figures["workers"]) == 2
    assert figures["answered"] == figures["turns"] == users * turns and figures["failed_turns"] == 0
    assert all(w["answered"] == w["turns"] > 0 for w in figures["workers"])
    assert figures["max_in_flight_cap"] == CAP and 0 < figures["max_in_flight_seen"] <= CAP
    assert figures["admission_round_trips_per_turn"] >= 2  # at least take and give back, in Redis


async def test_more_than_one_process_needs_postgresql_and_redis(tmp_path: Path) -> None:
    result = await personae("bench", "--processes", "2", home=tmp_path)  # the default: SQLite, no Redis
    assert result.code != 0
    assert result.lines == [
        "error: `personae bench --processes 2` needs PostgreSQL and Redis shared by the processes: "
        "set PERSONAE_DATABASE_URL to a postgresql+asyncpg:// URL and PERSONAE_REDIS_URL (or use --processes 1)"
    ]
