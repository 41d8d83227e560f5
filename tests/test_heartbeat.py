"""The bots' heartbeat and `personae health`: healthy only while every platform is connected."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bots import heartbeat
from bots.cli import app
from bots.compose import model_client, wire
from bots.discord import PersonaeClient, run_discord
from bots.telegram import run_telegram
from tests.discord.conftest import (  # noqa: F401 - fixtures: SQLite and the in-process cache, discord.py's URLs put back
    build_app,
    cache_backend,
    database_backend,
    discord_settings,
    restore_discord_endpoints,
)
from bots.fakes.discord import FakeDiscord
from tests.telegram.conftest import FAST, make_settings
from bots.fakes.telegram import FakeTelegram
from tests.tgi_server import TGIServer

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_probes_left_over():
    yield
    for name in ("discord", "telegram", "a", "b"):
        heartbeat.unwatch(name)


def health(path: Path, *args: str):
    return runner.invoke(app, ["health", *args], env={"PERSONAE_HEARTBEAT_FILE": str(path)})


async def test_a_beat_is_written_only_while_every_adapter_is_connected(tmp_path: Path) -> None:
    path = tmp_path / "beat"
    up = {"a": False, "b": False}
    assert await heartbeat.beat(path) == ["none watched"] and not path.exists()
    heartbeat.watch("a", lambda: up["a"], path, interval_s=3600)  # its own beats wait an hour: only ours count
    heartbeat.watch("b", lambda: up["b"], path, interval_s=3600)
    up["a"] = True
    assert await heartbeat.beat(path) == ["b"] and not path.exists()
    up["b"] = True
    assert await heartbeat.beat(path) == [] and path.exists()
    assert heartbeat.age(path) is not None and heartbeat.age(path) < 60


async def test_a_probe_that_raises_counts_as_down(tmp_path: Path) -> None:
    heartbeat.watch("a", lambda: 1 / 0, tmp_path / "beat", interval_s=3600)
    assert await heartbeat.beat(tmp_path / "beat") == ["a"]


async def test_the_last_adapter_to_stop_stops_the_beating(tmp_path: Path) -> None:
    heartbeat.watch("a", lambda: True, tmp_path / "beat", interval_s=3600)
    writer = heartbeat._writer
    assert writer is not None and not writer.done()
    heartbeat.unwatch("a")
    with pytest.raises(asyncio.CancelledError):
        await writer


def test_health_exits_0_on_a_fresh_beat_and_1_otherwise_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "beat"
    missing = health(path)
    assert missing.exit_code == 1 and "PERSONAE_HEARTBEAT_FILE" in missing.output
    assert "Traceback" not in missing.output and len(missing.output.strip().splitlines()) == 1

    path.write_text(f"{time.time() - 120:.3f}\n")
    stale = health(path)
    assert stale.exit_code == 1 and "old" in stale.output and len(stale.output.strip().splitlines()) == 1

    path.write_text(f"{time.time():.3f}\n")
    assert health(path).exit_code == 0
    path.write_text(f"{time.time() - 120:.3f}\n")
    assert health(path, "--max-age", "300").exit_code == 0


async def test_the_discord_adapter_beats_while_connected_to_the_gateway(store, cache, tmp_path: Path) -> None:
    path = tmp_path / "beat"
    async with FakeDiscord() as fake, TGIServer() as tgi:
        discord_app = build_app(store, cache, discord_settings(fake, tgi, heartbeat_file=path))
        task = asyncio.create_task(run_discord(discord_app, client=PersonaeClient(discord_app, guild_ready_timeout=0.1)))
        try:
            await fake.wait_for(lambda: "discord" in heartbeat._probes, what="the adapter to register")
            await fake.wait_for(path.exists, timeout=30, what="the first heartbeat")
            assert heartbeat.not_connected() == []
            assert health(path).exit_code == 0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await discord_app.model.close()
    assert "discord" not in heartbeat._probes and heartbeat._writer is None, "a stopped adapter is forgotten"


async def test_the_telegram_adapter_beats_while_polling(store, cache, tmp_path: Path) -> None:
    path = tmp_path / "beat"
    async with FakeTelegram() as tg, TGIServer() as tgi:
        config = make_settings(tg, tgi.base_url, heartbeat_file=path)
        model = model_client(config, config.llm_url)
        telegram_app = wire(config, store, cache, model)
        task = asyncio.create_task(run_telegram(telegram_app, FAST))
        try:
            await tg.wait_for(path.exists, 30, "the first heartbeat")
            assert heartbeat.not_connected() == []
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await model.close()
    assert "telegram" not in heartbeat._probes


async def test_a_beat_left_by_an_earlier_run_does_not_count(tmp_path: Path) -> None:
    path = tmp_path / "beat"
    path.write_text(f"{time.time():.3f}\n")
    heartbeat.watch("a", lambda: False, path, interval_s=3600)
    assert health(path).exit_code == 1
