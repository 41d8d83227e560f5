"""Storage for scenes: several bindings per channel, a channel's lines across its conversations,
and the platform messages replies were shown in (gone with the reply and with /forget)."""

from __future__ import annotations

from core.events import ConversationKey, Trigger
from core.state import Binding, MessageStatus
from tests.storage.helpers import card


async def test_several_characters_share_a_channel_and_put_still_makes_one_binding(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"))
    ophelia = await store.characters.add(card("Ophelia"))
    await store.bindings.put(Binding("discord", "g", "c", hamlet.id, Trigger.ALL))
    await store.bindings.add(Binding("discord", "g", "c", ophelia.id, Trigger.ALL))
    assert [b.character_id for b in await store.bindings.list("discord", "c")] == [hamlet.id, ophelia.id]
    assert (await store.bindings.get("discord", "c")).character_id == hamlet.id  # the first bound
    await store.bindings.add(Binding("discord", "g", "c", ophelia.id, Trigger.CONVERSATION, scene="Night."))
    cast = await store.bindings.list("discord", "c")
    assert len(cast) == 2 and cast[1].trigger is Trigger.CONVERSATION and cast[1].scene == "Night."
    assert await store.bindings.remove("discord", "c", hamlet.id) is True
    assert await store.bindings.remove("discord", "c", hamlet.id) is False
    assert [b.character_id for b in await store.bindings.list("discord", "c")] == [ophelia.id]
    await store.bindings.add(Binding("discord", "g", "c", hamlet.id))
    await store.bindings.put(Binding("discord", "g", "c", hamlet.id, Trigger.MENTION))
    assert [(b.character_id, b.trigger) for b in await store.bindings.list("discord", "c")] == [(hamlet.id, Trigger.MENTION)]


async def exchange(store, conversation: ConversationKey, text: str, reply: str, message_id: str, name: str):
    intake = await store.messages.accept(conversation, text, 3, message_id, name)
    return await store.messages.finish(intake, MessageStatus.ANSWERED, (reply, 3))


async def test_a_channels_lines_cross_its_conversations_and_never_leave_it(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"))
    ophelia = await store.characters.add(card("Ophelia"))
    bob_h = ConversationKey(hamlet.id, "discord", "c", "bob")
    elena_h = ConversationKey(hamlet.id, "discord", "c", "elena")
    bob_o = ConversationKey(ophelia.id, "discord", "c", "bob")
    await exchange(store, elena_h, "I saw a ghost", "Follow it", "m1", "Elena")
    await exchange(store, bob_o, "Good evening", "Good night", "m2", "Bob")
    await exchange(store, ConversationKey(hamlet.id, "discord", "elsewhere", "elena"), "secret", "hush", "m3", "Elena")
    await exchange(store, bob_h, "What did you say?", "Follow it", "m4", "Bob")
    pending = await store.messages.accept(elena_h, "still pending", 3, "m5", "Elena")
    lines = await store.messages.channel_lines("discord", "c", exclude=bob_h, before_id=pending.id + 1)
    assert [(line.role, line.content, line.display_name) for line in lines] == [
        ("user", "I saw a ghost", "Elena"), ("assistant", "Follow it", None),
        ("user", "Good evening", "Bob"), ("assistant", "Good night", None),
    ]
    assert [line.character_id for line in lines] == [hamlet.id, hamlet.id, ophelia.id, ophelia.id]
    first = lines[0].id
    assert await store.messages.channel_lines("discord", "c", before_id=first) == []
    assert len(await store.messages.channel_lines("discord", "c", limit=2)) == 2
    assert await store.messages.last_partner("discord", "c", "bob") == hamlet.id
    assert await store.messages.last_partner("discord", "c", "nobody") is None


async def test_where_a_reply_was_shown_leads_to_its_character_until_the_reply_or_its_person_is_gone(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"))
    bob = ConversationKey(hamlet.id, "telegram", "-100", "bob")
    _, reply_id, _ = await exchange(store, bob, "hi", "hail", "1", "Bob")
    await store.messages.mark_shown(reply_id, "telegram", "-100", ["11", "12", "11"])
    assert await store.messages.reply_author("telegram", "-100", "12") == hamlet.id
    assert await store.messages.reply_author("telegram", "-999", "12") is None
    assert await store.messages.shown_reply("telegram", "-100", "11") == reply_id
    assert await store.messages.shown_reply("telegram", "-999", "11") is None
    await store.messages.mark_shown(reply_id, "telegram", "-100", ["12"])  # again (a regenerate): no error
    await store.messages.mark_shown(10**9, "telegram", "-100", ["13"])  # a reply that is gone: nothing kept
    assert await store.messages.reply_author("telegram", "-100", "13") is None
    assert await store.messages.undo_exchange(bob, reply_id)
    assert await store.messages.reply_author("telegram", "-100", "11") is None
    assert await store.messages.shown_reply("telegram", "-100", "11") is None
    _, again, _ = await exchange(store, bob, "hi again", "hail again", "2", "Bob")
    await store.messages.mark_shown(again, "telegram", "-100", ["21"])
    await store.forget_person("telegram", "bob")
    assert await store.messages.reply_author("telegram", "-100", "21") is None


async def test_forgetting_a_person_takes_the_character_conversations_their_replies_started(store) -> None:
    """With trigger conversation, a character's reply to Bob that names another character is answered by
    that one (a user row of conversation ``character:ID``, stored with the platform message the reply was
    shown in), and so on. Forgetting Bob deletes those chains, follow-ups of follow-ups included, and
    leaves the chains another person's replies started."""
    hamlet = await store.characters.add(card("Hamlet"))
    ophelia = await store.characters.add(card("Ophelia"))

    def key(character, user: str) -> ConversationKey:
        return ConversationKey(character.id, "discord", "c", user)

    ophelia_hears_hamlet = key(ophelia, f"character:{hamlet.id}")
    hamlet_hears_ophelia = key(hamlet, f"character:{ophelia.id}")
    # Bob's exchange with Hamlet, shown in two messages; Ophelia answers its last one, Hamlet answers hers.
    _, bobs_reply, _ = await exchange(store, key(hamlet, "bob"), "Hamlet, speak.", "Ophelia, what say you?", "b1", "Bob")
    await store.messages.mark_shown(bobs_reply, "discord", "c", ["h1", "h2"])
    _, first, _ = await exchange(store, ophelia_hears_hamlet, "Ophelia, what say you?", "Hamlet, I say yes.", "h2", "Hamlet")
    await store.messages.mark_shown(first, "discord", "c", ["o1"])
    _, second, _ = await exchange(store, hamlet_hears_ophelia, "Hamlet, I say yes.", "Then yes it is.", "o1", "Ophelia")
    await store.messages.mark_shown(second, "discord", "c", ["h3"])
    # Elena's exchange with Hamlet starts a chain in the same character conversation: it stays.
    _, elenas_reply, _ = await exchange(store, key(hamlet, "elena"), "Hamlet?", "Ophelia, look.", "e1", "Elena")
    await store.messages.mark_shown(elenas_reply, "discord", "c", ["h9"])
    _, kept, _ = await exchange(store, ophelia_hears_hamlet, "Ophelia, look.", "I see it.", "h9", "Hamlet")
    await store.messages.mark_shown(kept, "discord", "c", ["o9"])
    # Someone else's thread in another channel with a platform message id like one of Bob's: untouched.
    await exchange(store, ConversationKey(ophelia.id, "discord", "other", f"character:{hamlet.id}"), "x", "y", "h2", "Hamlet")

    counts = await store.forget_person("discord", "bob")

    assert counts["messages"] == 2 + 4  # Bob's exchange, and the chain's two exchanges
    lines = await store.messages.channel_lines("discord", "c")
    # Ophelia's copy of Hamlet's "Ophelia, look." is his reply to Elena, a line of its own: read once.
    assert [line.content for line in lines] == ["Hamlet?", "Ophelia, look.", "I see it."]
    assert [m.content for m in await store.messages.recent(ophelia_hears_hamlet, 10)] == ["Ophelia, look.", "I see it."]
    assert await store.messages.recent(hamlet_hears_ophelia, 10) == []
    assert await store.messages.reply_author("discord", "c", "o1") is None
    assert await store.messages.reply_author("discord", "c", "h3") is None
    assert await store.messages.reply_author("discord", "c", "o9") == ophelia.id
    assert len(await store.messages.channel_lines("discord", "other")) == 2


async def test_overheard_lines_are_the_channels_only_and_it_keeps_the_newest(store) -> None:
    hamlet = await store.characters.add(card("Hamlet"))
    ophelia = await store.characters.add(card("Ophelia"))
    bob_h = ConversationKey(hamlet.id, "discord", "c", "bob")
    elena_h = ConversationKey(hamlet.id, "discord", "c", "elena")
    first = await store.messages.overhear(elena_h, "the dragon is behind the door", 6, "o1", "Elena", keep=3)
    assert first is not None
    assert await store.messages.overhear(elena_h, "the dragon is behind the door", 6, "o1", "Elena", keep=3) is None  # redelivered
    await exchange(store, bob_h, "Where is it?", "Behind the door", "m1", "Bob")
    await store.messages.overhear(bob_h, "I said nothing", 3, "o2", "Bob", keep=3)
    await store.messages.overhear(ConversationKey(ophelia.id, "discord", "elsewhere", "elena"), "elsewhere", 1, "o3", "Elena", keep=1)
    # In every conversation's scene, the person's own included; in no history, pending or partner.
    lines = await store.messages.channel_lines("discord", "c", exclude=bob_h)
    assert [(line.content, line.display_name) for line in lines] == [
        ("the dragon is behind the door", "Elena"), ("I said nothing", "Bob"),
    ]
    assert len(await store.messages.channel_lines("discord", "c", exclude=elena_h)) == 4
    assert [m.content for m in await store.messages.recent(bob_h, 10)] == ["Where is it?", "Behind the door"]
    assert await store.messages.recent(elena_h, 10) == []
    assert await store.messages.pending("discord") == []
    assert await store.messages.last_partner("discord", "c", "elena") is None
    # Never condensed into a memory as if said to the character.
    assert (await store.memories.uncondensed(elena_h, 0, 10))[1] == []
    assert [line.content for line in (await store.memories.uncondensed(bob_h, 0, 10))[1]] == ["Where is it?", "Behind the door"]
    # The channel keeps its newest ``keep`` overheard lines, whoever said them; other channels are apart.
    for n in range(4):
        await store.messages.overhear(elena_h, f"line {n}", 2, f"o-{n}", "Elena", keep=3)
    lines = await store.messages.channel_lines("discord", "c")
    assert [line.content for line in lines] == ["Where is it?", "Behind the door", "line 1", "line 2", "line 3"]
    assert [line.content for line in await store.messages.channel_lines("discord", "elsewhere")] == ["elsewhere"]
    # /reset of a thread leaves the person's overheard lines; /forget takes them.
    assert await store.messages.delete_conversation(bob_h) == 2
    assert await store.forget_person("discord", "elena") == {"messages": 4, "states": 0, "changes": 0, "memories": 0}
    assert await store.messages.channel_lines("discord", "c") == []


async def chain_in(store):
    """Bob's exchange with Hamlet, whose reply (shown in b-shown) Ophelia answered, and Hamlet her
    answer (shown in o-shown): the conversation, Hamlet's reply's id, and the two character conversations."""
    hamlet = await store.characters.add(card("Hamlet"))
    ophelia = await store.characters.add(card("Ophelia"))
    bob = ConversationKey(hamlet.id, "discord", "c", "bob")
    ophelia_hears_hamlet = ConversationKey(ophelia.id, "discord", "c", f"character:{hamlet.id}")
    hamlet_hears_ophelia = ConversationKey(hamlet.id, "discord", "c", f"character:{ophelia.id}")
    _, reply, _ = await exchange(store, bob, "Hamlet, speak.", "Ophelia, what say you?", "b1", "Bob")
    await store.messages.mark_shown(reply, "discord", "c", ["b-shown"])
    copy = await store.messages.accept(ophelia_hears_hamlet, "Ophelia, what say you?", 3, "b-shown", "Hamlet", answering=reply)
    _, answer, _ = await store.messages.finish(copy, MessageStatus.ANSWERED, ("Hamlet, I say yes.", 3))
    await store.messages.mark_shown(answer, "discord", "c", ["o-shown"])
    copy = await store.messages.accept(hamlet_hears_ophelia, "Hamlet, I say yes.", 3, "o-shown", "Ophelia", answering=answer)
    await store.messages.finish(copy, MessageStatus.ANSWERED, ("So be it.", 3))
    return bob, reply, (ophelia_hears_hamlet, hamlet_hears_ophelia)


async def test_a_characters_copy_of_the_line_it_answered_is_not_a_second_scene_line(store) -> None:
    await chain_in(store)
    lines = await store.messages.channel_lines("discord", "c")
    assert [(line.role, line.content) for line in lines] == [
        ("user", "Hamlet, speak."), ("assistant", "Ophelia, what say you?"),
        ("assistant", "Hamlet, I say yes."), ("assistant", "So be it."),
    ]


async def test_a_reset_thread_takes_the_chains_its_replies_started(store) -> None:
    bob, _, chats = await chain_in(store)
    assert await store.messages.delete_conversation(bob) == 2 + 4
    assert await store.messages.channel_lines("discord", "c") == []
    for chat in chats:
        assert await store.messages.recent(chat, 10) == []


async def test_an_undone_reply_takes_the_chain_it_started(store) -> None:
    bob, reply, chats = await chain_in(store)
    assert await store.messages.undo_exchange(bob, reply)
    assert await store.messages.channel_lines("discord", "c") == []
    for chat in chats:
        assert await store.messages.recent(chat, 10) == []


async def test_a_replaced_reply_takes_the_chain_its_old_text_started(store) -> None:
    bob, reply, chats = await chain_in(store)
    assert await store.messages.replace_reply(reply, "I keep silent.", 3)
    assert [line.content for line in await store.messages.channel_lines("discord", "c")] == ["Hamlet, speak.", "I keep silent."]
    for chat in chats:
        assert await store.messages.recent(chat, 10) == []
    assert await store.messages.reply_author("discord", "c", "b-shown") is not None  # still shown there


async def test_a_copy_of_a_line_no_longer_stored_is_not_stored(store) -> None:
    bob, reply, (ophelia_hears_hamlet, _) = await chain_in(store)
    await store.forget_person("discord", "bob")
    assert await store.messages.accept(ophelia_hears_hamlet, "late", 3, "b-shown", "Hamlet", answering=reply) is None
    assert await store.messages.accept(ophelia_hears_hamlet, "late", 3, "b-late", "Hamlet", answering=reply) is None
    assert await store.messages.channel_lines("discord", "c") == []
    assert await store.messages.pending("discord") == []


async def test_a_copy_stored_while_its_line_is_being_forgotten_waits_and_is_not_stored(postgresql_store) -> None:
    """PostgreSQL, two connections: a /forget has locked Bob's reply and deleted it (not committed yet)
    when Ophelia's copy of it is stored: the copy waits for the /forget and then stores nothing."""
    import asyncio

    import asyncpg
    import sqlalchemy as sa

    from storage.repositories.messages import delete_chains, replies_of_person
    from storage.tables import messages
    from tests.conftest import empty_tables

    store = postgresql_store
    await empty_tables(store)
    hamlet = await store.characters.add(card("Hamlet"))
    ophelia = await store.characters.add(card("Ophelia"))
    _, reply, _ = await exchange(store, ConversationKey(hamlet.id, "discord", "c", "bob"), "Hamlet?", "Ophelia, speak.", "b1", "Bob")
    await store.messages.mark_shown(reply, "discord", "c", ["b-shown"])
    ophelia_hears_hamlet = ConversationKey(ophelia.id, "discord", "c", f"character:{hamlet.id}")

    async with store.engine.begin() as conn:  # Store.forget_person's steps, held open
        await delete_chains(conn, replies_of_person("discord", "bob"), postgres=True)
        await conn.execute(sa.delete(messages).where(messages.c.platform == "discord", messages.c.user_id == "bob"))
        copy = asyncio.create_task(
            store.messages.accept(ophelia_hears_hamlet, "Ophelia, speak.", 3, "b-shown", "Hamlet", answering=reply)
        )
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'WITH line AS%'"
        url = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        watch = await asyncpg.connect(url, timeout=10)  # not from the store's pool: it may be all in use here
        try:
            while not await watch.fetchval(waiting):  # the copy's statement waits on the reply's lock
                assert not copy.done(), copy
                await asyncio.sleep(0.01)
        finally:
            await watch.close()
    assert await asyncio.wait_for(copy, 10) is None
    assert await store.messages.channel_lines("discord", "c") == []
