"""Slash commands: acknowledged at once, answered privately, admin rights resolved on every call."""

from __future__ import annotations

import json

from bots.discord.slash import FAILED
from core.card_files import placeholder_png
from core.commands import ADMIN_ONLY
from tests.card_builders import png_card
from bots.fakes.discord import (
    ADMINISTRATOR,
    ALICE,
    BOB,
    DM,
    GAME_MASTER,
    GUILD_ID,
    LOBBY,
    MANAGE_GUILD,
    OWNER,
    ROLEPLAY,
    THREAD,
)

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Ophelia",
        "description": "A noblewoman of Denmark. She loves Hamlet.",
        "personality": "gentle, obedient, fragile",
        "scenario": "The castle gardens.",
        "first_mes": "My lord?",
        "mes_example": "",
        "extensions": {"some_other_app": {"keep": True}},
    },
}


async def binding(bot, channel: int):
    return await bot.app.store.bindings.get("discord", str(channel))


async def test_a_non_admin_bind_is_refused_privately_and_changes_nothing(bot):
    sent = await bot.fake.slash("bind", {"character": "Hamlet"}, user=BOB, channel=LOBBY)

    assert await bot.fake.answer_to(sent) == ADMIN_ONLY
    (ack,) = bot.fake.callbacks(sent)
    assert ack.body["type"] == 5 and ack.body["data"]["flags"] & 64  # deferred, ephemeral
    (followup,) = bot.fake.followups(sent)
    assert followup.body["flags"] & 64
    assert await binding(bot, LOBBY) is None


async def test_manage_server_permission_may_bind(bot):
    sent = await bot.fake.slash("bind", {"character": "Hamlet", "trigger": "mention"}, user=BOB, channel=LOBBY, permissions=MANAGE_GUILD)

    assert "Hamlet now plays here" in await bot.fake.answer_to(sent)
    stored = await binding(bot, LOBBY)
    assert stored is not None and stored.trigger == "mention" and stored.chat_id == str(GUILD_ID)


async def test_administrator_permission_may_bind(bot):
    sent = await bot.fake.slash("bind", {"character": "Hamlet"}, user=BOB, channel=LOBBY, permissions=ADMINISTRATOR)

    assert "Hamlet now plays here" in await bot.fake.answer_to(sent)
    assert await binding(bot, LOBBY) is not None


async def test_an_owner_without_permissions_may_bind(bot):
    sent = await bot.fake.slash("bind", {"character": "Hamlet"}, user=OWNER, channel=LOBBY, permissions=0)

    assert "Hamlet now plays here" in await bot.fake.answer_to(sent)
    assert await binding(bot, LOBBY) is not None


async def test_the_configured_admin_role_may_bind(bot):
    sent = await bot.fake.slash("bind", {"character": "Hamlet"}, user=BOB, channel=LOBBY, roles=[GAME_MASTER])

    assert "Hamlet now plays here" in await bot.fake.answer_to(sent)
    assert await binding(bot, LOBBY) is not None


async def test_an_admin_can_import_a_card_attachment(bot):
    card = json.dumps(CARD).encode()
    sent = await bot.fake.slash(
        "character import", user=BOB, permissions=MANAGE_GUILD, attachments={"card": ("ophelia.json", card)}
    )

    assert (await bot.fake.answer_to(sent)).startswith("Imported Ophelia.")
    imported = await bot.app.store.characters.get_by_name("ophelia")
    assert imported is not None
    assert imported.card["data"]["extensions"]["some_other_app"] == {"keep": True}
    assert len(bot.fake.downloads) == 1


async def test_a_non_admin_import_is_refused_without_downloading_the_file(bot):
    sent = await bot.fake.slash("character import", user=BOB, attachments={"card": ("ophelia.json", json.dumps(CARD).encode())})

    assert await bot.fake.answer_to(sent) == ADMIN_ONLY
    assert await bot.app.store.characters.get_by_name("Ophelia") is None
    assert bot.fake.downloads == []


async def test_a_broken_card_is_refused_with_the_reason(bot):
    sent = await bot.fake.slash("character import", user=OWNER, attachments={"card": ("bad.json", b"{not json")})

    assert (await bot.fake.answer_to(sent)).startswith("Could not import the card: The card is not JSON")


async def test_editing_emotions_changes_only_those_named(bot):
    admin = dict(user=BOB, permissions=MANAGE_GUILD)
    fields = {"name": "Horatio", "world": "Denmark", "traits": "loyal", "mbti": "ISTJ", "style": "plain"}
    assert await bot.fake.answer_to(await bot.fake.slash("character create", fields, **admin)) == "Created Horatio."
    for emotion in ("happiness=2,fear=3", "happiness=9"):
        edited = await bot.fake.slash("character edit", {"name": "Horatio", "emotion": emotion}, **admin)
        assert await bot.fake.answer_to(edited) == "Updated Horatio."
    edited = await bot.fake.slash("character edit", {"name": "Horatio", "emotion": "anger=2, sadness=4"}, **admin)
    assert await bot.fake.answer_to(edited) == "Updated Horatio."
    horatio = await bot.app.store.characters.get_by_name("Horatio")
    assert horatio.profile.emotion.as_dict() == {"happiness": 9, "sadness": 4, "disgust": 0, "fear": 3, "surprise": 0, "anger": 2}


async def test_an_admin_creates_edits_shows_lists_and_deletes_a_character(bot):
    admin = dict(user=BOB, permissions=MANAGE_GUILD)
    created = await bot.fake.slash(
        "character create",
        {"name": "Horatio", "world": "Denmark", "traits": "loyal, calm", "mbti": "ISTJ", "style": "plain"},
        **admin,
    )
    assert await bot.fake.answer_to(created) == "Created Horatio."

    edited = await bot.fake.slash("character edit", {"name": "Horatio", "relationship": 9, "traits": "loyal"}, **admin)
    assert await bot.fake.answer_to(edited) == "Updated Horatio."

    shown = await bot.fake.slash("character show", {"name": "horatio"}, user=ALICE)
    text = await bot.fake.answer_to(shown)
    assert "Traits: loyal" in text and "intimacy 9" in text

    listed = await bot.fake.slash("character list", user=ALICE)
    assert await bot.fake.answer_to(listed) == "Characters: Hamlet, Horatio"

    refused = await bot.fake.slash("character delete", {"name": "Horatio"}, user=ALICE)
    assert await bot.fake.answer_to(refused) == ADMIN_ONLY

    deleted = await bot.fake.slash("character delete", {"name": "Horatio"}, **admin)
    assert (await bot.fake.answer_to(deleted)).startswith("Deleted Horatio")
    assert await bot.app.store.characters.get_by_name("Horatio") is None


async def test_scene_and_unbind_need_an_admin_in_a_server(bot):
    await bot.bind(ROLEPLAY)

    refused = await bot.fake.slash("scene", {"text": "set A storm."}, user=ALICE)
    assert await bot.fake.answer_to(refused) == ADMIN_ONLY
    scene = await bot.fake.slash("scene", {"text": "set A storm over the battlements."}, user=BOB, permissions=MANAGE_GUILD)
    assert await bot.fake.answer_to(scene) == "Scene set."
    assert (await binding(bot, ROLEPLAY)).scene == "A storm over the battlements."

    unbound = await bot.fake.slash("unbind", user=OWNER)
    assert await bot.fake.answer_to(unbound) == "The character has left this channel."
    assert await binding(bot, ROLEPLAY) is None


async def test_mood_reset_and_forget_are_for_everyone(bot):
    await bot.bind(ROLEPLAY)
    await bot.say(ROLEPLAY, ALICE, "Good morrow.")

    mood = await bot.fake.slash("mood", user=ALICE, channel=THREAD)  # a thread: the parent's character
    assert (await bot.fake.answer_to(mood)).startswith("Hamlet toward Alice:")
    (answer,) = bot.fake.followups(mood)  # with the picture attached
    assert answer.body["attachments"][0]["filename"] == "mood.png"
    assert answer.files["mood.png"].startswith(b"\x89PNG\r\n\x1a\n")

    reset = await bot.fake.slash("reset", user=ALICE)
    assert await bot.fake.answer_to(reset) == "Started over with Hamlet (2 messages forgotten)."

    forget = await bot.fake.slash("forget", user=ALICE)
    assert (await bot.fake.answer_to(forget)).startswith("Deleted everything stored about you")


async def test_memory_lists_and_forgets_one_by_its_number(bot):
    from core.events import ConversationKey
    from core.memory import NewMemory

    await bot.bind(ROLEPLAY)
    await bot.say(ROLEPLAY, ALICE, "Good morrow.")
    hamlet = await bot.app.store.characters.get_by_name("Hamlet")
    here = ConversationKey(hamlet.id, "discord", str(ROLEPLAY), str(ALICE))
    told = [NewMemory("fact", "Alice keeps a blue lantern.", 1, 2, 9), NewMemory("event", "They met on the walls.", 1, 2, 8)]
    assert await bot.app.store.memories.condensed(here, 0, 2, told, [])

    listed = await bot.fake.answer_to(await bot.fake.slash("memory", user=ALICE))
    assert listed.startswith("Hamlet remembers about you here:\n1. Alice keeps a blue lantern. (fact, ")
    assert "\n2. They met on the walls. (event, " in listed
    # Someone else sees nothing of Alice's.
    assert "remembers nothing about you" in await bot.fake.answer_to(await bot.fake.slash("memory", user=BOB))

    forgot = await bot.fake.slash("memory", {"forget": 1}, user=ALICE)
    assert await bot.fake.answer_to(forgot) == "Hamlet forgot: Alice keeps a blue lantern."
    assert [m.text for m in await bot.app.store.memories.list(here)] == ["They met on the walls."]
    missing = await bot.fake.slash("memory", {"forget": 5}, user=ALICE)
    assert await bot.fake.answer_to(missing) == "There is no memory number 5: /memory lists 1 to 1."


async def test_use_in_a_server_channel_points_to_dms(bot):
    sent = await bot.fake.slash("use", {"character": "Hamlet"}, user=ALICE, channel=ROLEPLAY)

    assert "/use works in private chats" in await bot.fake.answer_to(sent)


async def test_creating_characters_in_a_dm_is_for_owners_only(bot):
    fields = {"name": "Yorick", "world": "Denmark", "traits": "merry", "mbti": "ENFP", "style": "jesting"}

    refused = await bot.fake.slash("character create", fields, user=ALICE, channel=DM)
    assert await bot.fake.answer_to(refused) == "In a private chat only a bot owner can do that."


async def test_the_commands_are_synced_to_the_configured_guild(bot):
    names = sorted(c["name"] for c in bot.fake.commands[GUILD_ID])

    assert names == ["bind", "character", "forget", "lore", "memory", "mood", "reset", "scene", "unbind", "use"]
    (character,) = [c for c in bot.fake.commands[GUILD_ID] if c["name"] == "character"]
    assert sorted(o["name"] for o in character["options"]) == ["create", "delete", "edit", "import", "list", "show"]
    (lore,) = [c for c in bot.fake.commands[GUILD_ID] if c["name"] == "lore"]
    assert sorted(o["name"] for o in lore["options"]) == ["add", "edit", "list", "remove", "show"]
    assert None not in bot.fake.commands  # nothing global in guild mode


async def test_character_names_are_suggested_while_typing(bot):
    sent = await bot.fake.slash("bind", {"character": "ham"}, user=BOB, channel=LOBBY, focused="character")

    (callback,) = await bot.fake.wait_for(lambda: bot.fake.callbacks(sent), what="the suggestions")
    assert callback.body["type"] == 8
    assert callback.body["data"]["choices"] == [{"name": "Hamlet", "value": "Hamlet"}]


async def test_a_failing_command_is_logged_and_answered_briefly(bot, discord_logs, monkeypatch):
    async def broken(*args, **kwargs):
        raise RuntimeError("the database fell over")

    monkeypatch.setattr(bot.app.commands, "mood", broken)
    sent = await bot.fake.slash("mood", user=ALICE)

    assert await bot.fake.answer_to(sent) == FAILED
    assert "slash command /mood failed" in discord_logs.text and "the database fell over" in discord_logs.text


async def test_an_admin_imports_a_png_card_and_show_presents_its_avatar(bot):
    png = png_card()
    sent = await bot.fake.slash(
        "character import", user=BOB, permissions=MANAGE_GUILD, attachments={"card": ("ophelia.png", png)}
    )

    answer = await bot.fake.answer_to(sent)
    assert answer.startswith("Imported Ophelia. It has no world, traits, mbti, style")
    imported = await bot.app.store.characters.get_by_name("Ophelia")
    assert imported.card["data"]["extensions"]["some_other_app"] == {"keep": True}
    assert await bot.app.store.characters.avatar(imported.id) == (png, "png")

    shown = await bot.fake.slash("character show", {"name": "Ophelia"}, user=ALICE)
    assert (await bot.fake.answer_to(shown)).startswith("Ophelia (public, en)")
    (followup,) = bot.fake.followups(shown)
    assert followup.body["flags"] & 64
    (embed,) = followup.body["embeds"]
    assert embed["title"] == "Ophelia" and embed["thumbnail"]["url"] == "attachment://avatar.png"
    assert followup.files == {"avatar.png": png}


async def test_show_without_an_avatar_is_plain_text(bot):
    shown = await bot.fake.slash("character show", {"name": "Hamlet"}, user=ALICE)

    assert (await bot.fake.answer_to(shown)).startswith("Hamlet (public, en)")
    (followup,) = bot.fake.followups(shown)
    assert not followup.body.get("embeds") and followup.files == {}


async def test_a_bad_png_card_is_refused_in_one_line_and_nothing_is_stored(bot):
    sent = await bot.fake.slash("character import", user=OWNER, attachments={"card": ("nobody.png", placeholder_png("Nobody"))})

    assert await bot.fake.answer_to(sent) == (
        "Could not import the card: The PNG has no character card in it (no 'chara' or 'ccv3' text chunk)."
    )
    assert [c.name for c in await bot.app.store.characters.list()] == ["Hamlet"]


async def test_an_attachment_over_the_limit_is_refused_without_downloading_it(bot):
    bot.app.commands.max_card_bytes = 1000
    sent = await bot.fake.slash("character import", user=OWNER, attachments={"card": ("ophelia.png", png_card())})

    assert (await bot.fake.answer_to(sent)).endswith("a card may be at most 1,000.")
    assert bot.fake.downloads == []
    assert await bot.app.store.characters.get_by_name("Ophelia") is None


async def test_an_admin_manages_the_lorebook_of_the_character_here(bot):
    await bot.fake.answer_to(await bot.fake.slash("bind", {"character": "Hamlet"}, permissions=MANAGE_GUILD))
    sent = await bot.fake.slash("lore add", {"keys": "Yorick, jester", "content": "Yorick was the king's jester.", "order": 50}, permissions=MANAGE_GUILD)
    assert await bot.fake.answer_to(sent) == "Added entry 1 to Hamlet's lorebook."
    sent = await bot.fake.slash("lore edit", {"number": 1, "logic": "not_any", "secondary_keys": "skull"}, permissions=MANAGE_GUILD)
    assert await bot.fake.answer_to(sent) == "Updated entry 1 of Hamlet's lorebook."
    sent = await bot.fake.slash("lore list", {}, permissions=MANAGE_GUILD)
    assert "1. [Yorick, jester] order 50: Yorick was the king's jester." in await bot.fake.answer_to(sent)
    card = (await bot.app.store.characters.get_by_name("Hamlet")).card
    before = json.dumps(card, sort_keys=True)
    (entry,) = card["data"]["character_book"]["entries"]
    assert entry["secondary_keys"] == ["skull"] and entry["extensions"]["selectiveLogic"] == 2

    refused = await bot.fake.slash("lore remove", {"number": 1}, user=BOB)
    assert await bot.fake.answer_to(refused) == ADMIN_ONLY
    wrong = await bot.fake.slash("lore edit", {"number": 5, "content": "x"}, permissions=MANAGE_GUILD)
    assert await bot.fake.answer_to(wrong) == "There is no entry 5: the lorebook has entries 1 to 1."
    assert json.dumps((await bot.app.store.characters.get_by_name("Hamlet")).card, sort_keys=True) == before
