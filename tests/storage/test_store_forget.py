"""Forgetting a person deletes their messages, states, audit rows and memories for every character, and nothing else."""

from __future__ import annotations

from core.events import Trigger
from core.memory import NewMemory
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
            remembered = NewMemory("fact", f"{user} likes tea", 1, 2, 5)
            assert await store.memories.condensed(conversation(who.id, user), 0, 2, [remembered], [])
    # The same user id on another platform is another person.
    other_platform = conversation(hamlet.id, "forget-me")
    other_platform = type(other_platform)(hamlet.id, "telegram", "c1", "forget-me")
    await store.messages.add_exchange(other_platform, ("q", 1, None), None)

    counts = await store.forget_person("discord", "forget-me")
    assert counts == {"messages": 6, "states": 2, "changes": 2, "memories": 2}

    for who in (hamlet, ophelia):
        assert await store.messages.recent(conversation(who.id, "forget-me"), 10) == []
        assert await store.relationships.get(person(who.id, "forget-me")) is None
        assert await store.relationships.changes(person(who.id, "forget-me")) == []
        assert await store.memories.list(conversation(who.id, "forget-me")) == []
        # The condensed mark went too: the person's next history is condensed from its start.
        assert (await store.memories.uncondensed(conversation(who.id, "forget-me"), 0, 10))[0] == 0
        assert [m.text for m in await store.memories.list(conversation(who.id, "keep-me"))] == ["keep-me likes tea"]
        assert len(await store.messages.recent(conversation(who.id, "keep-me"), 10)) == 2
        assert await store.relationships.get(person(who.id, "keep-me")) is not None
        assert len(await store.relationships.changes(person(who.id, "keep-me"))) == 1
    assert len(await store.messages.recent(other_platform, 10)) == 1
    assert await store.bindings.get("discord", "c1") is not None
    assert len(await store.characters.list()) == 2
    assert await store.forget_person("discord", "forget-me") == {"messages": 0, "states": 0, "changes": 0, "memories": 0}
