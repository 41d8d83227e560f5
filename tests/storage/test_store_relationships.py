"""Relationship states: created once even under a race, updated optimistically, audited for the winner only."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import sqlalchemy as sa

from core.emotions import EmotionState
from core.errors import NotFound
from storage.tables import relationship_states, state_changes
from tests.storage.helpers import card, change, person, state


async def rows(store, table: sa.Table) -> int:
    async with store.engine.connect() as conn:
        return (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()


async def test_get_or_create_inserts_version_0_then_returns_the_stored_state(store) -> None:
    hamlet = await store.characters.add(card())
    assert await store.relationships.get(person(hamlet.id)) is None
    created = await store.relationships.get_or_create(state(hamlet.id, happiness=4, version=7))
    assert created.version == 0 and created.emotion == EmotionState(happiness=4) and created.intimacy == 3
    assert created.updated_at.tzinfo is not None

    again = await store.relationships.get_or_create(state(hamlet.id, happiness=9))
    assert again.emotion == EmotionState(happiness=4)
    assert await store.relationships.get(person(hamlet.id)) == again


async def test_concurrent_get_or_create_makes_one_row(store) -> None:
    hamlet = await store.characters.add(card())
    results = await asyncio.gather(*(store.relationships.get_or_create(state(hamlet.id, happiness=i)) for i in range(10)))
    assert len({r.emotion for r in results}) == 1
    assert await rows(store, relationship_states) == 1


async def test_get_or_create_for_a_missing_character_is_not_found(store) -> None:
    with pytest.raises(NotFound):
        await store.relationships.get_or_create(state(4242))


async def test_update_writes_the_new_state_and_an_audit_row(store) -> None:
    hamlet = await store.characters.add(card())
    before = await store.relationships.get_or_create(state(hamlet.id))
    assert await store.relationships.update(change(before, happiness=6, appraiser="llm", message_id=17))
    stored = await store.relationships.get(person(hamlet.id))
    assert stored.version == 1 and stored.emotion.happiness == 6

    [audit] = await store.relationships.changes(person(hamlet.id))
    assert audit.appraiser == "llm" and audit.message_id == 17 and audit.reason == "to 6"
    assert audit.before.version == 0 and audit.before.emotion.happiness == 0
    assert audit.after.version == 1 and audit.after.emotion.happiness == 6


async def test_two_concurrent_updates_from_one_version_have_exactly_one_winner(store) -> None:
    hamlet = await store.characters.add(card())
    before = await store.relationships.get_or_create(state(hamlet.id))
    attempts = [change(before, happiness=h, appraiser=f"a{h}") for h in (2, 8)]
    results = await asyncio.gather(*(store.relationships.update(c) for c in attempts))
    assert sorted(results) == [False, True]
    winner = attempts[results.index(True)]

    stored = await store.relationships.get(person(hamlet.id))
    assert stored.version == 1 and stored.emotion == winner.after.emotion
    audit = await store.relationships.changes(person(hamlet.id))
    assert [a.appraiser for a in audit] == [winner.appraiser]
    assert await rows(store, state_changes) == 1


async def test_an_update_from_a_stale_version_fails_and_audits_nothing(store) -> None:
    hamlet = await store.characters.add(card())
    v0 = await store.relationships.get_or_create(state(hamlet.id))
    assert await store.relationships.update(change(v0, happiness=1))
    assert not await store.relationships.update(change(v0, happiness=2))
    assert (await store.relationships.get(person(hamlet.id))).emotion.happiness == 1
    assert len(await store.relationships.changes(person(hamlet.id))) == 1


async def test_an_update_must_advance_the_version_by_one(store) -> None:
    hamlet = await store.characters.add(card())
    v0 = await store.relationships.get_or_create(state(hamlet.id))
    bad = dataclasses.replace(change(v0, happiness=1), after=state(hamlet.id, version=5))
    with pytest.raises(ValueError):
        await store.relationships.update(bad)


async def test_an_update_of_a_state_that_does_not_exist_fails(store) -> None:
    hamlet = await store.characters.add(card())
    assert not await store.relationships.update(change(state(hamlet.id), happiness=3))
    assert await store.relationships.changes(person(hamlet.id)) == []


async def test_changes_are_newest_first_within_the_limit_and_per_person(store) -> None:
    hamlet = await store.characters.add(card())
    current = await store.relationships.get_or_create(state(hamlet.id))
    for h in range(1, 6):
        step = change(current, happiness=h)
        assert await store.relationships.update(step)
        current = step.after
    other = await store.relationships.get_or_create(state(hamlet.id, "u2"))
    assert await store.relationships.update(change(other, happiness=9))

    audit = await store.relationships.changes(person(hamlet.id), limit=3)
    assert [a.after.emotion.happiness for a in audit] == [5, 4, 3]
    assert [a.after.version for a in audit] == [5, 4, 3]
    assert len(await store.relationships.changes(person(hamlet.id, "u2"))) == 1
