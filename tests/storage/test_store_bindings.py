"""Bindings: one per (platform, channel), replaced by a second put, deleted on request."""

from __future__ import annotations

import pytest

from core.errors import NotFound
from core.events import Trigger
from core.state import Binding
from tests.storage.helpers import card


async def test_put_then_get_returns_the_binding(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"))
    binding = Binding("discord", "guild-1", "chan-1", hamlet.id, Trigger.MENTION, scene="A stormy night.", private=False)
    await store.bindings.put(binding)
    got = await store.bindings.get("discord", "chan-1")
    assert got == binding
    assert isinstance(got.trigger, Trigger)
    assert await store.bindings.get("telegram", "chan-1") is None
    assert await store.bindings.get("discord", "chan-2") is None


async def test_a_second_put_replaces_the_channels_binding(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"))
    ophelia = await store.characters.add(card("Ophelia"))
    await store.bindings.put(Binding("telegram", "42", "42", hamlet.id, Trigger.ALL, scene="old"))
    await store.bindings.put(Binding("telegram", "42", "42", ophelia.id, Trigger.MENTION, scene=None, private=True))
    got = await store.bindings.get("telegram", "42")
    assert got == Binding("telegram", "42", "42", ophelia.id, Trigger.MENTION, scene=None, private=True)


async def test_delete_says_whether_there_was_a_binding(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"))
    await store.bindings.put(Binding("discord", "g", "c", hamlet.id))
    assert await store.bindings.delete("discord", "c") is True
    assert await store.bindings.get("discord", "c") is None
    assert await store.bindings.delete("discord", "c") is False


async def test_binding_a_missing_character_is_not_found(store) -> None:
    with pytest.raises(NotFound):
        await store.bindings.put(Binding("discord", "g", "c", 9999))
    assert await store.bindings.get("discord", "c") is None
