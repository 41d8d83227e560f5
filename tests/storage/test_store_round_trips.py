"""Round trips on the hot path, as the counter the benchmark reads sees them."""

from __future__ import annotations

import pytest

from tests.storage.helpers import card, change, conversation, state


async def delta(store, work) -> int:
    before = store.round_trips
    await work()
    return store.round_trips - before


# PostgreSQL only: SQLite runs in-process, where round trips cost nothing and an exchange is stored
# in a transaction.
@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
async def test_mark_processed_and_add_exchange_are_one_round_trip_each(store) -> None:
    hamlet = await store.characters.add(card())
    here = conversation(hamlet.id)
    for i in range(3):
        assert await delta(store, lambda: store.events.mark_processed("discord", f"e{i}")) == 1
        assert await delta(store, lambda: store.events.mark_processed("discord", f"e{i}")) == 1
        assert await delta(store, lambda: store.messages.add_exchange(here, ("q", 1, None), ("a", 1))) == 1
        assert await delta(store, lambda: store.messages.add_exchange(here, ("q", 1, None), None)) == 1


async def test_reads_are_one_round_trip(store) -> None:
    hamlet = await store.characters.add(card())
    assert await delta(store, lambda: store.characters.get(hamlet.id)) == 1
    assert await delta(store, lambda: store.messages.recent(conversation(hamlet.id), 10)) == 1
    assert await delta(store, lambda: store.bindings.get("discord", "c1")) == 1


# PostgreSQL only: SQLite has no data-modifying WITH, so there it is a transaction.
@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
async def test_a_state_update_with_its_audit_is_one_round_trip_on_postgresql(store) -> None:
    hamlet = await store.characters.add(card())
    before = await store.relationships.get_or_create(state(hamlet.id))
    assert await delta(store, lambda: store.relationships.update(change(before, happiness=2))) == 1
    assert await delta(store, lambda: store.relationships.update(change(before, happiness=3))) == 1


async def test_a_transaction_counts_its_begin_and_commit(store) -> None:
    # forget_person: BEGIN, six DELETEs (the character conversations the person's replies started,
    # messages, states, audit rows, memories, condensed marks), COMMIT; on PostgreSQL also the two
    # FOR UPDATE selects that lock the person's replies and their chains first (none found: one round).
    locks = 2 if store.engine.dialect.name == "postgresql" else 0
    assert await delta(store, lambda: store.forget_person("discord", "nobody")) == 8 + locks


@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
async def test_storing_a_message_on_arrival_and_settling_it_with_its_reply_are_one_round_trip_each(store) -> None:
    from core.state import MessageStatus

    hamlet = await store.characters.add(card())
    here = conversation(hamlet.id)
    for i in range(3):
        intake = None

        async def accept() -> None:
            nonlocal intake
            intake = await store.messages.accept(here, "q", 1, f"m{i}", "Ann")

        assert await delta(store, accept) == 1
        assert await delta(store, lambda: store.messages.accept(here, "q", 1, f"m{i}", "Ann")) == 1  # a redelivery
        assert await delta(store, lambda: store.messages.finish(intake, MessageStatus.ANSWERED, ("a", 1))) == 1
