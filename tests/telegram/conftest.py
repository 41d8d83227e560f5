"""The real python-telegram-bot against a fake Bot API, with real storage and the TGI-protocol model fake.

Every test runs on two backend pairs (tests/conftest.py's ``backends``): SQLite with the in-process
cache, PostgreSQL with Redis. On Redis the bot polls as an elected replica, as ``personae run`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

import pytest
import telegram
from telegram.ext import Application

from bots.compose import App, model_client, wire
from bots.replicas import alive
from bots.settings import Settings
from bots.telegram import Tuning, build_application, serving
from core.character import Character
from core.commands import Actor, Place
from tests.conftest import paired_cache, paired_database
from bots.fakes.telegram import FakeTelegram
from tests.tgi_server import TGIServer

OWNER_ID = 1
# Telegram's pacing, shortened so that a streamed reply takes a fraction of a second.
FAST = Tuning(edit_interval=0.2, draft_interval=0.2, chat_interval=0.2, poll_timeout=1, request_timeout=5.0)


@pytest.fixture
def database_backend(request: pytest.FixtureRequest, backends: tuple[str, str]):
    """The database of the pair (``backends``)."""
    return paired_database(request, backends)


@pytest.fixture
def cache_backend(request: pytest.FixtureRequest, backends: tuple[str, str]) -> str | None:
    """The cache of the pair."""
    return paired_cache(request, backends)


@dataclass
class Sent:
    """One Bot API call as the adapter made it: recorded on the client's side, before the network."""

    method: str
    params: dict[str, Any]
    at: float


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[Sent]:
    """Every Bot API call the bot makes, with the time PTB sends it (after PTB's own rate limiter),
    so that pacing is asserted on when the adapter sent, not on when the fake server received."""
    calls: list[Sent] = []
    post = telegram.Bot._do_post

    async def recording(self: telegram.Bot, endpoint: str, data: dict[str, Any], **kw: Any) -> Any:
        calls.append(Sent(endpoint, dict(data), time.monotonic()))
        return await post(self, endpoint, data, **kw)

    monkeypatch.setattr(telegram.Bot, "_do_post", recording)
    return calls


@pytest.fixture
async def tgi() -> AsyncIterator[TGIServer]:
    async with TGIServer() as server:
        yield server


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


def make_settings(tg: FakeTelegram, model_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = dict(
        database_url="sqlite+aiosqlite://",  # unused: the store fixture is passed in
        llm_url=model_url,
        llm_retries=0,
        llm_timeout_s=5.0,
        turn_deadline_s=10.0,
        rate_limit_messages=1000,
        max_waiting_per_person=1000,
        max_tokens=1500,  # some replies here run to several messages; the engine cuts at max_tokens
        # The double serves BD-RP, which "auto" would answer in the training layout; these tests read
        # chat requests (the layout choice has tests of its own in tests/llm and tests/engine).
        prompt_layout="chat",
        telegram_token=tg.token,
        telegram_api_base=tg.base_url,
        telegram_file_base=tg.file_base_url,
        owner_ids=[f"telegram:{OWNER_ID}"],
        # With Redis, a first sweep that finds no liveness epoch presumes owners alive for one lease
        # (the cache may have restarted empty), and the poller is elected on a lease: a short lease
        # keeps recovery tests quick.
        replica_lease_s=1.0,
    )
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class Harness:
    """A running bot: the App behind it, the PTB Application, the fake Bot API and the fake model."""

    app: App
    application: Application
    tg: FakeTelegram
    tgi: TGIServer

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until every update sent so far has been fetched and handled."""
        polling = self.app.settings.telegram_webhook_url is None
        await self.tg.wait_for(lambda: self.tg.pending == 0 and (self.tg.holding or not polling), timeout, "the bot to fetch every update")
        await asyncio.wait_for(self.application.update_queue.join(), timeout)
        await self.app.engine.drain()

    async def add_character(self, name: str = "Hamlet", *, public: bool = True, greeting: str = "") -> Character:
        owner = Actor("telegram", str(OWNER_ID), "Owner", is_owner=True)
        fields = dict(name=name, world="Elsinore", traits="brooding,witty", mbti="INFP", style="poetic", public=public, greeting=greeting)
        outcome = await self.app.commands.create_character(owner, None, fields)
        assert outcome.ok and outcome.character is not None, outcome.message
        return outcome.character

    async def bind(self, chat_id: int, name: str, trigger: str = "mention") -> None:
        owner = Actor("telegram", str(OWNER_ID), "Owner", is_owner=True)
        outcome = await self.app.commands.bind(owner, Place("telegram", str(chat_id), str(chat_id)), name, trigger)
        assert outcome.ok, outcome.message


@contextlib.asynccontextmanager
async def running_bot(store, cache, tg: FakeTelegram, tgi: TGIServer, *, tuning: Tuning = FAST,
                      model_url: str | None = None, **settings: Any) -> AsyncIterator[Harness]:
    """Build the App with ``wire`` and serve the Telegram adapter until the block ends."""
    config = make_settings(tg, model_url or tgi.base_url, **settings)
    model = model_client(config, config.llm_url)  # type: ignore[arg-type]
    app = wire(config, store, cache, model)
    application = build_application(app, tuning)
    try:
        # As `personae run` does: the replica's liveness lease is held while it serves.
        async with alive(app.cache, app.replica, config.replica_lease_s), serving(application, config, tuning, app=app):
            yield Harness(app, application, tg, tgi)
    finally:
        await app.engine.drain()
        await model.close()


@pytest.fixture
async def bot(store, cache, tg: FakeTelegram, tgi: TGIServer) -> AsyncIterator[Harness]:
    """The bot polling the fake Bot API, with the default settings of these tests."""
    async with running_bot(store, cache, tg, tgi) as harness:
        yield harness
