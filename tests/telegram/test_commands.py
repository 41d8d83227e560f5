"""Bot commands: characters managed by admins, a person's own mood, reset and forget, help."""

from __future__ import annotations

from bots.telegram.arguments import HELP
from core.commands import ADMIN_ONLY, OWNER_ONLY_PRIVATE
from tests.telegram.conftest import OWNER_ID, Harness

GROUP = -100456


async def test_a_group_admin_manages_characters(bot: Harness) -> None:
    tg = bot.tg
    group, ada = tg.group(GROUP), tg.user(51, "Ada")
    tg.members[(GROUP, 51)] = "administrator"
    script = [
        ("/character create name=Ophelia; world=Denmark; traits=gentle,devoted; mbti=isfp; style=soft,hesitant; public=no",
         "Created Ophelia."),
        ("/character edit Ophelia mbti=INFP; greeting=My lord?", "Updated Ophelia."),
        ("/character edit Ophelia examples=on", "Updated Ophelia."),
        ("/character edit Ophelia examples=maybe", "Examples must be on, off or default"),
        ("/character list", "Characters: Ophelia"),
        ("/character show Ophelia", "Ophelia (private, en)\nWorld: Denmark\nTraits: gentle, devoted\nMBTI: INFP"),
        ("/bind Ophelia all", "Ophelia now plays here and answers every message."),
        ("/unbind", "The character has left this channel."),
        ("/character delete Ophelia", "Deleted Ophelia and everything stored with it."),
    ]
    for command, expected in script:
        tg.say(group, ada, command)
        await bot.idle()
        assert tg.texts(GROUP)[-1].startswith(expected), (command, tg.texts(GROUP)[-1])
    assert await bot.app.store.characters.get_by_name("Ophelia") is None


async def test_the_example_dialogue_switch_is_set_from_the_chat(bot: Harness) -> None:
    tg = bot.tg
    owner = tg.user(OWNER_ID, "Olga")
    chat = tg.private(owner)
    await bot.add_character("Ophelia")
    for command, expected in [("/character edit Ophelia examples=on", True), ("/character edit Ophelia examples=default", None)]:
        tg.say(chat, owner, command)
        await bot.idle()
        assert tg.texts(chat["id"])[-1].startswith("Updated Ophelia.")
        character = await bot.app.store.characters.get_by_name("Ophelia")
        assert character.card["data"]["extensions"]["personae"].get("examples") is expected


async def test_character_commands_explain_their_syntax(bot: Harness) -> None:
    tg = bot.tg
    owner = tg.user(OWNER_ID, "Olga")
    chat = tg.private(owner)
    for command, expected in [
        ("/character create name=Ophelia; world Denmark", "Expected field=value"),
        ("/character create name=Ophelia", "Missing world, traits, mbti, style."),
        ("/character launch", "Use /character create, import, edit, list, show or delete"),
        ("/character import", "Send the card as a file (PNG, CharX or JSON)"),
    ]:
        tg.say(chat, owner, command)
        await bot.idle()
        assert tg.texts(chat["id"])[-1].startswith(expected), (command, tg.texts(chat["id"])[-1])


async def test_admin_commands_are_refused_to_others(bot: Harness) -> None:
    tg = bot.tg
    await bot.add_character("Hamlet")
    await bot.bind(GROUP, "Hamlet")
    group, mia = tg.group(GROUP), tg.user(52, "Mia")
    for command in ("/unbind", "/scene set A storm.", "/character delete Hamlet"):
        tg.say(group, mia, command)
    await bot.idle()
    assert tg.texts(GROUP) == [ADMIN_ONLY] * 3
    assert await bot.app.store.bindings.get("telegram", str(GROUP)) is not None
    mia_private = tg.private(mia)
    tg.say(mia_private, mia, "/character create name=X; world=Y; traits=a; mbti=INTJ; style=b")
    await bot.idle()
    assert tg.texts(mia_private["id"]) == [OWNER_ONLY_PRIVATE]


async def test_mood_reset_and_forget(bot: Harness) -> None:
    tg = bot.tg
    await bot.add_character("Hamlet")
    ann = tg.user(53, "Ann")
    chat = tg.private(ann)
    for text in ("/use Hamlet", "Hello.", "/mood", "/reset"):
        tg.say(chat, ann, text)
        await bot.idle()
    texts = tg.texts(chat["id"])
    ((picture, caption),) = tg.photos(chat["id"])  # /mood: the picture, with the text as its caption
    assert caption.startswith("Hamlet toward Ann:\nhappiness:") and picture.startswith(b"\x89PNG\r\n\x1a\n")
    assert texts[3] == "Started over with Hamlet (2 messages forgotten)."

    tg.say(chat, ann, "/forget")
    await bot.idle()
    confirm = tg.bot_messages(chat["id"])[-1]
    (row,) = confirm["reply_markup"]["inline_keyboard"]
    tg.press(tg.user(54, "Bob"), chat["id"], confirm["message_id"], row[0]["callback_data"])
    await bot.idle()
    assert tg.calls_of("answerCallbackQuery")[-1].params["show_alert"] is True
    tg.press(ann, chat["id"], confirm["message_id"], row[0]["callback_data"])
    await bot.idle()
    assert tg.texts(chat["id"])[-1].startswith("Deleted everything stored about you")


async def test_memory_lists_and_forgets_one_in_a_private_chat(bot: Harness) -> None:
    from core.events import ConversationKey
    from core.memory import NewMemory

    tg = bot.tg
    await bot.add_character("Hamlet")
    ann = tg.user(56, "Ann")
    chat = tg.private(ann)
    tg.say(chat, ann, "/use Hamlet")
    tg.say(chat, ann, "/memory")
    await bot.idle()
    assert tg.texts(chat["id"])[-1] == "Hamlet remembers nothing about you here yet."

    hamlet = await bot.app.store.characters.get_by_name("Hamlet")
    here = ConversationKey(hamlet.id, "telegram", str(chat["id"]), str(ann["id"]))
    assert await bot.app.store.memories.condensed(here, 0, 2, [NewMemory("fact", "Ann was born in Bergen.", 1, 2, 8)], [])
    tg.say(chat, ann, "/memory")
    await bot.idle()
    assert tg.texts(chat["id"])[-1].startswith("Hamlet remembers about you here:\n1. Ann was born in Bergen. (fact, ")
    tg.say(chat, ann, "/memory forget one")
    await bot.idle()
    assert tg.texts(chat["id"])[-1].startswith("Give the number of a memory from /memory")
    tg.say(chat, ann, "/memory forget 1")
    await bot.idle()
    assert tg.texts(chat["id"])[-1] == "Hamlet forgot: Ann was born in Bergen."
    assert await bot.app.store.memories.list(here) == []


async def test_help_and_unknown_commands(bot: Harness) -> None:
    tg = bot.tg
    ann = tg.user(55, "Ann")
    chat = tg.private(ann)
    tg.say(chat, ann, "/help")
    tg.say(chat, ann, "/dance")
    await bot.idle()
    assert tg.texts(chat["id"]) == [HELP, "I do not know that command. /help lists what I can do."]
    group = tg.group(GROUP)
    tg.say(group, ann, "/dance")
    tg.say(group, ann, "/help@some_other_bot")
    await bot.idle()
    assert tg.texts(GROUP) == [], "a group hears no complaints about other bots' commands"


async def test_editing_emotions_changes_only_those_named(bot: Harness) -> None:
    tg = bot.tg
    owner = tg.user(OWNER_ID, "Olga")
    chat = tg.private(owner)
    tg.say(chat, owner, "/character create name=Ophelia; world=Denmark; traits=gentle; mbti=ISFP; style=soft; "
                        "emotion=happiness=2,sadness=7,fear=3")
    tg.say(chat, owner, "/character edit Ophelia emotion=happiness=9")
    tg.say(chat, owner, "/character edit Ophelia emotion=sadness=4,anger=2")
    await bot.idle()
    assert tg.texts(chat["id"])[-3:] == ["Created Ophelia.", "Updated Ophelia.", "Updated Ophelia."]
    ophelia = await bot.app.store.characters.get_by_name("Ophelia")
    assert ophelia.profile.emotion.as_dict() == {"happiness": 9, "sadness": 4, "disgust": 0, "fear": 3, "surprise": 0, "anger": 2}


async def test_a_group_admin_manages_the_lorebook_and_a_bad_command_changes_nothing(bot: Harness) -> None:
    import json

    tg = bot.tg
    group, ada, bob = tg.group(GROUP), tg.user(51, "Ada"), tg.user(52, "Bob")
    tg.members[(GROUP, 51)] = "administrator"
    await bot.add_character("Ophelia")
    script = [
        ("/bind Ophelia all", "Ophelia now plays here"),
        ("/lore add keys=willow, brook; order=50; content=A willow grows aslant a brook;\nits leaves show in the glassy stream.",
         "Added entry 1 to Ophelia's lorebook."),
        ("/lore edit 1 case_sensitive=on", "Updated entry 1 of Ophelia's lorebook."),
        ("/lore list", "Ophelia's lorebook (1 entry; scans the last 2 messages):\n1. [willow, brook] order 50: A willow"),
        ("/lore show 1", "1. [willow, brook] order 50\ncase-sensitive\nA willow grows aslant a brook;\nits leaves"),
    ]
    for command, expected in script:
        tg.say(group, ada, command)
        await bot.idle()
        assert tg.texts(GROUP)[-1].startswith(expected), (command, tg.texts(GROUP)[-1])
    before = json.dumps((await bot.app.store.characters.get_by_name("Ophelia")).card, sort_keys=True)
    for user, command, expected in [
        (ada, "/lore edit 1 whole_words=sometimes", "Whole_words must be on, off or default"),
        (ada, "/lore edit 3 content=x", "There is no entry 3"),
        (ada, "/lore frob", "Unknown /lore action 'frob'"),
        (bob, "/lore remove 1", ADMIN_ONLY),
    ]:
        tg.say(group, user, command)
        await bot.idle()
        assert tg.texts(GROUP)[-1].startswith(expected), (command, tg.texts(GROUP)[-1])
    assert json.dumps((await bot.app.store.characters.get_by_name("Ophelia")).card, sort_keys=True) == before
