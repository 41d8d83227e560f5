"""Card files sent as documents (PNG, CharX, JSON), and the avatar shown as a photo when a character is picked or shown."""

from __future__ import annotations

from core.card_files import placeholder_png
from tests.card_builders import charx_card, foreign_card, png_card
from tests.telegram.conftest import OWNER_ID, Harness

GROUP = -100789


async def import_as_owner(bot: Harness, content: bytes, file_name: str) -> str:
    tg = bot.tg
    owner = tg.user(OWNER_ID, "Olga")
    chat = tg.private(owner)
    tg.send_document(chat, owner, content, file_name=file_name, caption="/character import")
    await bot.idle()
    return tg.texts(chat["id"])[-1]


async def test_an_owner_imports_a_png_card_and_its_image_becomes_the_avatar(bot: Harness) -> None:
    png = png_card()

    answer = await import_as_owner(bot, png, "ophelia.png")

    assert answer.startswith("Imported Ophelia. It has no world, traits, mbti, style")
    ophelia = await bot.app.store.characters.get_by_name("Ophelia")
    assert ophelia.card["data"]["extensions"]["some_other_app"] == {"keep": True}
    assert await bot.app.store.characters.avatar(ophelia.id) == (png, "png")


async def test_a_charx_card_imports_too(bot: Harness) -> None:
    answer = await import_as_owner(bot, charx_card(), "ophelia.charx")

    assert answer.startswith("Imported Ophelia.")
    ophelia = await bot.app.store.characters.get_by_name("Ophelia")
    assert await bot.app.store.characters.avatar(ophelia.id) is not None


async def test_a_png_without_a_card_is_refused_in_one_line_and_nothing_is_stored(bot: Harness) -> None:
    answer = await import_as_owner(bot, placeholder_png("Nobody"), "nobody.png")

    assert answer == "Could not import the card: The PNG has no character card in it (no 'chara' or 'ccv3' text chunk)."
    assert await bot.app.store.characters.list() == []


async def test_picking_a_character_with_use_shows_its_avatar_with_the_greeting(bot: Harness) -> None:
    png = png_card()
    await import_as_owner(bot, png, "ophelia.png")
    tg = bot.tg
    ann = tg.user(61, "Ann")
    chat = tg.private(ann)

    tg.say(chat, ann, "/use Ophelia")
    await bot.idle()

    ((image, caption),) = tg.photos(chat["id"])
    assert image == png
    assert caption.startswith("You are now talking to Ophelia.") and "My lord?" in caption
    assert tg.texts(chat["id"]) == [""]  # the answer is the photo's caption, not a second message


async def test_picking_a_character_with_its_button_shows_its_avatar(bot: Harness) -> None:
    png = png_card()
    await import_as_owner(bot, png, "ophelia.png")
    tg = bot.tg
    ann = tg.user(62, "Ann")
    chat = tg.private(ann)
    tg.say(chat, ann, "/characters")
    await bot.idle()
    offer = tg.bot_messages(chat["id"])[-1]
    (button,) = [row[0] for row in offer["reply_markup"]["inline_keyboard"] if row[0]["text"] == "Ophelia"]

    tg.press(ann, chat["id"], offer["message_id"], button["callback_data"])
    await bot.idle()

    ((image, caption),) = tg.photos(chat["id"])
    assert image == png and caption.startswith("You are now talking to Ophelia.")


async def test_show_in_a_group_answers_with_the_avatar_and_the_profile(bot: Harness) -> None:
    png = png_card()
    await import_as_owner(bot, png, "ophelia.png")
    tg = bot.tg
    group, mia = tg.group(GROUP), tg.user(63, "Mia")

    tg.say(group, mia, "/character show Ophelia")
    await bot.idle()

    ((image, caption),) = tg.photos(GROUP)
    assert image == png and caption.startswith("Ophelia (public, en)\nWorld: ")
    assert "Missing profile fields: world, traits, mbti, style" in caption


async def test_a_character_without_an_avatar_is_picked_with_text_alone(bot: Harness) -> None:
    await bot.add_character("Hamlet", greeting="Who's there?")
    tg = bot.tg
    ann = tg.user(64, "Ann")
    chat = tg.private(ann)

    tg.say(chat, ann, "/use Hamlet")
    await bot.idle()

    assert tg.photos(chat["id"]) == []
    (text,) = tg.texts(chat["id"])
    assert text.startswith("You are now talking to Hamlet.") and "Who's there?" in text


async def test_a_group_member_who_is_not_an_admin_cannot_import_and_the_file_is_not_downloaded(bot: Harness) -> None:
    tg = bot.tg
    group, mia = tg.group(GROUP), tg.user(65, "Mia")

    tg.send_document(group, mia, png_card(), file_name="ophelia.png", caption="/character import")
    await bot.idle()

    assert tg.texts(GROUP) == ["Only an admin of this chat (or a bot owner) can do that."]
    assert not tg.calls_of("getFile") and not tg.calls_of("downloadFile")
    assert await bot.app.store.characters.list() == []


async def test_an_answer_too_long_for_a_caption_follows_the_photo_as_a_message(bot: Harness) -> None:
    card = foreign_card()
    card["data"]["first_mes"] = "My lord, " + "I have remembrances of yours. " * 50
    await import_as_owner(bot, png_card(card), "ophelia.png")
    tg = bot.tg
    ann = tg.user(66, "Ann")
    chat = tg.private(ann)

    tg.say(chat, ann, "/use Ophelia")
    await bot.idle()

    ((_, caption),) = tg.photos(chat["id"])
    assert caption == "Ophelia"
    (_, text) = tg.texts(chat["id"])
    assert text.startswith("You are now talking to Ophelia.") and text.endswith("I have remembrances of yours.")
