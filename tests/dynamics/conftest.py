"""Worlds for the feelings tests: the real Engine on every storage backend, the TGI-protocol double
as the model, and helpers to read the state a person has with the character."""

from __future__ import annotations

import uuid
from typing import AsyncIterator

import pytest

from core.cards import new_card
from core.events import PersonKey, Platform
from core.state import RelationshipState
from tests.engine.conftest import World, build_world
from tests.tgi_server import TGIServer

ZH_CARD = dict(
    world="唐朝长安",
    traits=["温柔", "聪慧", "坚定"],
    mbti="INFJ",
    style=["含蓄", "典雅"],
    language="zh",
    scene="长安城的夜晚，月光洒在石板路上。",
    emotion={"happiness": 3, "sadness": 4, "disgust": 1, "fear": 2, "surprise": 2, "anger": 1},
    relationship=5,
)


@pytest.fixture
async def tgi() -> AsyncIterator[TGIServer]:
    async with TGIServer() as server:
        yield server


async def zh_world(store, cache, tgi: TGIServer, **settings) -> World:
    """A world whose bound character speaks Chinese (the Hamlet of ``build_world`` is unbound here)."""
    world = await build_world(store, cache, tgi, **settings)
    name = f"李白-{uuid.uuid4().hex[:6]}"
    await store.characters.add(new_card(name=name, **ZH_CARD))
    outcome = await world.app.commands.bind(world.admin, world.place, name)
    assert outcome.ok, outcome.message
    world.character_name = name
    return world


async def person(world: World, user: str = "u1") -> PersonKey:
    character = await world.app.store.characters.get_by_name(world.character_name)
    return PersonKey(character.id, Platform.DISCORD, user)


async def stored_state(world: World, user: str = "u1") -> RelationshipState:
    state = await world.app.store.relationships.get(await person(world, user))
    assert state is not None
    return state


def levels(state: RelationshipState) -> dict[str, int]:
    return {**state.emotion.as_dict(), "intimacy": state.intimacy}


async def close(world: World) -> None:
    await world.app.engine.drain()
    await world.app.model.close()
