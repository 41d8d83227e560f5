"""Memories per conversation scope, and the condensed mark that keeps a stretch from being condensed twice."""

from __future__ import annotations

from core.memory import NewMemory
from tests.storage.helpers import card, conversation


def fact(text: str, first: int = 1, last: int = 2) -> NewMemory:
    return NewMemory("fact", text, first, last, len(text) // 3 + 1)


async def talk(store, c, exchanges: int) -> None:
    for n in range(exchanges):
        await store.messages.add_exchange(c, (f"q{n}", 1, None), (f"a{n}", 1))


async def test_uncondensed_reads_what_left_the_window_after_the_mark(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"))
    c = conversation(hamlet.id)
    await talk(store, c, 5)  # ten messages
    mark, lines = await store.memories.uncondensed(c, keep=4, limit=100)
    assert mark == 0
    assert [(line.role, line.content) for line in lines] == [
        ("user", "q0"), ("assistant", "a0"), ("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2"),
    ]
    seqs = [line.seq for line in lines]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6
    assert [line.content for line in (await store.memories.uncondensed(c, keep=4, limit=2))[1]] == ["q0", "a0"]
    # A window larger than the conversation: nothing has left it.
    assert (await store.memories.uncondensed(c, keep=10, limit=100))[1] == []
    assert len((await store.memories.uncondensed(c, keep=0, limit=100))[1]) == 10

    assert await store.memories.condensed(c, 0, seqs[3], [fact("Elena keeps a blue lantern.")], [])
    mark, lines = await store.memories.uncondensed(c, keep=4, limit=100)
    assert mark == seqs[3] and [line.content for line in lines] == ["q2", "a2"]


async def test_condensed_moves_the_mark_only_from_where_it_was(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"))
    c = conversation(hamlet.id)
    assert await store.memories.condensed(c, 0, 6, [fact("first", 1, 6)], [])
    # A second condensing of the same stretch (another replica, read before the first wrote): nothing written.
    assert not await store.memories.condensed(c, 0, 6, [fact("again", 1, 6)], [])
    assert not await store.memories.condensed(c, 2, 8, [fact("stale", 3, 8)], [])
    assert [m.text for m in await store.memories.list(c)] == ["first"]
    [first] = await store.memories.list(c)
    assert await store.memories.condensed(c, 6, 10, [fact("second", 7, 10)], [first.id])
    [second] = await store.memories.list(c)
    assert (second.text, second.kind, second.seq_from, second.seq_to) == ("second", "fact", 7, 10)
    assert second.created_at.tzinfo is not None


async def test_memories_are_scoped_by_channel_and_person(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"))
    private, group, other = conversation(hamlet.id, "u1", "dm-1"), conversation(hamlet.id, "u1", "group"), conversation(hamlet.id, "u2", "group")
    assert await store.memories.condensed(private, 0, 2, [fact("told in private")], [])
    assert await store.memories.condensed(group, 0, 2, [fact("told in the group")], [])
    assert await store.memories.condensed(other, 0, 2, [fact("someone else")], [])
    assert [m.text for m in await store.memories.list(group)] == ["told in the group"]
    assert [m.text for m in await store.memories.list(private)] == ["told in private"]
    by_channel = await store.memories.of_person(hamlet.id, "discord", "u1")
    assert {k: [m.text for m in v] for k, v in by_channel.items()} == {"dm-1": ["told in private"], "group": ["told in the group"]}
    # Deleting names the conversation too: another person's memory id does not delete theirs.
    [theirs] = await store.memories.list(other)
    assert not await store.memories.delete(group, theirs.id)
    [mine] = await store.memories.list(group)
    assert await store.memories.delete(group, mine.id)
    assert await store.memories.list(group) == []
    assert not await store.memories.delete(group, mine.id)


async def test_reset_starts_the_mark_over_and_keeps_the_memories(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"))
    c = conversation(hamlet.id)
    await talk(store, c, 5)
    assert await store.memories.condensed(c, 0, 6, [fact("kept")], [])
    await store.messages.delete_conversation(c)
    await store.memories.reset(c)
    await talk(store, c, 5)  # the new history's seq starts over
    mark, lines = await store.memories.uncondensed(c, keep=4, limit=100)
    assert mark == 0 and [line.content for line in lines] == ["q0", "a0", "q1", "a1", "q2", "a2"]
    assert [m.text for m in await store.memories.list(c)] == ["kept"]
    assert await store.memories.condensed(c, 0, 6, [], [])


async def test_deleting_the_character_deletes_its_memories(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"))
    c = conversation(hamlet.id)
    assert await store.memories.condensed(c, 0, 2, [fact("gone with him")], [])
    await store.characters.delete(hamlet.id)
    assert await store.memories.list(c) == []
    assert (await store.memories.uncondensed(c, 0, 10))[0] == 0
