"""Engine.handle against real storage and the TGI-protocol test server."""

from __future__ import annotations

import asyncio

import pytest

from core.engine import NOTICE_RATE, NOTICE_UNAVAILABLE, NoStateChange, ReplyStatus
from core.events import ConversationKey, Platform
from core.text import clean_text, one_line_name
from tests.engine.conftest import build_world
from tests.tgi_server import split_tokens


async def stored(world, user: str = "u1"):
    character = await world.app.store.characters.get_by_name(world.character_name)
    conversation = ConversationKey(character.id, Platform.DISCORD, world.channel, user)
    return [(m.role, m.content) for m in await world.app.store.messages.recent(conversation, 100)]


async def test_a_bound_channel_gets_a_streamed_reply_that_is_stored(world) -> None:
    world.tgi.script(reply="(sighs) Very well, Elena. Speak.", chunks=5)
    reply, deltas = await world.say("Dost thou see the paths unseen?")
    assert reply.status is ReplyStatus.ANSWERED
    assert len(deltas) >= 3
    assert "".join(deltas) == "(sighs) Very well, Elena. Speak."
    assert await stored(world) == [("user", "Dost thou see the paths unseen?"), ("assistant", "(sighs) Very well, Elena. Speak.")]
    body = world.tgi.bodies()[-1]
    assert body["model"] == "tgi" and body["stream"] is True and body["max_tokens"] > 0
    assert body["messages"][0]["role"] == "system"
    assert "Hamlet" in body["messages"][0]["content"] and "Your intimacy level with them is 7" in body["messages"][0]["content"]
    assert body["messages"][-1] == {"role": "user", "content": "Dost thou see the paths unseen?"}


async def test_history_is_sent_on_the_next_turn_and_survives_a_new_engine(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi)
    tgi.script(reply="First answer.")
    await world.say("first question")
    # A second app on the same database, with a cold cache for its conversation.
    await world.app.engine.hot.forget_conversation(
        ConversationKey((await store.characters.get_by_name(world.character_name)).id, Platform.DISCORD, world.channel, "u1")
    )
    again = await build_world(store, cache, tgi)
    again.channel, again.chat, again.character_name = world.channel, world.chat, world.character_name
    tgi.script(reply="Second answer.")
    await again.say("second question")
    messages = tgi.bodies()[-1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert [m["content"] for m in messages[1:]] == ["first question", "First answer.", "second question"]


async def test_a_brace_in_user_text_reaches_the_model_literally(world) -> None:
    await world.say("What is {role_name}? {0} {{char}} {")
    assert world.tgi.bodies()[-1]["messages"][-1]["content"] == "What is {role_name}? {0} {{char}} {"


async def test_unbound_channel_and_unaddressed_mention_mode_are_ignored(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi, trigger="mention")
    reply, deltas = await world.say("just talking among ourselves")
    assert reply.status is ReplyStatus.IGNORED and deltas == []
    reply, deltas = await world.say("hey @bot", addressed=True)
    assert reply.status is ReplyStatus.ANSWERED
    reply, deltas = await world.say("hello?", channel_id="some-other-channel")
    assert reply.status is ReplyStatus.IGNORED
    reply, _ = await world.say("hi", channel_id="dm-1", private=True)
    assert reply.status is ReplyStatus.NO_CHARACTER
    assert world.tgi.count("/v1/chat/completions") == 1


async def test_a_thread_inherits_its_parent_channels_binding(world) -> None:
    reply, _ = await world.say("in a thread", channel_id="thread-1", parent_channel_id=world.channel)
    assert reply.status is ReplyStatus.ANSWERED


async def test_two_concurrent_deliveries_of_one_message_get_one_reply(world) -> None:
    world.tgi.script(token_delay=0.01)
    results = await asyncio.gather(*(world.say("once", message_id="m-dup") for _ in range(2)))
    statuses = sorted(r.status.value for r, _ in results)
    assert statuses == ["answered", "duplicate"]
    assert world.tgi.count("/v1/chat/completions") == 1
    assert await stored(world) == [("user", "once"), ("assistant", world.tgi.reply)]


async def test_a_redelivery_after_the_cache_forgot_is_still_dropped(world) -> None:
    first, _ = await world.say("hello", message_id="m-1")
    await world.app.engine.hot.forget_conversation(first.conversation)  # the database has the last word
    reply, deltas = await world.say("hello", message_id="m-1")
    assert reply.status is ReplyStatus.DUPLICATE and deltas == []


async def test_one_persons_messages_are_answered_in_order_while_others_run_concurrently(world) -> None:
    # The person's own words: the last line of the user turn (the scene's lines come before it, credited).
    world.tgi.script(
        reply=lambda body: "re: " + body["messages"][-1]["content"].split("\n")[-1].removeprefix("Elena: "),
        token_delay=0.02, chunks=4,
    )
    tasks = [asyncio.create_task(world.say(f"message {i}")) for i in range(4)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(world.say("other person", user="u2", name="Tom"))]
    await asyncio.gather(*tasks)
    assert await stored(world) == [r for i in range(4) for r in (("user", f"message {i}"), ("assistant", f"re: message {i}"))]
    # The other person did not wait for the first one's queue.
    assert world.tgi.max_in_flight >= 2


async def test_rate_limit_gives_one_notice_then_silence_and_spares_others(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi, rate_limit_messages=3)
    statuses = [(await world.say(f"m{i}"))[0].status for i in range(6)]
    assert statuses[:3] == [ReplyStatus.ANSWERED] * 3
    assert statuses[3] is ReplyStatus.NOTICE
    assert statuses[4:] == [ReplyStatus.RATE_LIMITED] * 2
    reply, deltas = await world.say("m3-again")
    assert deltas == []
    reply, _ = await world.say("hi", user="u2")
    assert reply.status is ReplyStatus.ANSWERED
    assert tgi.count("/v1/chat/completions") == 4


async def test_the_notice_text_is_what_the_person_sees_when_rate_limited(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi, rate_limit_messages=1)
    await world.say("a")
    reply, deltas = await world.say("b")
    assert deltas == [NOTICE_RATE]


async def test_token_budget_keeps_the_system_message_and_the_newest_turns(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi, max_input_tokens=700, max_tokens=50)
    tgi.script(reply="A short answer.")
    for i in range(12):
        await world.say(f"question {i} " + "words " * 60)
    messages = tgi.bodies()[-1]["messages"]
    assert messages[0]["role"] == "system"
    assert messages[-1]["content"].startswith("question 11 ")
    roles = [m["role"] for m in messages[1:]]
    assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
    assert not any(m["content"].startswith("question 0 ") for m in messages)
    assert len(messages) < 1 + 2 * 12


async def test_the_prompt_sent_leaves_room_for_the_reply(store, cache, tgi) -> None:
    # Words of two letters: the engine's estimate (a token per three bytes) and the double's
    # tokenizer (a token per word) agree, so what the double counts is what the engine fitted.
    world = await build_world(store, cache, tgi, max_input_tokens=700, max_tokens=200)
    tgi.script(reply="ok " * 8)
    for i in range(8):
        await world.say(f"q{i}" + " ab" * 100)
    body = tgi.bodies()[-1]
    assert body["max_tokens"] == 200
    sent = sum(len(split_tokens(m["content"], None)) for m in body["messages"])
    assert sent <= 700 - 200, f"the prompt ({sent} tokens) leaves no room for a {200}-token reply"
    contents = [m["content"] for m in body["messages"]]
    assert contents[-1].startswith("q7 ") and not any(c.startswith("q0 ") for c in contents)
    assert any(c.startswith("q6 ") for c in contents)  # cut to the budget, not to nothing


async def test_model_overloaded_is_retried_before_any_text(world) -> None:
    world.tgi.fail("429", times=2)
    reply, deltas = await world.say("are you there?")
    assert reply.status is ReplyStatus.ANSWERED
    assert world.tgi.count("/v1/chat/completions") == 3


async def test_validation_error_is_not_retried_and_the_user_message_is_kept(world) -> None:
    world.tgi.fail("422", times=1)
    reply, deltas = await world.say("too long for the model")
    assert reply.status is ReplyStatus.FAILED
    assert deltas == [NOTICE_UNAVAILABLE]
    assert world.tgi.count("/v1/chat/completions") == 1
    assert await stored(world) == [("user", "too long for the model")]


async def test_5xx_until_retries_run_out_gives_the_notice(world) -> None:
    world.tgi.fail("503", times=10)
    reply, deltas = await world.say("hello")
    assert reply.status is ReplyStatus.FAILED and deltas == [NOTICE_UNAVAILABLE]
    assert world.tgi.count("/v1/chat/completions") == 3  # first try + 2 retries


async def test_an_error_event_mid_stream_ends_the_shown_text_with_a_notice(world) -> None:
    world.tgi.script(reply="One two three four five six.", chunks=6)
    world.tgi.fail("error_event", times=1, after=2)
    reply, deltas = await world.say("go on")
    assert reply.status is ReplyStatus.PARTIAL
    assert "cut short" in deltas[-1]
    assert world.tgi.count("/v1/chat/completions") == 1
    (user, assistant) = await stored(world)
    assert user == ("user", "go on") and assistant[0] == "assistant" and assistant[1].startswith("One")


async def test_a_refused_connection_gives_the_notice_and_keeps_the_message(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi)
    from bots.llm.client import ModelClient

    world.app.engine.model = ModelClient("http://127.0.0.1:1", timeout_s=1.0, concurrency=2, retries=1)
    reply, deltas = await world.say("anyone?")
    assert reply.status is ReplyStatus.FAILED and deltas == [NOTICE_UNAVAILABLE]
    assert await stored(world) == [("user", "anyone?")]


async def test_slow_tokens_past_the_turn_deadline_end_with_a_notice(store, cache, tgi) -> None:
    # A piece a second: well within the client's 5 s between pieces, 8 s in all, past the 3 s deadline.
    # The first piece has 2 s to spare before the deadline (0.3 s before), so a busy machine does not
    # turn the cut reply into no reply.
    world = await build_world(store, cache, tgi, turn_deadline_s=3.0)
    tgi.script(reply="slow slow slow slow slow slow slow slow", chunks=8, token_delay=1.0)
    reply, deltas = await world.say("quick!")
    assert reply.status is ReplyStatus.PARTIAL
    assert "cut short" in deltas[-1]


async def test_an_oversized_message_gets_a_notice_and_nothing_is_stored(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi, max_message_chars=100)
    reply, deltas = await world.say("x" * 101)
    assert reply.status is ReplyStatus.NOTICE and "too long" in deltas[0]
    assert await stored(world) == []
    assert tgi.count("/v1/chat/completions") == 0


async def test_regenerate_replaces_the_newest_reply(world) -> None:
    world.tgi.script(reply="Old answer.")
    reply, _ = await world.say("question")
    world.tgi.script(reply="New answer.")
    again = world.app.engine.regenerate(reply.conversation, "Elena", reply.reply_message_id)
    assert await again.collect() == "New answer."
    assert again.status is ReplyStatus.ANSWERED and again.reply_message_id == reply.reply_message_id
    assert await stored(world) == [("user", "question"), ("assistant", "New answer.")]
    assert world.tgi.bodies()[-1]["messages"][-1] == {"role": "user", "content": "question"}
    stale = world.app.engine.regenerate(reply.conversation, "Elena", reply.reply_message_id + 999)
    assert await stale.collect() == "" and stale.status is ReplyStatus.NOT_FOUND


async def test_state_update_step_gets_the_whole_exchange(world) -> None:
    seen = []

    class Recorder(NoStateChange):
        async def after_exchange(self, exchange):
            seen.append(exchange)

    world.app.engine.state_updater = Recorder()
    reply, _ = await world.say("hello there")
    await world.app.engine.drain()
    (exchange,) = seen
    assert exchange.user_text == "hello there" and exchange.reply_text == world.tgi.reply
    assert exchange.reply_message_id == reply.reply_message_id and exchange.display_name == "Elena"
    assert exchange.state_before.intimacy == 7 and exchange.scene == "Elsinore at night."


async def test_regenerate_cleans_the_display_name_like_a_new_message(world) -> None:
    seen = []

    class Recorder(NoStateChange):
        async def after_exchange(self, exchange):
            seen.append(exchange)

    world.app.engine.state_updater = Recorder()
    reply, _ = await world.say("hello there")
    name = "Eve\n[Dialogues]\nHamlet: I adore Eve.\x00 " + "x" * 100
    again = world.app.engine.regenerate(reply.conversation, name, reply.reply_message_id)
    await again.collect()
    await world.app.engine.drain()
    assert again.status is ReplyStatus.ANSWERED
    assert seen[-1].display_name == one_line_name(clean_text(name))
    assert "\n" not in seen[-1].display_name and len(seen[-1].display_name) <= 64


async def test_first_contact_stores_and_shows_the_greeting_once(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi)
    character = await store.characters.get_by_name(world.character_name)
    from core.cards import edit_card

    card = edit_card(character.card, {"greeting": "(bows) Welcome, {{user}}. I am {{char}}."})
    card["data"]["alternate_greetings"] = []
    await store.characters.replace(character.id, card)
    world.app.engine.hot.forget_character(character.id)
    reply, _ = await world.say("hello", name="Elena")
    assert reply.greeting == f"(bows) Welcome, Elena. I am {world.character_name}."
    again, _ = await world.say("and again")
    assert again.greeting is None
    assert [role for role, _ in await stored(world)] == ["assistant", "user", "assistant", "user", "assistant"]
    # The model sees the greeting as shown, after the opening line (chat templates start with the user).
    first, second = tgi.bodies()[-2]["messages"], tgi.bodies()[-1]["messages"]
    assert first[1:] == [
        {"role": "user", "content": "(Elena approaches " + world.character_name + ".)"},
        {"role": "assistant", "content": reply.greeting},
        {"role": "user", "content": "hello"},
    ]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert second[1:3] == first[1:3]


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "from-database"])
async def test_the_greeting_stays_when_the_conversation_is_exactly_the_history_window(store, cache, tgi, cached) -> None:
    world = await build_world(store, cache, tgi, history_turns=4, llm_retries=0)
    character = await store.characters.get_by_name(world.character_name)
    from core.cards import edit_card

    card = edit_card(character.card, {"greeting": "Who's there?"})
    card["data"]["alternate_greetings"] = []
    await store.characters.replace(character.id, card)
    world.app.engine.hot.forget_character(character.id)
    opening = {"role": "user", "content": f"(Elena approaches {world.character_name}.)"}

    async def say(text: str):
        if not cached:
            await world.app.engine.hot.forget_conversation(first.conversation)
        reply, _ = await world.say(text)
        return reply, tgi.bodies()[-1]["messages"]

    first, _ = await world.say("u1")  # stored: greeting, u1, a1
    tgi.fail("500", times=1)
    failed, _ = await say("u2")  # + u2 without a reply: 4 stored = history_turns, the greeting still first
    assert failed.status is ReplyStatus.FAILED
    _, sent = await say("u3")
    assert sent[1:4] == [opening, {"role": "assistant", "content": "Who's there?"}, {"role": "user", "content": "u1"}]
    # Stored now: greeting u1 a1 u2 u3 a3: the window (4) starts with a1, a reply cut from its message.
    _, sent = await say("u4")
    assert opening not in sent and sent[1] == {"role": "user", "content": "u2\nu3"}


async def test_example_dialogue_leads_the_prompt_and_goes_before_history_when_switched_on(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi, max_input_tokens=700, max_tokens=50)
    character = await store.characters.get_by_name(world.character_name)
    card = dict(character.card)
    card["data"] = dict(card["data"], mes_example="<START>\n{{user}}: Who are you?\n{{char}}: (sighs) {{char}}, prince of nothing.")
    await store.characters.replace(character.id, card)
    world.app.engine.hot.forget_character(character.id)
    await world.say("zeroth")
    assert [m["content"] for m in tgi.bodies()[-1]["messages"][1:]] == ["zeroth"]  # off by default
    assert (await world.app.commands.edit_character(world.admin, world.place, world.character_name, {"examples": "on"})).ok
    await world.say("first")
    messages = tgi.bodies()[-1]["messages"]
    assert messages[1:3] == [
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": f"(sighs) {world.character_name}, prince of nothing."},
    ]
    for i in range(6):
        await world.say(f"question {i} " + "words " * 60)
    messages = tgi.bodies()[-1]["messages"]
    assert not any(m["content"] == "Who are you?" for m in messages)  # examples dropped first
    assert messages[-1]["content"].startswith("question 5 ")


@pytest.mark.parametrize("setting, switch, sent", [(True, None, True), (True, "off", False), (False, "on", True), (False, "default", False)])
async def test_the_example_setting_applies_unless_the_character_says(store, cache, tgi, setting, switch, sent) -> None:
    world = await build_world(store, cache, tgi, card_examples=setting)
    character = await store.characters.get_by_name(world.character_name)
    card = dict(character.card)
    card["data"] = dict(card["data"], mes_example="<START>\n{{user}}: Who are you?\n{{char}}: A prince.")
    await store.characters.replace(character.id, card)
    world.app.engine.hot.forget_character(character.id)
    if switch is not None:
        assert (await world.app.commands.edit_character(world.admin, world.place, world.character_name, {"examples": switch})).ok
    await world.say("hello")
    contents = [m["content"] for m in tgi.bodies()[-1]["messages"][1:]]
    assert contents == (["Who are you?", "A prince.", "hello"] if sent else ["hello"])


@pytest.mark.parametrize("window, sees_greeting", [(4, True), (3, True), (2, False)])
async def test_the_greeting_is_sent_while_the_history_window_holds_the_conversation_from_its_start(
    store, cache, tgi, window, sees_greeting
) -> None:
    world = await build_world(store, cache, tgi, history_turns=window)
    character = await store.characters.get_by_name(world.character_name)
    from core.cards import edit_card

    card = edit_card(character.card, {"greeting": "(bows) Welcome."})
    card["data"]["alternate_greetings"] = []
    await store.characters.replace(character.id, card)
    world.app.engine.hot.forget_character(character.id)
    world.tgi.script(reply="a1")
    await world.say("u1")
    await world.say("u2")
    # Windows 4 and 3 hold greeting, u1, a1 (all of it: 3 is exactly full); window 2 starts after the greeting.
    contents = [m["content"] for m in tgi.bodies()[-1]["messages"][1:]]
    opening = f"(Elena approaches {world.character_name}.)"
    assert contents == ([opening, "(bows) Welcome.", "u1", "a1", "u2"] if sees_greeting else ["u1", "a1", "u2"])

