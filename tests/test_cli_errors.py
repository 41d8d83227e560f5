"""Every misconfiguration a person can make, through the real CLI in a child process.

Each case must end with a non-zero exit status (78 for a setting to fix, 1 otherwise), at most
three lines, no traceback, and the name of the variable to change or the command to run.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import AsyncIterator
from urllib.parse import urlsplit

import pytest

from tests.cli_process import Finished, personae
from tests.conftest import TEST_DATABASE_URL, throwaway_postgres
from bots.fakes.discord import FakeDiscord
from bots.fakes.telegram import FakeTelegram
from tests.tgi_server import TGIServer

EX_CONFIG = 78
UNREACHABLE = "http://127.0.0.1:1"
# Commands that open the database; chat and run also need a model server, given one that is not there
# so that nothing waits for the bundled model when the database is the point of the test.
DATABASE_COMMANDS = {
    "db upgrade": (("db", "upgrade"), {}),
    "characters list": (("characters", "list"), {}),
    "chat": (("chat",), {"PERSONAE_LLM_URL": UNREACHABLE}),
    "run": (("run",), {"PERSONAE_LLM_URL": UNREACHABLE, "PERSONAE_DISCORD_TOKEN": "x", "PERSONAE_DISCORD_API_BASE": f"{UNREACHABLE}/api/v10"}),
}


def assert_told(result: Finished, *names: str, code: int) -> None:
    """A short, traceback-free answer naming one of ``names``, and the exit status ``code``."""
    assert "Traceback" not in result.output, result.output
    assert len(result.lines) <= 3, result.output
    assert any(name in result.output for name in names), result.output
    assert result.code == code, result.output


def postgres_url(**parts: object) -> str:
    import sqlalchemy as sa

    return sa.make_url(TEST_DATABASE_URL).set(drivername="postgresql", **parts).render_as_string(hide_password=False)


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port on 127.0.0.1 that accepts connections and never says a word (a host that does not answer)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


# -- the database --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATABASE_COMMANDS)
async def test_a_refused_database_port_is_one_line_naming_the_url(name: str, tmp_path: Path) -> None:
    args, extra = DATABASE_COMMANDS[name]
    result = await personae(*args, home=tmp_path, PERSONAE_DATABASE_URL=postgres_url(port=1), **extra)
    assert_told(result, "PERSONAE_DATABASE_URL", code=1)
    assert "connection refused" in result.output


@pytest.mark.parametrize("name", DATABASE_COMMANDS)
async def test_a_database_host_that_never_answers_is_one_line(name: str, tmp_path: Path, silent_port: int) -> None:
    args, extra = DATABASE_COMMANDS[name]
    # connect_timeout (libpq's URL parameter) instead of the default 10 s: the port never answers, so
    # the wait always runs out, only sooner.
    url = postgres_url(host="127.0.0.1", port=silent_port, query={"connect_timeout": "2"})
    result = await personae(*args, home=tmp_path, PERSONAE_DATABASE_URL=url, **extra)
    assert_told(result, "PERSONAE_DATABASE_URL", code=1)
    assert "no answer in time" in result.output


@pytest.mark.parametrize("name", DATABASE_COMMANDS)
async def test_an_unknown_database_user_is_a_setting_to_fix(name: str, tmp_path: Path) -> None:
    args, extra = DATABASE_COMMANDS[name]
    result = await personae(*args, home=tmp_path, PERSONAE_DATABASE_URL=postgres_url(username="nosuchuser", password=None), **extra)
    assert_told(result, "PERSONAE_DATABASE_URL", code=EX_CONFIG)
    assert "refused the login" in result.output and "nosuchuser" in result.output


@pytest.mark.parametrize("name", DATABASE_COMMANDS)
async def test_a_missing_database_is_a_setting_to_fix(name: str, tmp_path: Path) -> None:
    args, extra = DATABASE_COMMANDS[name]
    result = await personae(*args, home=tmp_path, PERSONAE_DATABASE_URL=postgres_url(database="personae_no_such_db"), **extra)
    assert_told(result, "PERSONAE_DATABASE_URL", code=EX_CONFIG)
    assert "does not exist" in result.output


@pytest.mark.parametrize("url", ["not-a-url", "mysql://x"])
@pytest.mark.parametrize("name", DATABASE_COMMANDS)
async def test_a_malformed_database_url_is_a_setting_to_fix(name: str, url: str, tmp_path: Path) -> None:
    args, extra = DATABASE_COMMANDS[name]
    result = await personae(*args, home=tmp_path, PERSONAE_DATABASE_URL=url, **extra)
    assert_told(result, "PERSONAE_DATABASE_URL", code=EX_CONFIG)


@pytest.mark.parametrize("name", ["characters list", "chat", "run"])
async def test_an_unmigrated_postgres_database_says_to_run_the_upgrade(name: str, tmp_path: Path) -> None:
    args, extra = DATABASE_COMMANDS[name]
    async with throwaway_postgres() as url:
        result = await personae(*args, home=tmp_path, PERSONAE_DATABASE_URL=url, **extra)
    assert_told(result, "run `personae db upgrade`", code=1)


async def test_db_upgrade_migrates_an_empty_postgres_database(tmp_path: Path) -> None:
    async with throwaway_postgres() as url:
        upgraded = await personae("db", "upgrade", home=tmp_path, PERSONAE_DATABASE_URL=url)
        listed = await personae("characters", "list", home=tmp_path, PERSONAE_DATABASE_URL=url)
    assert upgraded.code == 0 and "database at revision" in upgraded.output, upgraded.output
    assert listed.code == 0 and "Hamlet" in listed.output, listed.output


async def test_a_sqlite_database_is_created_by_the_first_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'personae.db'}"
    result = await personae("characters", "list", home=tmp_path, PERSONAE_DATABASE_URL=url)
    assert result.code == 0 and "Hamlet" in result.output, result.output


async def test_an_older_sqlite_schema_is_upgraded_by_the_next_command(tmp_path: Path) -> None:
    from storage import migrate

    url = f"sqlite:///{tmp_path / 'personae.db'}"
    await migrate.upgrade(url, "0001")
    result = await personae("characters", "list", home=tmp_path, PERSONAE_DATABASE_URL=url)
    assert result.code == 0 and "Hamlet" in result.output, result.output
    assert await migrate.current(url) == await migrate.head()


async def test_the_default_sqlite_file_needs_no_upgrade_command(tmp_path: Path) -> None:
    result = await personae("characters", "list", home=tmp_path)
    assert result.code == 0 and "Hamlet" in result.output, result.output
    assert list((tmp_path / "data").rglob("personae.db"))


# -- Redis ---------------------------------------------------------------------------------------

CACHE_COMMANDS = {k: DATABASE_COMMANDS[k] for k in ("characters list", "chat", "run")}


@pytest.mark.parametrize("name", CACHE_COMMANDS)
async def test_a_malformed_redis_url_is_a_setting_to_fix(name: str, tmp_path: Path) -> None:
    args, extra = CACHE_COMMANDS[name]
    result = await personae(*args, home=tmp_path, PERSONAE_REDIS_URL="not-a-redis-url", **extra)
    assert_told(result, "PERSONAE_REDIS_URL", code=EX_CONFIG)


@pytest.mark.parametrize("name", CACHE_COMMANDS)
async def test_an_unreachable_redis_is_one_line_naming_the_url(name: str, tmp_path: Path) -> None:
    args, extra = CACHE_COMMANDS[name]
    result = await personae(*args, home=tmp_path, PERSONAE_REDIS_URL="redis://127.0.0.1:1/0", **extra)
    assert_told(result, "PERSONAE_REDIS_URL", code=1)
    assert "connection refused" in result.output


# -- the model server ----------------------------------------------------------------------------


async def card_missing_its_profile(tmp_path: Path) -> None:
    """Import a card without world, traits, MBTI or style (what ``characters derive`` fills in)."""
    card = tmp_path / "Nadia.json"
    card.write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": {
        "name": "Nadia", "description": "A ferry pilot who hums while she works.", "first_mes": "Hop on.",
    }}))
    result = await personae("characters", "import", str(card), home=tmp_path)
    assert result.code == 0, result.output


@pytest.mark.parametrize("url, code", [("gpu-host:8080", EX_CONFIG), ("ftp://x", EX_CONFIG), (UNREACHABLE, 1)])
async def test_a_bad_model_url_is_one_line_for_chat(url: str, code: int, tmp_path: Path) -> None:
    result = await personae("chat", home=tmp_path, PERSONAE_LLM_URL=url)
    assert_told(result, "PERSONAE_LLM_URL", code=code)


@pytest.mark.parametrize("url, code", [("gpu-host:8080", EX_CONFIG), ("ftp://x", EX_CONFIG), (UNREACHABLE, 1)])
async def test_a_bad_model_url_is_one_line_for_derive(url: str, code: int, tmp_path: Path) -> None:
    await card_missing_its_profile(tmp_path)
    result = await personae("characters", "derive", "Nadia", "--accept", home=tmp_path, PERSONAE_LLM_URL=url)
    assert_told(result, "PERSONAE_LLM_URL", code=code)


async def test_an_unreachable_model_server_stops_run_with_one_line(tmp_path: Path) -> None:
    result = await personae("run", home=tmp_path, PERSONAE_LLM_URL=UNREACHABLE, PERSONAE_TELEGRAM_TOKEN="1:x")
    assert_told(result, "PERSONAE_LLM_URL", code=1)


# -- other settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("variable, value", [
    ("PERSONAE_PROMPT_LAYOUT", "sideways"),
    ("PERSONAE_TELEGRAM_WEBHOOK_PORT", "99999"),
    ("PERSONAE_MAX_TOKENS", "abc"),
    ("PERSONAE_MAX_TOKENS", "-5"),
    ("PERSONAE_TEMPERATURE", "-1"),
    ("PERSONAE_HISTORY_TURNS", "-2"),
    ("PERSONAE_DISCORD_API_BASE", "discord.com/api"),
])
@pytest.mark.parametrize("args", [("characters", "list"), ("run",)])
async def test_a_bad_setting_is_named_by_its_variable(variable: str, value: str, args: tuple[str, ...], tmp_path: Path) -> None:
    result = await personae(*args, home=tmp_path, **{variable: value})
    assert_told(result, variable, code=EX_CONFIG)
    field = variable.removeprefix("PERSONAE_").lower()
    assert field not in result.output.replace(variable, ""), result.output


async def test_run_without_any_token_is_one_line_and_a_configuration_exit(tmp_path: Path) -> None:
    result = await personae("run", home=tmp_path)
    assert_told(result, "PERSONAE_DISCORD_TOKEN", code=EX_CONFIG)
    assert len(result.lines) == 1, result.output


async def test_an_empty_token_counts_as_unset(tmp_path: Path) -> None:
    # `PERSONAE_DISCORD_TOKEN=` left empty in .env must not start an adapter that can only fail.
    result = await personae("run", home=tmp_path, PERSONAE_DISCORD_TOKEN="", PERSONAE_TELEGRAM_TOKEN="")
    assert_told(result, "PERSONAE_DISCORD_TOKEN", code=EX_CONFIG)
    assert len(result.lines) == 1, result.output


# -- Discord and Telegram ------------------------------------------------------------------------


@pytest.fixture
async def model() -> AsyncIterator[TGIServer]:
    async with TGIServer() as server:
        yield server


async def test_run_with_discord_unreachable_is_one_line(tmp_path: Path, model: TGIServer) -> None:
    result = await personae(
        "run", home=tmp_path, PERSONAE_LLM_URL=model.base_url,
        PERSONAE_DISCORD_TOKEN="x", PERSONAE_DISCORD_API_BASE=f"{UNREACHABLE}/api/v10",
    )
    assert_told(result, "PERSONAE_DISCORD_API_BASE", code=1)
    assert "cannot reach Discord" in result.output


async def test_run_with_a_discord_token_refused_is_a_setting_to_fix(tmp_path: Path, model: TGIServer) -> None:
    async with FakeDiscord() as discord:
        result = await personae(
            "run", home=tmp_path, PERSONAE_LLM_URL=model.base_url, PERSONAE_DISCORD_TOKEN="not-the-token",
            PERSONAE_DISCORD_API_BASE=discord.api_base, PERSONAE_DISCORD_GATEWAY_URL=discord.gateway_url,
        )
    assert_told(result, "PERSONAE_DISCORD_TOKEN", code=EX_CONFIG)
    assert "not-the-token" not in result.output


async def test_run_with_telegram_unreachable_is_one_line(tmp_path: Path, model: TGIServer) -> None:
    result = await personae(
        "run", home=tmp_path, PERSONAE_LLM_URL=model.base_url,
        PERSONAE_TELEGRAM_TOKEN="1:x", PERSONAE_TELEGRAM_API_BASE=f"{UNREACHABLE}/bot",
    )
    assert_told(result, "PERSONAE_TELEGRAM_API_BASE", code=1)


async def test_run_with_a_telegram_token_refused_is_a_setting_to_fix(tmp_path: Path, model: TGIServer) -> None:
    async with FakeTelegram() as telegram:
        result = await personae(
            "run", home=tmp_path, PERSONAE_LLM_URL=model.base_url, PERSONAE_TELEGRAM_TOKEN="7:not-the-token",
            PERSONAE_TELEGRAM_API_BASE=telegram.base_url, PERSONAE_TELEGRAM_FILE_BASE=telegram.file_base_url,
        )
    assert_told(result, "PERSONAE_TELEGRAM_TOKEN", code=EX_CONFIG)
    assert "not-the-token" not in result.output


async def test_an_unknown_revision_is_one_line(tmp_path: Path) -> None:
    result = await personae("db", "upgrade", "nosuchrev", home=tmp_path, PERSONAE_DATABASE_URL=f"sqlite:///{tmp_path / 'p.db'}")
    assert_told(result, "nosuchrev", code=1)


async def test_a_redis_that_answers_with_an_error_is_one_line(tmp_path: Path) -> None:
    import redis.asyncio as aioredis

    from tests.conftest import TEST_REDIS_URL

    # A database number past the server's count: Redis answers, and refuses.
    client = aioredis.Redis.from_url(TEST_REDIS_URL)
    try:
        databases = int((await client.config_get("databases"))["databases"])
    finally:
        await client.aclose()
    url = urlsplit(TEST_REDIS_URL)._replace(path=f"/{databases}").geturl()
    result = await personae("characters", "list", home=tmp_path, PERSONAE_REDIS_URL=url)
    assert_told(result, "PERSONAE_REDIS_URL", code=1)
    assert "answered with an error" in result.output


async def test_run_with_a_taken_metrics_port_or_a_twin_replica_id_stops_with_one_line_exit_78(tmp_path: Path) -> None:
    import secrets
    import signal
    import socket

    from tests.cli_process import GUARD_S, cli_env, command
    from tests.conftest import TEST_REDIS_URL
    from bots.fakes.telegram import TOKEN as TELEGRAM_TOKEN, FakeTelegram
    from tests.tgi_server import TGIServer

    async with TGIServer() as model, FakeTelegram() as telegram:
        base = dict(
            PERSONAE_DATABASE_URL=f"sqlite:///{tmp_path / 'personae.db'}",
            PERSONAE_LLM_URL=model.base_url,
            PERSONAE_APPRAISER="none",
            PERSONAE_TELEGRAM_TOKEN=TELEGRAM_TOKEN,
            PERSONAE_TELEGRAM_API_BASE=telegram.base_url,
            PERSONAE_TELEGRAM_FILE_BASE=telegram.file_base_url,
        )
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            result = await personae("run", home=tmp_path, **base, PERSONAE_METRICS_PORT=str(taken.getsockname()[1]))
        assert result.code == 78, result.output
        (line,) = result.lines
        assert "PERSONAE_METRICS_PORT" in line and "SystemExit" not in result.output, result.output

        twin = dict(base, PERSONAE_REDIS_URL=TEST_REDIS_URL, PERSONAE_REDIS_PREFIX=f"personae-test-{secrets.token_hex(4)}:",
                    PERSONAE_REPLICA_ID="twin", PERSONAE_REPLICA_LEASE_S="1")
        first = await asyncio.create_subprocess_exec(
            *command("run"), env=cli_env(tmp_path, **twin), cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            seen: list[str] = []
            while not any("taking updates by long polling" in s for s in seen):
                got = await asyncio.wait_for(first.stdout.readline(), GUARD_S)
                assert got, "the first process stopped:\n" + "".join(seen)
                seen.append(got.decode())
            second = await personae("run", home=tmp_path, **twin)
        finally:
            first.send_signal(signal.SIGINT)
            await asyncio.wait_for(first.communicate(), GUARD_S)
    assert second.code == 78, second.output
    (line,) = second.lines
    assert "PERSONAE_REPLICA_ID" in line and "twin" in line, second.output
