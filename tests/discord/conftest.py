"""The real discord.py client against the fake Discord, with the TGI-protocol fake as the model.

Every test runs on two backend pairs: SQLite with the in-process cache, PostgreSQL with Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator

import discord
import pytest

from bots.compose import App, wire
from bots.discord import PersonaeClient, run_discord
from bots.llm.client import ModelClient
from bots.settings import Settings
from core.cards import new_card
from core.commands import Actor, Place
from core.engine import Reply
from core.events import Platform
from tests.conftest import paired_cache, paired_database
from bots.fakes.discord import GUILD_ID, OWNER, TOKEN, FakeDiscord
from tests.tgi_server import TGIServer

CHARACTER = "Hamlet"


@pytest.fixture
def database_backend(request: pytest.FixtureRequest, backends: tuple[str, str]):
    """Overrides the shared fixture: the database of the pair (tests/conftest.py's ``backends``)."""
    return paired_database(request, backends)


@pytest.fixture
def cache_backend(request: pytest.FixtureRequest, backends: tuple[str, str]) -> str | None:
    """Overrides the shared fixture: the cache of the pair."""
    return paired_cache(request, backends)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
async def tgi() -> AsyncIterator[TGIServer]:
    async with TGIServer() as server:
        yield server


@pytest.fixture(autouse=True)
def restore_discord_endpoints() -> Any:
    """``run_discord`` points discord.py's class attributes at the fake; put Discord's back afterwards."""
    base, gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    yield
    discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = base, gateway


def discord_settings(fake: FakeDiscord, tgi: TGIServer, **overrides: Any) -> Settings:
    fields: dict[str, Any] = dict(
        _env_file=None,
        discord_token=TOKEN,
        discord_api_base=fake.api_base,
        discord_gateway_url=fake.gateway_url,
        discord_admin_role="Game Master",
        discord_sync="guild",
        discord_guild_ids=[str(GUILD_ID)],
        owner_ids=[str(OWNER)],
        llm_url=tgi.base_url,
        llm_retries=1,
        llm_timeout_s=5.0,
        turn_deadline_s=20.0,
        rate_limit_messages=1000,
        max_waiting_per_person=1000,
        max_tokens=1500,  # some replies here run to several messages; the engine cuts at max_tokens
        # With Redis, a first sweep that finds no liveness epoch presumes owners alive for one lease
        # (the cache may have restarted empty): a short lease keeps recovery tests quick.
        replica_lease_s=1.0,
        # The bot's own messages (the channel routes) unless a test asks for the characters' webhooks.
        discord_webhooks=False,
    )
    fields.update(overrides)
    return Settings(**fields)


def build_app(store: Any, cache: Any, settings: Settings) -> App:
    assert settings.llm_url is not None
    model = ModelClient(settings.llm_url, timeout_s=settings.llm_timeout_s, concurrency=8, retries=settings.llm_retries, retry_base_s=0.01)
    return wire(settings, store, cache, model)


@dataclass
class Bot:
    """A running PersonaeClient connected to the fake, with helpers that wait for the bot to finish."""

    app: App
    client: PersonaeClient
    fake: FakeDiscord
    tgi: TGIServer

    async def say(self, channel: int, author: int, content: str, **kw: Any) -> tuple[dict[str, Any], Reply | None]:
        """Post a message and wait until the bot has handled it; returns the payload and the Engine's reply."""
        payload = self.fake.message_payload(channel, author, content, **kw)
        return payload, await self.deliver(payload)

    async def deliver(self, payload: dict[str, Any]) -> Reply | None:
        """Dispatch a MESSAGE_CREATE (again, for a redelivery) and wait for the bot's turn to finish."""
        self.fake.messages.setdefault(int(payload["id"]), payload)
        done = self.client.wait_for("turn_finished", check=lambda m, _: m.id == int(payload["id"]), timeout=30)
        await self.fake.dispatch("MESSAGE_CREATE", payload)
        _, reply = await done
        return reply

    async def bind(self, channel: int, *, trigger: str = "all", character: str = CHARACTER) -> None:
        await bind(self.app, channel, trigger=trigger, character=character)


async def start_bot(app: App, fake: FakeDiscord, tgi: TGIServer) -> tuple[Bot, asyncio.Task[None]]:
    client = PersonaeClient(app, guild_ready_timeout=0.1)

    async def serve() -> None:
        # As `personae run` does: the replica's liveness lease is held while it serves.
        from bots.replicas import alive

        async with alive(app.cache, app.replica, app.settings.replica_lease_s):
            await run_discord(app, client=client)

    task = asyncio.create_task(serve())
    await fake.wait_for(lambda: client.is_ready() or task.done(), timeout=10, what="the client to be ready")
    if task.done():
        task.result()
    return Bot(app, client, fake, tgi), task


async def stop_bot(app: App, task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await app.engine.drain()
    await app.model.close()


async def add_character(store: Any, *, greeting: str = "") -> None:
    # No greeting by default, so that the scenarios count only the reply's messages.
    await store.characters.add(
        new_card(
            name=CHARACTER,
            world="8th Century Danish Royalty",
            traits=["extreme", "strong", "decisive"],
            mbti="ENFJ",
            style=["indecisive", "decisive", "sentimental"],
            scene="Elsinore at night.",
            greeting=greeting,
        )
    )


async def bind(app: App, channel: int, *, trigger: str = "all", character: str = CHARACTER) -> None:
    """Bind through the command layer, as an admin (the /bind command itself is tested separately)."""
    admin = Actor(Platform.DISCORD, "setup", "Setup", is_admin=True)
    outcome = await app.commands.bind(admin, Place(Platform.DISCORD, str(GUILD_ID), str(channel)), character, trigger)
    assert outcome.ok, outcome.message


@pytest.fixture
async def bot(store: Any, cache: Any, fake: FakeDiscord, tgi: TGIServer) -> AsyncIterator[Bot]:
    app = build_app(store, cache, discord_settings(fake, tgi))
    await add_character(store)
    running, task = await start_bot(app, fake, tgi)
    yield running
    await stop_bot(app, task)


@pytest.fixture
def discord_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog
