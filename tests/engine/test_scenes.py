"""A channel is a scene: two people and two characters in one channel, against real storage and the
recording TGI-protocol double (the prompts asserted are the requests the model server received)."""

from __future__ import annotations

import uuid

import pytest

from core.cards import new_card
from core.commands import Actor, Place
from core.engine import ReplyStatus
from core.events import ConversationKey, PersonKey, Platform
from tests.engine.conftest import build_world

BOB = dict(user="u-bob", name="Bob")
ELENA = dict(user="u-elena", name="Elena")


async def add_character(world, name: str, **card) -> str:
    fields = dict(
        name=name, world="8th Century Danish Royalty", traits=["gentle"], mbti="INFP", style=["soft"],
        scene="Elsinore at night.", emotion={"happiness": 5}, relationship=5,
    )
    fields.update(card)
    await world.app.store.characters.add(new_card(**fields))
    return name


@pytest.fixture
async def scene(store, cache, tgi):
    """Hamlet and Ophelia in one channel (trigger all), the lexicon reading the feelings."""
    world = await build_world(store, cache, tgi, appraiser="lexicon")
    world.ophelia = await add_character(world, f"Ophelia-{uuid.uuid4().hex[:6]}")
    outcome = await world.app.commands.scene_command(world.admin, world.place, f"add {world.ophelia}")
    assert outcome.ok, outcome.message
    yield world
    await world.app.engine.drain()
    await world.app.model.close()


def chats(world) -> list[dict]:
    return [b for b in world.tgi.bodies() if b.get("stream")]


def answered_to(body: dict) -> str:
    """The name the system prompt is rendered for."""
    return body["messages"][0]["content"].split("reply with a brief sentence to ", 1)[1].split(".", 1)[0]


async def character_id(world, name: str) -> int:
    return (await world.app.store.characters.get_by_name(name)).id


async def test_bobs_prompt_has_elenas_last_lines_and_the_other_characters_but_not_another_channels(scene) -> None:
    w = scene
    w.tgi.script(reply="(nods) Follow the ghost, Elena.")
    await w.say("I saw a ghost on the battlements!", **ELENA)
    w.tgi.script(reply="Good night, sweet Bob.")
    reply, _ = await w.say(f"{w.ophelia}, good evening.", **BOB)
    assert reply.character.name == w.ophelia
    # Another channel, with the same characters and people: none of it may reach this scene.
    other = Place(Platform.DISCORD, w.chat, "chan-elsewhere")
    assert (await w.app.commands.bind(w.admin, other, w.character_name)).ok
    w.tgi.script(reply="Elsewhere.")
    await w.say("A secret from the other room.", channel_id="chan-elsewhere", **ELENA)

    w.tgi.script(reply="I told her to follow it.")
    reply, _ = await w.say(f"{w.character_name}, what did you just tell Elena?", **BOB)
    assert reply.status is ReplyStatus.ANSWERED and reply.character.name == w.character_name
    body = chats(w)[-1]
    assert answered_to(body) == "Bob"  # the system prompt is the person's
    assert "Your intimacy level with them is 7" in body["messages"][0]["content"]
    last = body["messages"][-1]
    assert last["role"] == "user"
    assert last["content"] == "\n".join([
        "Elena: I saw a ghost on the battlements!",
        f"{w.character_name} (to Elena): (nods) Follow the ghost, Elena.",
        f"Bob: {w.ophelia}, good evening.",
        f"{w.ophelia} (to Bob): Good night, sweet Bob.",
        f"Bob: {w.character_name}, what did you just tell Elena?",
    ])
    assert not any("other room" in m["content"] or "Elsewhere" in m["content"] for m in body["messages"])
    # Stored: Bob's own words only, in his own thread with Hamlet.
    hamlet = await character_id(w, w.character_name)
    stored = await w.app.store.messages.recent(ConversationKey(hamlet, Platform.DISCORD, w.channel, "u-bob"), 10)
    assert [m.content for m in stored] == [f"{w.character_name}, what did you just tell Elena?", "I told her to follow it."]


async def test_a_name_addressed_message_is_answered_by_that_character_only(scene) -> None:
    w = scene
    before = len(chats(w))
    reply, _ = await w.say(f"{w.ophelia}, a word?", **BOB)
    assert reply.character.name == w.ophelia
    assert len(chats(w)) == before + 1
    hamlet, ophelia = await character_id(w, w.character_name), await character_id(w, w.ophelia)
    assert await w.app.store.messages.recent(ConversationKey(hamlet, Platform.DISCORD, w.channel, "u-bob"), 5) == []
    assert len(await w.app.store.messages.recent(ConversationKey(ophelia, Platform.DISCORD, w.channel, "u-bob"), 5)) == 2
    # Trigger all: Bob's next unaddressed message goes to the one he addressed last.
    reply, _ = await w.say("and then?", **BOB)
    assert reply.character.name == w.ophelia
    # Elena, who never addressed anyone, gets the first bound.
    reply, _ = await w.say("hello all", **ELENA)
    assert reply.character.name == w.character_name


async def test_feelings_toward_bob_and_elena_move_separately_for_each_character(scene) -> None:
    w = scene

    def by_person(body: dict) -> str:
        if answered_to(body) == "Elena":
            return "(smiles) What joy, what a delight! I am so happy and glad, dear friend."
        return "(scowls) I hate this. I am furious, angry and disgusted, you vile wretch!"

    w.tgi.script(reply=by_person)
    await w.say(f"{w.character_name}, hello!", **ELENA)
    await w.say(f"{w.character_name}, hello!", **BOB)
    w.tgi.script(reply="(curtsies) How lovely, what joy to see you, I am delighted.")
    await w.say(f"{w.ophelia}, hello!", **BOB)
    await w.app.engine.drain()
    hamlet, ophelia = await character_id(w, w.character_name), await character_id(w, w.ophelia)
    rel = w.app.store.relationships
    h_elena = await rel.get(PersonKey(hamlet, Platform.DISCORD, "u-elena"))
    h_bob = await rel.get(PersonKey(hamlet, Platform.DISCORD, "u-bob"))
    o_bob = await rel.get(PersonKey(ophelia, Platform.DISCORD, "u-bob"))
    assert h_elena.emotion.happiness > h_bob.emotion.happiness
    assert h_bob.emotion.anger > h_elena.emotion.anger
    assert o_bob.emotion.happiness > h_bob.emotion.happiness and o_bob.emotion.anger < h_bob.emotion.anger
    assert await rel.get(PersonKey(ophelia, Platform.DISCORD, "u-elena")) is None  # Elena never talked to her


async def test_a_private_chats_lines_never_reach_a_channel_prompt_and_no_channels_reach_it(scene) -> None:
    w = scene
    dm = Place(Platform.DISCORD, "dm-bob", "dm-bob", private=True)
    bob = Actor(Platform.DISCORD, "u-bob", "Bob")
    assert (await w.app.commands.use(bob, dm, w.character_name)).ok
    w.tgi.script(reply="Your secret is safe.")
    await w.say("My secret: I took the crown.", channel_id="dm-bob", chat_id="dm-bob", private=True, **BOB)
    w.tgi.script(reply="Speak, Elena.")
    await w.say(f"{w.character_name}, what news?", **ELENA)
    channel_prompt = chats(w)[-1]["messages"]
    assert not any("crown" in m["content"] or "secret" in m["content"] for m in channel_prompt)
    await w.say("Anything new?", channel_id="dm-bob", chat_id="dm-bob", private=True, **BOB)
    private_prompt = chats(w)[-1]["messages"]
    assert answered_to(chats(w)[-1]) == "Bob"
    assert not any("what news" in m["content"] or "Speak, Elena" in m["content"] for m in private_prompt)
    assert private_prompt[-1]["content"] == "Anything new?"


async def test_forget_removes_a_persons_lines_from_every_scene(scene) -> None:
    w = scene
    w.tgi.script(reply="Noted.")
    await w.say("Remember me: violets and rue.", **ELENA)
    await w.say(f"{w.ophelia}, I am here too.", **BOB)
    assert "violets" in chats(w)[-1]["messages"][-1]["content"]
    outcome = await w.app.commands.forget(Actor(Platform.DISCORD, "u-elena", "Elena"))
    assert outcome.ok and outcome.counts["messages"] == 2
    await w.say(f"{w.character_name}, who was here?", **BOB)
    prompt = chats(w)[-1]["messages"]
    assert not any("violets" in m["content"] or "Elena" in m["content"] for m in prompt[1:])
    scene_view = await w.app.commands.scene_command(Actor(Platform.DISCORD, "u-bob", "Bob"), w.place, "")
    assert "violets" not in scene_view.message


async def test_a_brace_in_a_scene_line_reaches_the_model_as_typed(scene) -> None:
    w = scene
    await w.say("What is {role_name}? {0} {{char}} {", **ELENA)
    await w.say(f"{w.character_name}, and you?", **BOB)
    content = chats(w)[-1]["messages"][-1]["content"]
    assert "Elena: What is {role_name}? {0} {{char}} {" in content


async def test_unknown_names_and_bad_triggers_give_a_clear_message_and_change_nothing(scene) -> None:
    w = scene
    commands, admin, place = w.app.commands, w.admin, w.place
    cast_before = await w.app.store.bindings.list(Platform.DISCORD, w.channel)
    for words, says in [
        ("add Nobody", "There is no character called 'Nobody'."),
        ("remove Nobody", "There is no character called 'Nobody'."),
        (f"add {w.ophelia}", f"{w.ophelia} already plays here."),
        ("add", "Say which character: /scene add NAME [all|mention|conversation]."),
        ("show Nobody", "No character called 'Nobody' plays here"),
    ]:
        outcome = await commands.scene_command(admin, place, words)
        assert not outcome.ok and outcome.message.startswith(says), outcome.message
    outcome = await commands.bind(admin, place, w.character_name, "sometimes")
    assert not outcome.ok and "'all', 'mention' or 'conversation'" in outcome.message
    outcome = await commands.mood(Actor(Platform.DISCORD, "u-bob", "Bob"), place, "Nobody")
    assert not outcome.ok and "No character called 'Nobody' plays here" in outcome.message
    outcome = await commands.scene_command(Actor(Platform.DISCORD, "u-bob", "Bob"), place, f"remove {w.ophelia}")
    assert not outcome.ok and "admin" in outcome.message
    assert await w.app.store.bindings.list(Platform.DISCORD, w.channel) == cast_before


async def test_scene_shows_who_plays_and_what_the_character_sees(scene) -> None:
    w = scene
    w.tgi.script(reply="Follow it.")
    await w.say("I saw a ghost!", **ELENA)
    outcome = await w.app.commands.scene_command(Actor(Platform.DISCORD, "u-bob", "Bob"), w.place, "")
    assert outcome.ok
    assert f"Characters here: {w.character_name}, {w.ophelia}" in outcome.message
    assert "Elena: I saw a ghost!" in outcome.message
    assert f"{w.character_name} (to Elena): Follow it." in outcome.message
    # Taking one out leaves the other; the old single-binding commands still work.
    assert (await w.app.commands.scene_command(w.admin, w.place, f"remove {w.ophelia}")).ok
    reply, _ = await w.say(f"{w.ophelia}, are you there?", **BOB)
    assert reply.character.name == w.character_name  # the one left answers every message
    assert (await w.app.commands.unbind(w.admin, w.place)).ok
    reply, _ = await w.say("anyone?", **BOB)
    assert reply.status is ReplyStatus.IGNORED


async def test_a_reply_to_a_characters_message_goes_to_that_character(store, cache, tgi) -> None:
    w = await build_world(store, cache, tgi, trigger="mention", appraiser="none")
    ophelia = await add_character(w, f"Ophelia-{uuid.uuid4().hex[:6]}")
    assert (await w.app.commands.scene_command(w.admin, w.place, f"add {ophelia}")).ok
    reply, _ = await w.say("just chatting among ourselves", **BOB)
    assert reply.status is ReplyStatus.IGNORED  # mention mode: for no one
    reply, _ = await w.say(f"{ophelia}, hello", **BOB)
    await w.app.engine.shown(reply, ["pm-ophelia-1"])
    reply, _ = await w.say("and what of Hamlet?", reply_to="pm-ophelia-1", addressed=True, **ELENA)
    assert reply.character.name == ophelia
    reply, _ = await w.say("and you?", reply_to="pm-unknown", addressed=True, **ELENA)
    assert reply.character.name == ophelia  # a bare mention: the one Elena talked to last
    await w.app.engine.drain()
    await w.app.model.close()


async def test_the_conversation_trigger_lets_characters_answer_each_other_a_bounded_number_of_times(store, cache, tgi) -> None:
    w = await build_world(store, cache, tgi, trigger="conversation", appraiser="none", conversation_turns=2)
    ophelia = await add_character(w, f"Ophelia-{uuid.uuid4().hex[:6]}")
    assert (await w.app.commands.scene_command(w.admin, w.place, f"add {ophelia}")).ok

    def each_names_the_other(body: dict) -> str:
        return f"{ophelia}, what say you?" if w.character_name in body["messages"][0]["content"][:200] else f"{w.character_name}, I say yes."

    w.tgi.script(reply=each_names_the_other)
    reply, _ = await w.say(f"{w.character_name}, speak.", **BOB)
    speakers = [reply.character.name]
    n = 0
    while (reply := await w.app.engine.follow_up(reply, f"shown-{n}")) is not None:
        await reply.collect()
        assert reply.status is ReplyStatus.ANSWERED
        speakers.append(reply.character.name)
        n += 1
    assert speakers == [w.character_name, ophelia, w.character_name]  # then it stops: 2 in a row at most
    await w.app.engine.drain()
    await w.app.model.close()


async def conversation_world(store, cache, tgi, **ophelia):
    """Hamlet and Ophelia in one channel with trigger ``conversation``; Hamlet names Ophelia, she him."""
    w = await build_world(store, cache, tgi, trigger="conversation", appraiser="none", conversation_turns=2)
    w.ophelia = await add_character(w, f"Ophelia-{uuid.uuid4().hex[:6]}", **ophelia)
    assert (await w.app.commands.scene_command(w.admin, w.place, f"add {w.ophelia}")).ok

    def each_names_the_other(body: dict) -> str:
        return f"{w.ophelia}, what say you?" if w.character_name in body["messages"][0]["content"][:200] else f"{w.character_name}, I say yes."

    w.tgi.script(reply=each_names_the_other)
    return w


async def test_the_line_a_character_answers_reaches_its_model_once_as_the_turn_it_answers(store, cache, tgi) -> None:
    """Hamlet's reply is a line of the scene (to Bob) and the turn Ophelia answers: the model sees
    it once, as the turn, after the scene's other lines."""
    w = await conversation_world(store, cache, tgi)
    reply, _ = await w.say(f"{w.character_name}, speak.", **BOB)
    await w.app.engine.shown(reply, ["shown-0"])

    answer = await w.app.engine.follow_up(reply, "shown-0")
    assert answer is not None
    await answer.collect()

    assert answer.status is ReplyStatus.ANSWERED and answer.character.name == w.ophelia
    messages = chats(w)[-1]["messages"]
    assert answered_to(chats(w)[-1]) == w.character_name
    assert messages[-1] == {
        "role": "user", "content": f"Bob: {w.character_name}, speak.\n{w.character_name}: {w.ophelia}, what say you?",
    }
    await w.app.engine.drain()
    await w.app.model.close()


async def test_a_character_answer_left_pending_by_a_crash_sees_the_line_it_answers_once_too(store, cache, tgi) -> None:
    """The follow-up stored (pending) and never answered, as a crash leaves it; recovery answers it
    knowing only the stored message (the platform message it answers): the line still comes once."""
    w = await conversation_world(store, cache, tgi)
    reply, _ = await w.say(f"{w.character_name}, speak.", **BOB)
    await w.app.engine.shown(reply, ["shown-0"])
    left = await w.app.engine.follow_up(reply, "shown-0")  # stored on accept; never iterated: not answered
    assert left is not None and len(chats(w)) == 1

    recovered = [turn async for turn in w.app.engine.recover(Platform.DISCORD.value)]
    (turn,) = [t for t in recovered if t.intake.conversation.channel_id == w.channel]
    assert turn.intake.platform_message_id == "shown-0" and not turn.late
    await turn.reply.collect()

    assert turn.reply.status is ReplyStatus.ANSWERED and turn.reply.character.name == w.ophelia
    assert chats(w)[-1]["messages"][-1] == {
        "role": "user", "content": f"Bob: {w.character_name}, speak.\n{w.character_name}: {w.ophelia}, what say you?",
    }
    await w.app.engine.drain()
    await w.app.model.close()


async def test_a_character_answering_another_gets_no_greeting_meant_for_a_person(store, cache, tgi) -> None:
    """The card's greeting opens a person's first conversation; Ophelia answering Hamlet's line is
    no first contact with a person: her conversation with ``character:ID`` starts with the line."""
    w = await conversation_world(store, cache, tgi, greeting="(curtsies) Welcome, {{user}}.")
    reply, _ = await w.say(f"{w.character_name}, speak.", **BOB)
    await w.app.engine.shown(reply, ["shown-0"])
    answer = await w.app.engine.follow_up(reply, "shown-0")
    assert answer is not None
    await answer.collect()

    assert answer.status is ReplyStatus.ANSWERED and answer.character.name == w.ophelia
    assert answer.greeting is None
    messages = chats(w)[-1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert not any("Welcome" in m["content"] for m in messages)
    stored = await w.app.store.messages.recent(answer.conversation, 10)
    assert [m.role for m in stored] == ["user", "assistant"]
    await w.app.engine.drain()
    await w.app.model.close()


async def test_with_the_slot_layout_the_lines_go_into_the_scene_slot_and_the_turns_stay_the_persons(store, cache, tgi) -> None:
    w = await build_world(store, cache, tgi, appraiser="none", scene_layout="slot")
    w.tgi.script(reply="Follow it.")
    await w.say("I saw a ghost!", **ELENA)
    await w.say("What did you tell her?", **BOB)
    messages = chats(w)[-1]["messages"]
    assert f"Current scene:\nElsinore at night. Just now in this place: Elena: I saw a ghost!; {w.character_name} (to Elena): Follow it.\n" in messages[0]["content"]
    assert messages[-1]["content"] == "What did you tell her?"
    await w.app.engine.drain()
    await w.app.model.close()


SCENE_FORMS = (
    "/scene (shows the scene), /scene set TEXT, /scene reset, /scene add NAME [mention|all|conversation], /scene remove NAME"
)


async def test_an_unknown_scene_word_changes_nothing_and_lists_the_forms(scene) -> None:
    w = scene
    commands, admin, place = w.app.commands, w.admin, w.place
    assert (await commands.scene_command(admin, place, "set A storm at sea.")).ok
    before = await w.app.store.bindings.list(Platform.DISCORD, w.channel)
    for words in (f"rmove {w.ophelia}", "frobnicate", "A cold night on the battlements."):
        outcome = await commands.scene_command(admin, place, words)
        assert not outcome.ok, words
        assert "\n" not in outcome.message and SCENE_FORMS in outcome.message, outcome.message
        assert outcome.message.startswith(f"Unknown /scene word {words.split()[0]!r}"), outcome.message
    assert await w.app.store.bindings.list(Platform.DISCORD, w.channel) == before
    # The documented forms still work.
    assert (await commands.scene_command(admin, place, "show")).ok
    assert (await commands.scene_command(admin, place, "")).ok
    assert (await commands.scene_command(admin, place, "reset")).message == "Scene reset to the character's own."
    assert (await commands.scene_command(admin, place, f"remove {w.ophelia}")).ok


async def test_scene_add_on_an_empty_channel_binds_with_the_default_trigger_mention(scene) -> None:
    w = scene
    commands, admin = w.app.commands, w.admin
    fresh = Place(Platform.DISCORD, w.chat, f"chan-{uuid.uuid4().hex[:8]}")
    assert (await commands.scene_command(admin, fresh, f"add {w.ophelia}")).ok
    assert [b.trigger.value for b in await w.app.store.bindings.list(Platform.DISCORD, fresh.channel_id)] == ["mention"]
    # Every character taken out of a channel bound with `all`: the next one starts from the default.
    assert (await commands.scene_command(admin, w.place, f"remove {w.ophelia}")).ok
    assert (await commands.scene_command(admin, w.place, f"remove {w.character_name}")).ok
    assert (await commands.scene_command(admin, w.place, f"add {w.ophelia}")).ok
    assert [b.trigger.value for b in await w.app.store.bindings.list(Platform.DISCORD, w.channel)] == ["mention"]


async def test_scene_add_with_a_word_that_is_no_trigger_says_so(scene) -> None:
    w = scene
    commands, admin, place = w.app.commands, w.admin, w.place
    before = await w.app.store.bindings.list(Platform.DISCORD, w.channel)
    outcome = await commands.scene_command(admin, place, f"add {w.character_name} sometimes")
    assert not outcome.ok
    assert outcome.message == "Trigger must be 'all', 'mention' or 'conversation', not 'sometimes'."
    outcome = await commands.scene_command(admin, place, "add Nobody sometimes")
    assert not outcome.ok
    assert outcome.message == (
        "Trigger must be 'all', 'mention' or 'conversation', not 'sometimes'; and there is no character called 'Nobody'."
    )
    assert await w.app.store.bindings.list(Platform.DISCORD, w.channel) == before


async def test_scene_shows_its_text_with_the_names_filled_in_as_the_prompt_has_them(scene) -> None:
    w = scene
    assert (await w.app.commands.scene_command(w.admin, w.place, "set {{char}} waits for {{User}} at the gate.")).ok
    outcome = await w.app.commands.scene_command(Actor(Platform.DISCORD, "u-bob", "Bob"), w.place, "")
    assert outcome.ok
    assert outcome.message.splitlines()[0] == f"Scene: {w.character_name} waits for Bob at the gate."
    w.tgi.script(reply="Well met.")
    await w.say("Hello.", **BOB)
    assert f"{w.character_name} waits for Bob at the gate." in chats(w)[-1]["messages"][0]["content"]
