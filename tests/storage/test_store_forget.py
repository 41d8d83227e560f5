"""Forgetting a person deletes their messages, states and audit rows for every character, and nothing else."""

from __future__ import annotations

from core.events import Trigger
from core.state import Binding
from tests.storage.helpers import card, change, conversation, person, state


async def test_forget_person_deletes_only_that_persons_rows(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"))
    ophelia = await store.characters.add(card("Ophelia"))
    await store.bindings.put(Binding("discord", "g", "c1", hamlet.id, Trigger.ALL))
    for who in (hamlet, ophelia):
        for user in ("forget-me", "keep-me"):
            await store.messages.add_exchange(conversation(who.id, user), ("q", 1, None), ("a", 1))
            await store.messages.add_exchange(conversation(who.id, user, "c2"), ("q", 1, None), None)
            created = await store.relationships.get_or_create(state(who.id, user))
            assert await store.relationships.update(change(created, happiness=3))
    # The same user id on another platform is another person.
    other_platform = conversation(hamlet.id, "forget-me")
    other_platform = type(other_platform)(hamlet.id, "telegram", "c1", "forget-me")
    await store.messages.add_exchange(other_platform, ("q", 1, None), None)

    counts = await store.forget_person("discord", "forget-me")
    assert counts == {"messages": 6, "states": 2, "changes": 2}

    for who in (hamlet, ophelia):
        assert await store.messages.recent(conversation(who.id, "forget-me"), 10) == []
        assert await store.relationships.get(person(who.id, "forget-me")) is None
        assert await store.relationships.changes(person(who.id, "forget-me")) == []
        assert len(await store.messages.recent(conversation(who.id, "keep-me"), 10)) == 2
        assert await store.relationships.get(person(who.id, "keep-me")) is not None
        assert len(await store.relationships.changes(person(who.id, "keep-me"))) == 1
    assert len(await store.messages.recent(other_platform, 10)) == 1
    assert await store.bindings.get("discord", "c1") is not None
    assert len(await store.characters.list()) == 2
    assert await store.forget_person("discord", "forget-me") == {"messages": 0, "states": 0, "changes": 0}
