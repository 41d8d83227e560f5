"""What `personae` says when things go right: the start-up line, log levels, and the version."""

from __future__ import annotations

import asyncio
import importlib.metadata
import signal
import sys
from pathlib import Path

from bots.discord.client import invite_url
from tests.cli_process import GUARD_S, cli_env, command, personae
from bots.fakes.discord import APP_ID, TOKEN as DISCORD_TOKEN, FakeDiscord
from bots.fakes.telegram import TOKEN as TELEGRAM_TOKEN, FakeTelegram
from tests.tgi_server import MODEL_ID, TGIServer


async def test_run_says_what_it_connected_to_and_how_to_invite_the_bot(tmp_path: Path) -> None:
    async with TGIServer() as model, FakeDiscord() as discord, FakeTelegram() as telegram:
        proc = await asyncio.create_subprocess_exec(
            *command("run"),
            env=cli_env(
                tmp_path,
                PERSONAE_DATABASE_URL=f"sqlite:///{tmp_path / 'personae.db'}",
                PERSONAE_LLM_URL=model.base_url,
                PERSONAE_DISCORD_TOKEN=DISCORD_TOKEN,
                PERSONAE_DISCORD_API_BASE=discord.api_base,
                PERSONAE_DISCORD_GATEWAY_URL=discord.gateway_url,
                PERSONAE_TELEGRAM_TOKEN=TELEGRAM_TOKEN,
                PERSONAE_TELEGRAM_API_BASE=telegram.base_url,
                PERSONAE_TELEGRAM_FILE_BASE=telegram.file_base_url,
            ),
            cwd=tmp_path,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        wanted = ["logged in as", "taking updates by long polling", "invite the bot with"]
        lines: list[str] = []
        try:
            while any(not any(w in line for line in lines) for w in wanted):
                line = await asyncio.wait_for(proc.stdout.readline(), GUARD_S)
                assert line, "personae run stopped:\n" + "".join(lines)
                lines.append(line.decode())
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
                await asyncio.wait_for(proc.communicate(), GUARD_S)
    output = "".join(lines)
    assert "Traceback" not in output
    summary = next(line for line in lines if "bots.compose: database: " in line)
    assert "personae.db" in summary and "cache: in-process" in summary
    assert f"model server: {model.base_url}, model {MODEL_ID}" in summary
    assert "starting: Discord, Telegram" in summary
    assert invite_url(APP_ID) in output
    assert f"client_id={APP_ID}&scope=bot+applications.commands&permissions=275414895616" in invite_url(APP_ID)
    assert DISCORD_TOKEN not in output and TELEGRAM_TOKEN not in output


async def test_the_database_password_is_hidden_in_the_start_up_line(tmp_path: Path) -> None:
    result = await personae(
        "--verbose", "characters", "list", home=tmp_path, PERSONAE_DATABASE_URL="postgresql://someone:hunter2@127.0.0.1:1/x"
    )
    assert "hunter2" not in result.output and "someone:***@" in result.output, result.output


async def test_version_prints_the_package_version(tmp_path: Path) -> None:
    result = await personae("--version", home=tmp_path)
    assert result.code == 0
    assert result.output.strip() == f"personae {importlib.metadata.version('personae')}"


async def test_verbose_before_any_command_shows_personaes_info_lines_only(tmp_path: Path) -> None:
    quiet = await personae("characters", "list", home=tmp_path / "a")
    verbose = await personae("--verbose", "characters", "list", home=tmp_path / "b")
    assert quiet.code == verbose.code == 0
    assert " INFO " not in quiet.output
    assert "INFO storage.database: created the SQLite schema" in verbose.output
    assert " DEBUG " not in verbose.output


async def test_debug_shows_every_logger_at_debug(tmp_path: Path) -> None:
    result = await personae("--debug", "characters", "list", home=tmp_path)
    assert result.code == 0
    assert " DEBUG " in result.output
    assert any(" DEBUG " in line and not line.split(" DEBUG ")[1].startswith(("bots", "core", "storage", "personae"))
               for line in result.output.splitlines()), result.output


async def test_debug_shows_the_traceback_behind_a_one_line_error(tmp_path: Path) -> None:
    result = await personae("--debug", "characters", "list", home=tmp_path, PERSONAE_DATABASE_URL="postgresql://x@127.0.0.1:1/x")
    assert result.code == 1
    assert "Traceback" in result.output and "error: cannot reach the database" in result.output


async def test_run_and_chat_still_take_the_logging_options_after_their_name(tmp_path: Path) -> None:
    for args in (("run", "--verbose"), ("run", "-v", "--debug"), ("chat", "--verbose")):
        result = await personae(*args, home=tmp_path, PERSONAE_MAX_TOKENS="abc")
        assert result.code == 78 and "PERSONAE_MAX_TOKENS" in result.output, result.output
        assert "No such option" not in result.output


async def imported_modules(home: Path, *args: str) -> set[str]:
    """The modules ``personae ARGS`` imports (``python -X importtime`` names each on stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "importtime", *command(*args)[1:],
        env=cli_env(home), cwd=home, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), GUARD_S)
    assert proc.returncode == 0, err.decode()
    return {line.rpartition("|")[2].strip() for line in err.decode().splitlines() if line.startswith("import time:")}


async def test_a_command_imports_no_alembic_redis_or_asyncpg_it_does_not_need(tmp_path: Path) -> None:
    """Each `personae` command pays for what it imports: a migrated database is checked without
    Alembic (storage.migrate), redis-py waits for a PERSONAE_REDIS_URL (storage.cache) and asyncpg
    for a PostgreSQL database."""
    assert (await personae("db", "upgrade", home=tmp_path)).code == 0
    modules = await imported_modules(tmp_path, "characters", "list")
    assert "storage.database" in modules
    assert not {m for m in modules if m.split(".")[0] in ("alembic", "redis", "asyncpg")}
