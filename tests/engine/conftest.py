"""An Engine wired to real storage (every backend) and the TGI-protocol test server."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest

from bots.compose import App, wire
from bots.llm.client import ModelClient
from bots.settings import Settings
from core.cards import new_card
from core.commands import Actor, Place
from core.events import ChatEvent, Platform
from tests.tgi_server import TGIServer


@pytest.fixture
async def tgi():
    async with TGIServer() as server:
        yield server


def make_settings(**overrides) -> Settings:
    base = dict(
        database_url="sqlite+aiosqlite://",
        llm_url="http://127.0.0.1:1",
        llm_retries=2,
        llm_timeout_s=5.0,
        turn_deadline_s=10.0,
        rate_limit_messages=1000,
        # Long-term memory is on with a model server (PERSONAE_MEMORY=auto); the suites that test it
        # turn it on, the others keep their request counts as they were.
        memory="off",
    )
    base.update(overrides)
    return Settings(**base)


@dataclass
class World:
    """One test's world: the app, a character bound to a channel, and helpers to talk in it."""

    app: App
    tgi: TGIServer
    character_name: str
    channel: str
    chat: str

    def event(self, text: str, *, user: str = "u1", name: str = "Elena", message_id: str | None = None, **kw) -> ChatEvent:
        fields = dict(
            platform=Platform.DISCORD,
            chat_id=self.chat,
            channel_id=self.channel,
            user_id=user,
            display_name=name,
            message_id=message_id or uuid.uuid4().hex,
            text=text,
        )
        fields.update(kw)
        return ChatEvent(**fields)

    async def say(self, text: str, **kw):
        reply = self.app.engine.handle(self.event(text, **kw))
        deltas = [d async for d in reply]
        return reply, deltas

    @property
    def admin(self) -> Actor:
        return Actor(Platform.DISCORD, "admin", "Admin", is_admin=True)

    @property
    def place(self) -> Place:
        return Place(Platform.DISCORD, self.chat, self.channel)


# Every app a test builds, so that its background work (state updates) ends with the test and
# cannot write into the next test's tables (tests/conftest.py drains them after each test).
built_apps: list[App] = []


async def build_world(store, cache, tgi: TGIServer, *, trigger: str = "all", greeting: str = "", **settings) -> World:
    client = ModelClient(tgi.base_url, timeout_s=5.0, concurrency=settings.pop("llm_concurrency", 8), retries=settings.pop("llm_retries", 2))
    app = wire(make_settings(llm_url=tgi.base_url, **settings), store, cache, client)
    built_apps.append(app)
    name = f"Hamlet-{uuid.uuid4().hex[:8]}"
    card = new_card(
        name=name,
        world="8th Century Danish Royalty",
        traits=["extreme", "strong", "decisive"],
        mbti="ENFJ",
        style=["indecisive", "decisive", "sentimental"],
        scene="Elsinore at night.",
        emotion={"happiness": 1, "sadness": 8, "disgust": 5, "fear": 7, "surprise": 6, "anger": 4},
        relationship=7,
        greeting=greeting,
    )
    await store.characters.add(card)
    world = World(app, tgi, name, channel=f"chan-{uuid.uuid4().hex[:8]}", chat=f"guild-{uuid.uuid4().hex[:8]}")
    outcome = await app.commands.bind(world.admin, world.place, name, trigger)
    assert outcome.ok, outcome.message
    return world


@pytest.fixture
async def world(store, cache, tgi):
    w = await build_world(store, cache, tgi)
    yield w
    await w.app.engine.drain()
    await w.app.model.close()
