"""Importing card files through the command layer: PNG, CharX and JSON with their avatars; every bad file refused."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from core.card_files import read_card_file
from core.commands import ADMIN_ONLY, Actor, Commands
from core.events import Platform
from core.hot import HotState
from storage.cache import MemoryCache
from storage.tables import characters
from tests.card_builders import BAD_FILES, charx_card, foreign_card, json_card, png_card

OWNER = Actor(Platform.DISCORD, "u-owner", "Owner", is_owner=True)
USER = Actor(Platform.DISCORD, "u-plain", "Plain")


def commands_on(store, **options) -> Commands:
    cache = MemoryCache()
    return Commands(store, cache, HotState(store, cache, ttl_s=60), **options)


async def stored_rows(store) -> int:
    async with store.engine.connect() as conn:
        return (await conn.execute(sa.select(sa.func.count()).select_from(characters))).scalar_one()


async def test_a_png_card_is_imported_with_its_image_as_the_avatar(store) -> None:
    png = png_card()
    outcome = await commands_on(store).import_character(OWNER, None, png, "ophelia.png")

    assert outcome.ok, outcome.message
    assert outcome.message.startswith("Imported Ophelia. It has no world, traits, mbti, style")
    character = outcome.character
    assert character.card["data"]["extensions"]["some_other_app"] == {"keep": True}
    assert set(character.profile.missing) >= {"world", "traits", "mbti", "style"}
    assert await store.characters.avatar(character.id) == (png, "png")


async def test_a_charx_card_is_imported_with_its_icon_as_the_avatar(store) -> None:
    charx = charx_card()
    outcome = await commands_on(store).import_character(OWNER, None, charx, "ophelia.charx")

    assert outcome.ok, outcome.message
    assert await store.characters.avatar(outcome.character.id) == (read_card_file(charx).avatar, "png")


@pytest.mark.parametrize("raw", [json_card(), json_card().decode()], ids=["bytes", "text"])
async def test_a_json_card_is_imported_without_an_avatar(store, raw) -> None:
    outcome = await commands_on(store).import_character(OWNER, None, raw, "ophelia.json")

    assert outcome.ok, outcome.message
    assert await store.characters.avatar(outcome.character.id) is None


@pytest.mark.parametrize("label, filename, make, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
async def test_a_bad_card_file_is_refused_in_one_line_and_nothing_is_stored(store, label, filename, make, message) -> None:
    outcome = await commands_on(store).import_character(OWNER, None, make(), filename)

    assert not outcome.ok
    assert outcome.message.startswith("Could not import the card: ") and message.lower() in outcome.message.lower()
    assert "\n" not in outcome.message
    assert await stored_rows(store) == 0


async def test_a_file_over_the_configured_limit_is_refused_and_nothing_is_stored(store) -> None:
    png = png_card()
    outcome = await commands_on(store, max_card_bytes=len(png) - 1).import_character(OWNER, None, png, "ophelia.png")

    assert not outcome.ok
    assert outcome.message == f"Could not import the card: The file is {len(png):,} bytes; the limit is {len(png) - 1:,}."
    assert await stored_rows(store) == 0


async def test_a_second_card_with_the_same_name_changes_neither_card_nor_avatar(store) -> None:
    commands = commands_on(store)
    first = await commands.import_character(OWNER, None, png_card(), "ophelia.png")
    other = foreign_card("OPHELIA")
    second = await commands.import_character(OWNER, None, charx_card(other, png_card(foreign_card("X"))), "o.charx")

    assert not second.ok and "already a character named" in second.message
    assert await stored_rows(store) == 1
    assert await store.characters.avatar(first.character.id) == (png_card(), "png")


async def test_a_non_admin_import_is_refused_before_the_file_is_read(store) -> None:
    outcome = await commands_on(store).import_character(USER, None, b"not even a card", "x.png")

    assert outcome.message == ADMIN_ONLY
    assert await stored_rows(store) == 0


async def test_a_card_with_nul_and_lone_surrogates_is_stored_clean(store) -> None:
    card = {"name": "Yor\u0000ick", "description": "A fellow\u001b of \ud800infinite jest.", "first_mes": "Alas\u0000!"}
    raw = __import__("json").dumps(card).encode()  # JSON escapes: the text is bad only once parsed
    outcome = await commands_on(store).import_character(OWNER, None, raw, "yorick.json")

    assert outcome.ok, outcome.message
    stored = await store.characters.get_by_name("Yorick")
    assert stored is not None
    assert stored.card["data"]["description"] == "A fellow of \ufffdinfinite jest."
    assert stored.card["data"]["first_mes"] == "Alas!"


async def test_a_card_with_an_oversized_number_is_refused_in_one_line(store) -> None:
    raw = b'{"name": "Big", "n": ' + b"1" * 100_000 + b"}"
    outcome = await commands_on(store).import_character(OWNER, None, raw, "big.json")

    assert not outcome.ok
    assert "a number with 100,000 digits" in outcome.message and "\n" not in outcome.message
    assert await stored_rows(store) == 0
