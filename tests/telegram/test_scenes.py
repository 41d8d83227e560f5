"""A Telegram group as a scene: two characters behind one bot, two people, each answered by the
character they address, the name first in the reply."""

from __future__ import annotations

import dataclasses
import json
import logging

from core.commands import Actor, Place
from core.events import ConversationKey, PersonKey
from tests.telegram.conftest import FAST, OWNER_ID, Harness, running_bot

GROUP = -100777


def params_entities(call) -> list[dict]:
    raw = call.params.get("entities")
    return json.loads(raw) if isinstance(raw, str) else (raw or [])


async def test_two_characters_in_a_group_answer_whom_they_are_addressed_by_their_name_first(bot: Harness) -> None:
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    await bot.add_character("Ophelia")
    group, ada, bob = tg.group(GROUP), tg.user(41, "Ada"), tg.user(42, "Bob")
    tg.members[(GROUP, 41)] = "administrator"
    tg.say(group, ada, "/bind Hamlet all")
    tg.say(group, ada, "/scene add Ophelia")
    await bot.idle()
    assert tg.texts(GROUP)[-1] == "Ophelia now plays here with Hamlet; the characters answer every message."

    tgi.script(reply="Follow the ghost, Ada.")
    tg.say(group, ada, "Hamlet, I saw a ghost!")
    await bot.idle()
    tgi.script(reply="Good night, sweet Bob.")
    tg.say(group, bob, "Ophelia, good evening.")
    await bot.idle()
    hamlet_says, ophelia_says = tg.bot_messages(GROUP)[-2:]
    assert hamlet_says["text"] == "Hamlet\nFollow the ghost, Ada."
    assert ophelia_says["text"] == "Ophelia\nGood night, sweet Bob."
    last_write = [c for c in tg.calls if c.method in ("sendMessage", "editMessageText") and c.params.get("chat_id") == GROUP][-1]
    assert params_entities(last_write) == [{"type": "bold", "offset": 0, "length": len("Ophelia")}]

    # Bob replies to Hamlet's message without naming him: Hamlet answers, and sees the scene.
    tgi.script(reply="I told her to follow it.")
    tg.say(group, bob, "What did you tell her?", reply_to=hamlet_says["message_id"])
    await bot.idle()
    assert tg.bot_messages(GROUP)[-1]["text"] == "Hamlet\nI told her to follow it."
    prompt = tgi.bodies()[-1]["messages"]
    assert "reply with a brief sentence to Bob." in prompt[0]["content"]
    assert prompt[-1]["content"].startswith("Ada: Hamlet, I saw a ghost!\nHamlet (to Ada): Follow the ghost, Ada.\n")
    assert prompt[-1]["content"].endswith("\nBob: What did you tell her?")
    # The stored replies hold the model's words, not the name line.
    hamlet = await bot.app.store.characters.get_by_name("Hamlet")
    assert await bot.app.store.relationships.get(PersonKey(hamlet.id, "telegram", "42")) is not None

    tg.say(group, bob, "/scene")
    await bot.idle()
    shown = tg.texts(GROUP)[-1]
    assert "Characters here: Hamlet, Ophelia" in shown and "Ada: Hamlet, I saw a ghost!" in shown


async def test_one_character_in_a_group_speaks_without_a_name_line(bot: Harness) -> None:
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    await bot.bind(GROUP, "Hamlet", "all")
    tg.say(tg.group(GROUP), tg.user(43, "Ann"), "Hello there.")
    await bot.idle()
    assert tg.texts(GROUP) == [tgi.reply]


async def test_in_mention_mode_what_people_say_to_each_other_is_overheard_by_the_character_answering_next(bot: Harness) -> None:
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    await bot.bind(GROUP, "Hamlet", "mention")
    group, ada, bob = tg.group(GROUP), tg.user(41, "Ada"), tg.user(42, "Bob")
    tg.say(group, ada, "Bob, the dragon is behind the door.")
    await bot.idle()
    assert tg.bot_messages(GROUP) == [] and tgi.count("/v1/chat/completions") == 0  # said to no character

    tgi.script(reply="Behind the door, she says.")
    tg.say(group, bob, "@persona_bot where is the dragon?")
    await bot.idle()
    assert tg.texts(GROUP) == ["Behind the door, she says."]
    prompt = tgi.bodies()[-1]["messages"]
    assert [m["role"] for m in prompt] == ["system", "user"]
    assert prompt[-1]["content"] == "Ada: Bob, the dragon is behind the door.\nBob: where is the dragon?"
    # Stored once (on arrival, before Telegram was told it came), as the room's line only.
    hamlet = await bot.app.store.characters.get_by_name("Hamlet")
    lines = await bot.app.store.messages.channel_lines("telegram", str(GROUP))
    assert [(line.user_id, line.content) for line in lines][:1] == [("41", "Bob, the dragon is behind the door.")]
    assert await bot.app.store.messages.recent(ConversationKey(hamlet.id, "telegram", str(GROUP), "41"), 5) == []


def chats(tgi) -> list[dict]:
    return [b for b in tgi.bodies() if b.get("stream")]


def speaker_of(body: dict) -> str:
    return "Ophelia" if "as if you are Ophelia" in body["messages"][0]["content"] else "Hamlet"


def answered_to(body: dict) -> str:
    return body["messages"][0]["content"].split("reply with a brief sentence to ", 1)[1].split(".", 1)[0]


def each_names_the_other(body: dict) -> str:
    """Hamlet names Ophelia in every reply, and Ophelia Hamlet; each says whom it answers."""
    other = "Ophelia" if speaker_of(body) == "Hamlet" else "Hamlet"
    return f"{other}, {answered_to(body)} asks after you."


async def test_with_trigger_conversation_characters_answer_each_other_in_a_group_with_no_regenerate_button(
    store, cache, tg, tgi
) -> None:
    """Trigger ``conversation`` on Telegram: the character a reply names answers it (its name first,
    as several characters behind one bot write), in reply to the message it answers, at most
    PERSONAE_CONVERSATION_TURNS in a row. Only the person's reply has a Regenerate button: nobody
    owns the characters' exchange; an old button of such a reply answers with one line."""
    async with running_bot(store, cache, tg, tgi, conversation_turns=2, appraiser="none") as bot:
        await bot.add_character("Hamlet")
        await bot.add_character("Ophelia")
        await bot.bind(GROUP, "Hamlet", "conversation")
        owner = Actor("telegram", str(OWNER_ID), "Owner", is_owner=True)
        outcome = await bot.app.commands.scene_command(owner, Place("telegram", str(GROUP), str(GROUP)), "add Ophelia")
        assert outcome.ok, outcome.message
        group, ada = tg.group(GROUP), tg.user(41, "Ada")
        tgi.script(reply=each_names_the_other)

        said = tg.say(group, ada, "Hamlet, speak.")
        await bot.idle()

        shown = tg.bot_messages(GROUP)
        assert [m["text"] for m in shown] == [
            "Hamlet\nOphelia, Ada asks after you.",
            "Ophelia\nHamlet, Hamlet asks after you.",
            "Hamlet\nOphelia, Ophelia asks after you.",  # and no more: two character replies in a row at most
        ]
        assert len(chats(tgi)) == 3
        sends = tg.calls_of("sendMessage", GROUP)
        replied_to = [c.params["reply_parameters"]["message_id"] for c in sends]
        assert replied_to == [said["message"]["message_id"], shown[0]["message_id"], shown[1]["message_id"]]
        # Ophelia answered Hamlet's line as a person named Hamlet, the line once: as the turn she answers.
        ophelias = chats(tgi)[1]
        assert speaker_of(ophelias) == "Ophelia" and answered_to(ophelias) == "Hamlet"
        assert ophelias["messages"][-1]["content"] == "Ada: Hamlet, speak.\nHamlet: Ophelia, Ada asks after you."
        # Only the person's reply has a Regenerate button.
        assert [bool(m.get("reply_markup")) for m in shown] == [True, False, False]
        assert shown[0]["reply_markup"]["inline_keyboard"][0][0]["callback_data"].startswith("regen:")

        # A button such a reply carried before (five parts: its person is a character): one clear line.
        hamlet = await bot.app.store.characters.get_by_name("Hamlet")
        ophelia = await bot.app.store.characters.get_by_name("Ophelia")
        old = f"regen:999:{ophelia.id}:character:{hamlet.id}"
        tg.press(ada, GROUP, shown[1]["message_id"], old)
        await bot.idle()
        (alert,) = tg.calls_of("answerCallbackQuery")
        assert alert.params["show_alert"] is True and alert.params["text"] == "This button no longer works."
        assert len(chats(tgi)) == 3 and [m["text"] for m in tg.bot_messages(GROUP)] == [m["text"] for m in shown]


async def test_in_a_busy_group_the_characters_do_not_answer_each_other(store, cache, tg, tgi, caplog) -> None:
    """With one write a minute in the group, a character's answer to another would wait past
    PERSONAE_DELIVERY_MAX_WAIT_S: none is started (the model is not asked), and that is logged."""
    caplog.set_level(logging.INFO, logger="bots.telegram.handlers")
    tuning = dataclasses.replace(FAST, group_messages_per_minute=1)
    async with running_bot(store, cache, tg, tgi, tuning=tuning, conversation_turns=2, appraiser="none", delivery_max_wait_s=5.0) as bot:
        await bot.add_character("Hamlet")
        await bot.add_character("Ophelia")
        await bot.bind(GROUP, "Hamlet", "conversation")
        owner = Actor("telegram", str(OWNER_ID), "Owner", is_owner=True)
        assert (await bot.app.commands.scene_command(owner, Place("telegram", str(GROUP), str(GROUP)), "add Ophelia")).ok
        tgi.script(reply=each_names_the_other)
        tg.say(tg.group(GROUP), tg.user(41, "Ada"), "Hamlet, speak.")
        await bot.idle()
        assert [m["text"] for m in tg.bot_messages(GROUP)] == ["Hamlet\nOphelia, Ada asks after you."]
        assert len(chats(tgi)) == 1
        assert any("do not answer each other now" in r.getMessage() for r in caplog.records)


async def test_a_characters_answer_to_another_notes_where_it_is_half_shown(store, cache, tg, tgi) -> None:
    """As a person's reply does: a crash mid-answer leaves recovery a message to complete, not a
    second copy of the answer."""
    async with running_bot(store, cache, tg, tgi, conversation_turns=1, appraiser="none") as bot:
        await bot.add_character("Hamlet")
        await bot.add_character("Ophelia")
        await bot.bind(GROUP, "Hamlet", "conversation")
        owner = Actor("telegram", str(OWNER_ID), "Owner", is_owner=True)
        assert (await bot.app.commands.scene_command(owner, Place("telegram", str(GROUP), str(GROUP)), "add Ophelia")).ok
        noted: list[tuple[str, str]] = []
        showing = bot.app.engine.showing

        async def noting(intake, platform_message_id: str) -> None:
            noted.append((intake.conversation.user_id, platform_message_id))
            await showing(intake, platform_message_id)

        bot.app.engine.showing = noting  # type: ignore[method-assign]
        tgi.script(reply=each_names_the_other, chunks=8, token_delay=0.15)
        tg.say(tg.group(GROUP), tg.user(41, "Ada"), "Hamlet, speak.")
        await bot.idle()
        shown = tg.bot_messages(GROUP)
        assert len(shown) == 2
        hamlet = await bot.app.store.characters.get_by_name("Hamlet")
        assert noted == [("41", str(shown[0]["message_id"])), (f"character:{hamlet.id}", str(shown[1]["message_id"]))]
