"""Messages: exchanges stored together, recent history oldest first, replies replaced, conversations reset."""

from __future__ import annotations

import pytest

from core.errors import NotFound
from tests.storage.helpers import card, conversation


async def test_add_exchange_returns_both_ids_in_order(store) -> None:
    hamlet = await store.characters.add(card())
    user_id, reply_id = await store.messages.add_exchange(conversation(hamlet.id), ("To be?", 3, "m-1"), ("Or not.", 2))
    assert isinstance(user_id, int) and isinstance(reply_id, int) and user_id < reply_id

    [user, reply] = await store.messages.recent(conversation(hamlet.id), 10)
    assert (user.id, user.role, user.content, user.tokens, user.platform_message_id) == (user_id, "user", "To be?", 3, "m-1")
    assert (reply.id, reply.role, reply.content, reply.tokens, reply.platform_message_id) == (reply_id, "assistant", "Or not.", 2, None)
    assert user.created_at.tzinfo is not None


async def test_an_exchange_without_a_reply_stores_the_user_message_only(store) -> None:
    hamlet = await store.characters.add(card())
    user_id, reply_id = await store.messages.add_exchange(conversation(hamlet.id), ("Hello?", 1, None), None)
    assert reply_id is None
    assert [m.id for m in await store.messages.recent(conversation(hamlet.id), 10)] == [user_id]


async def test_recent_returns_the_newest_messages_oldest_first(store) -> None:
    hamlet = await store.characters.add(card())
    here = conversation(hamlet.id)
    for i in range(5):
        await store.messages.add_exchange(here, (f"q{i}", 1, f"m{i}"), (f"a{i}", 1))
    assert [m.content for m in await store.messages.recent(here, 4)] == ["q3", "a3", "q4", "a4"]
    assert len(await store.messages.recent(here, 100)) == 10
    assert await store.messages.recent(here, 0) == []


async def test_conversations_are_kept_apart_by_person_channel_and_character(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"))
    ophelia = await store.characters.add(card("Ophelia"))
    keys = [conversation(hamlet.id), conversation(hamlet.id, "u2"), conversation(hamlet.id, channel_id="c2"), conversation(ophelia.id)]
    for i, key in enumerate(keys):
        await store.messages.add_exchange(key, (f"to {i}", 1, None), (f"from {i}", 1))
    for i, key in enumerate(keys):
        assert [m.content for m in await store.messages.recent(key, 10)] == [f"to {i}", f"from {i}"]


async def test_replace_reply_changes_a_reply_but_not_a_user_message(store) -> None:
    hamlet = await store.characters.add(card())
    user_id, reply_id = await store.messages.add_exchange(conversation(hamlet.id), ("q", 1, None), ("a", 1))
    assert await store.messages.replace_reply(reply_id, "a better answer", 3)
    assert not await store.messages.replace_reply(user_id, "hijack", 1)
    assert not await store.messages.replace_reply(reply_id + 100, "nothing", 1)
    [user, reply] = await store.messages.recent(conversation(hamlet.id), 10)
    assert (user.content, reply.content, reply.tokens) == ("q", "a better answer", 3)


async def test_delete_conversation_counts_what_it_deleted_and_spares_the_rest(store) -> None:
    hamlet = await store.characters.add(card())
    await store.messages.add_exchange(conversation(hamlet.id), ("q", 1, None), ("a", 1))
    await store.messages.add_exchange(conversation(hamlet.id), ("q", 1, None), None)
    await store.messages.add_exchange(conversation(hamlet.id, "u2"), ("q", 1, None), ("a", 1))
    assert await store.messages.delete_conversation(conversation(hamlet.id)) == 3
    assert await store.messages.recent(conversation(hamlet.id), 10) == []
    assert len(await store.messages.recent(conversation(hamlet.id, "u2"), 10)) == 2
    assert await store.messages.delete_conversation(conversation(hamlet.id)) == 0


async def test_an_exchange_for_a_deleted_character_is_not_found(store) -> None:
    with pytest.raises(NotFound):
        await store.messages.add_exchange(conversation(777), ("q", 1, None), ("a", 1))


async def test_a_message_is_stored_once_per_delivery_and_settled_once(store) -> None:
    from core.state import MessageStatus

    hamlet = await store.characters.add(card())
    here = conversation(hamlet.id)
    first = await store.messages.accept(here, "To be?", 3, "m-1", "Ann")
    again = await store.messages.accept(here, "To be?", 3, "m-1", "Ann")
    assert first.first and not again.first
    assert again.id == first.id and again.status is MessageStatus.PENDING and again.display_name == "Ann"
    assert [i.id for i in await store.messages.pending("discord")] == [first.id]
    assert await store.messages.recent(here, 10) == []  # pending: not yet part of the history
    user_id, reply_id, _ = await store.messages.finish(first, MessageStatus.ANSWERED, ("Or not.", 2))
    assert user_id == first.id and reply_id is not None
    assert await store.messages.finish(first, MessageStatus.ANSWERED, ("Twice?", 1)) is None
    assert [m.content for m in await store.messages.recent(here, 10)] == ["To be?", "Or not."]
    assert await store.messages.pending("discord") == []
    settled = await store.messages.accept(here, "To be?", 3, "m-1", "Ann")
    assert settled.status is MessageStatus.ANSWERED and not settled.first


async def test_the_same_platform_message_id_in_two_channels_is_stored_twice(store) -> None:
    hamlet = await store.characters.add(card())
    here, there = conversation(hamlet.id, channel_id="c1"), conversation(hamlet.id, channel_id="c2")
    first = await store.messages.accept(here, "To be?", 3, "m-1", "Ann")
    other = await store.messages.accept(there, "Or not?", 3, "m-1", "Ann")
    assert first.first and other.first and first.id != other.id
    assert (other.conversation.channel_id, other.text) == ("c2", "Or not?")
    again = await store.messages.accept(there, "Or not?", 3, "m-1", "Ann")
    assert not again.first and again.id == other.id
    assert sorted(i.id for i in await store.messages.pending("discord")) == sorted([first.id, other.id])


async def test_on_first_contact_the_greeting_is_stored_before_the_message(store) -> None:
    from core.state import MessageStatus

    hamlet = await store.characters.add(card())
    here = conversation(hamlet.id)
    intake = await store.messages.accept(here, "Hello?", 1, "m-1", "Ann")
    user_id, reply_id, greeting_id = await store.messages.finish(intake, MessageStatus.ANSWERED, ("Well met.", 2), ("Who's there?", 2))
    assert user_id == intake.id  # the message keeps its row: its id is the record of the delivery
    assert [(m.role, m.content) for m in await store.messages.recent(here, 10)] == [
        ("assistant", "Who's there?"), ("user", "Hello?"), ("assistant", "Well met.")
    ]
    assert (await store.messages.accept(here, "Hello?", 1, "m-1", "Ann")).id == user_id  # still the record of the delivery


async def test_a_message_joins_the_history_when_it_is_answered_not_when_it_arrives(store) -> None:
    # m2 arrives while m1 is answered: stored before reply 1, it comes after it in the history.
    from core.state import MessageStatus

    hamlet = await store.characters.add(card())
    here = conversation(hamlet.id)
    m1 = await store.messages.accept(here, "One?", 1, "m-1", "Ann")
    m2 = await store.messages.accept(here, "Two?", 1, "m-2", "Ann")
    _, r1, greeting = await store.messages.finish(m1, MessageStatus.ANSWERED, ("Reply one.", 2), ("Who's there?", 2))
    _, r2, _ = await store.messages.finish(m2, MessageStatus.ANSWERED, ("Reply two.", 2))
    assert m1.id < m2.id < greeting < r1 < r2
    assert [m.id for m in await store.messages.recent(here, 10)] == [greeting, m1.id, r1, m2.id, r2]
    assert [m.id for m in await store.messages.recent(here, 2)] == [m2.id, r2]
    assert [await store.messages.position(here, m) for m in (m1.id, m2.id)] == [1, 2]
    # Taking back the newest exchange takes m2 only.
    assert await store.messages.undo_exchange(here, r2)
    assert [m.id for m in await store.messages.recent(here, 10)] == [greeting, m1.id, r1]
    # A message answered next joins after reply one.
    m3 = await store.messages.accept(here, "Three?", 1, "m-3", "Ann")
    await store.messages.finish(m3, MessageStatus.ANSWERED, ("Reply three.", 2))
    assert [m.content for m in await store.messages.recent(here, 10)][-3:] == ["Reply one.", "Three?", "Reply three."]
