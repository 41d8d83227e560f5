"""Lorebooks through the engine, against the recording TGI-protocol server: an entry reaches the
model's scene exactly when its key is in the scanned turns, within the budget; admins change
entries with /lore and a bad command changes nothing; `personae prompt` prints the same bytes the
engine sent; import and export keep every field of a book."""

from __future__ import annotations

import json

import pytest

from core.cards import card_json
from core.commands import Actor
from core.events import Platform
from tests.engine.conftest import build_world
from tests.engine.test_prompt_parity import personae_prompt
from tests.engine.test_training_layout import default_world
from tests.tgi_server import TGIServer

BD_RP = "yuyouyu/Mistral-Nemo-BD-RP"
YORICK = "Yorick was the king's jester; Hamlet held his skull."
GHOST = "The ghost of the old king walks the battlements at midnight."
ALWAYS = "Denmark is at war with Norway."


def entry(keys, content, **fields) -> dict:
    base = {"keys": list(keys), "content": content, "extensions": {}, "enabled": True, "insertion_order": 100}
    base.update(fields)
    return base


async def give_book(world, book: dict) -> dict:
    store = world.app.store
    character = await store.characters.get_by_name(world.character_name)
    card = json.loads(card_json(character.card))
    card["data"]["character_book"] = book
    await store.characters.replace(character.id, card)
    world.app.engine.hot.forget_character(character.id)
    return card


def scene_of(body: dict) -> str:
    """The scene line of the system prompt a chat request carried."""
    system = body["messages"][0]["content"]
    return system.split("Current scene:\n", 1)[1].split("\n", 1)[0]


@pytest.fixture
async def lworld(store, cache, tgi):
    w = await build_world(store, cache, tgi)
    yield w
    await w.app.engine.drain()
    await w.app.model.close()


async def test_an_entry_is_in_the_scene_exactly_while_its_key_is_in_the_scanned_turns(lworld) -> None:
    await give_book(lworld, {"entries": [entry(["Yorick"], YORICK), entry(["ghost"], GHOST, insertion_order=50)], "extensions": {}})
    scenes = []
    for text in ("Good evening.", "Do you remember Yorick?", "Tell me of the night.", "And the weather?", "Any ghost tonight?"):
        await lworld.say(text)
        scenes.append(scene_of(lworld.tgi.bodies()[-1]))
    assert scenes[0] == "Elsinore at night."
    assert scenes[1] == f"Elsinore at night. {YORICK}"  # the new message
    # the default depth is 2: the new message and the reply before it, so Yorick's turn is out of reach
    assert scenes[2] == "Elsinore at night." and scenes[3] == "Elsinore at night."
    assert scenes[4] == f"Elsinore at night. {GHOST}"


async def test_the_cards_scan_depth_reaches_further_back_and_the_budget_drops_the_lowest_order(lworld) -> None:
    await give_book(lworld, {
        "entries": [
            entry(["Yorick"], YORICK, insertion_order=10),
            entry(["ghost"], GHOST, insertion_order=50),
            entry([], ALWAYS, constant=True, insertion_order=60),
        ],
        "scan_depth": 4, "extensions": {},
    })
    await lworld.say("Yorick and the ghost.")
    await lworld.say("Go on.")
    # depth 4: the first message is still scanned; in the scene, lowest insertion order first
    assert scene_of(lworld.tgi.bodies()[-1]) == f"Elsinore at night. {YORICK} {GHOST} {ALWAYS}"
    character = await lworld.app.store.characters.get_by_name(lworld.character_name)
    book = json.loads(card_json(character.card))["data"]["character_book"]
    # the budget is taken highest order first: the constant and the ghost fit (31 tokens by estimate),
    # Yorick would bring the total to 49: over the card's budget of 40, it is dropped
    book["token_budget"] = 40
    await give_book(lworld, book)
    await lworld.say("Yorick, the ghost, again.")
    assert scene_of(lworld.tgi.bodies()[-1]) == f"Elsinore at night. {GHOST} {ALWAYS}"


async def test_lore_commands_change_the_next_prompt_and_bad_ones_change_nothing(lworld) -> None:
    commands, admin, place = lworld.app.commands, lworld.admin, lworld.place
    added = await commands.lore(admin, place, f"add keys=Yorick, jester; content={YORICK}")
    assert added.ok and added.message.startswith("Added entry 1"), added.message
    await lworld.say("Alas, poor Yorick.")
    assert scene_of(lworld.tgi.bodies()[-1]) == f"Elsinore at night. {YORICK}"

    assert (await commands.lore(admin, place, "edit 1 enabled=off")).ok
    await lworld.say("Alas, poor Yorick.")
    assert scene_of(lworld.tgi.bodies()[-1]) == "Elsinore at night."
    assert (await commands.lore(admin, place, "edit 1 enabled=on; keys=skull")).ok
    listed = await commands.lore(admin, place, "list")
    assert listed.ok and "1. [skull] order 100: Yorick was" in listed.message

    async def card():
        return json.dumps((await lworld.app.store.characters.get_by_name(lworld.character_name)).card, sort_keys=True)

    before = await card()
    plain = Actor(Platform.DISCORD, "u-plain", "Plain")
    bad = {
        "add keys=x": "content",
        "add content=no keys": "needs keys",
        "edit 2 content=x": "no entry 2",
        "edit 1 logic=sometimes": "and_any, not_all",
        "edit 1 colour=red": "no field 'colour'",
        "edit 1 keys=/un(closed/": "regular expression",
        "remove 9": "no entry 9",
        "show zero": "entry number",
        "list Nobody": "no character called 'Nobody'",
        "shout 1": "/lore action",
    }
    for text, why in bad.items():
        outcome = await commands.lore(admin, place, text)
        assert not outcome.ok and why in outcome.message, (text, outcome.message)
        assert "\n" not in outcome.message and len(outcome.message) < 300, outcome.message
    refused = await commands.lore(plain, place, "remove 1")
    assert not refused.ok and "admin" in refused.message
    assert await card() == before

    removed = await commands.lore(admin, place, "remove 1")
    assert removed.ok, removed.message
    await lworld.say("The skull of Yorick.")
    assert scene_of(lworld.tgi.bodies()[-1]) == "Elsinore at night."


async def test_personae_prompt_prints_the_bytes_the_engine_sent_with_a_lorebook(store, cache, tmp_path) -> None:
    lines = ["Good evening, my lord.", "Do you remember Yorick?", "What walks at midnight?"]
    async with TGIServer(model_id=BD_RP, reply=lambda body: f"(bows) the ghost, reply {body['prompt'].count('[INST]')}") as tgi:
        world = await default_world(store, cache, tgi, zh=False)
        try:
            card = await give_book(world, {"entries": [
                entry(["Yorick"], YORICK + "\n{{user}} never met him."),
                entry(["ghost"], GHOST, insertion_order=5),
                entry(["/midnight/i"], "@@dont_activate\nNever shown."),
            ], "scan_depth": 3, "extensions": {}})
            path = tmp_path / "card.json"
            path.write_text(card_json(card), encoding="utf-8")
            history: list[dict] = []
            for text in lines:
                reply, _ = await world.say(text)
                sent = tgi.bodies("/v1/completions")[-1]["prompt"]
                assert personae_prompt(tmp_path, path, history, text, "--raw") == sent
                history += [{"role": "user", "content": text}, {"role": "assistant", "content": reply.text}]
            # the last prompt: Yorick (two turns back, within depth 3), and the ghost (the reply before)
            assert f"Current scene:\nElsinore at night. {GHOST} {YORICK} Elena never met him.\n" in sent
            assert "Never shown" not in sent
        finally:
            await world.app.engine.drain()
            await world.app.model.close()


# A book that uses every V2 and V3 field, SillyTavern's entry extensions, and fields no spec knows.
FULL_BOOK = {
    "name": "Elsinore",
    "description": "What the castle knows.",
    "scan_depth": 4,
    "token_budget": 512,
    "recursive_scanning": False,
    "extensions": {"vendor/book": {"nested": [1, {"x": None}]}},
    "unknown_book_field": "kept",
    "entries": [
        {
            "keys": ["Yorick", "/jest(er)?/i"],
            "content": "@@scan_depth 2\n" + YORICK,
            "extensions": {
                "position": 0, "exclude_recursion": False, "prevent_recursion": True, "delay_until_recursion": False,
                "display_index": 0, "probability": 100, "useProbability": True, "depth": 4, "selectiveLogic": 3,
                "group": "court", "group_override": False, "group_weight": 100, "scan_depth": None,
                "case_sensitive": None, "match_whole_words": None, "use_group_scoring": None, "automation_id": "",
                "role": 0, "vectorized": False, "sticky": 0, "cooldown": 0, "delay": 0, "triggers": [],
                "ignore_budget": False, "vendor/entry": {"deep": [True, 1.5]},
            },
            "enabled": True,
            "insertion_order": 10,
            "case_sensitive": False,
            "use_regex": False,
            "constant": False,
            "name": "Yorick",
            "priority": 5,
            "id": 3,
            "comment": "the jester",
            "selective": True,
            "secondary_keys": ["skull", "grave"],
            "position": "after_char",
            "unknown_entry_field": [1, 2],
        },
        {"keys": [], "content": ALWAYS, "extensions": {}, "enabled": False, "insertion_order": 1, "constant": True, "use_regex": True},
    ],
}


def v3_card(name: str) -> dict:
    return {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {
            "name": name, "description": "A prince.", "personality": "", "scenario": "Elsinore.", "first_mes": "",
            "mes_example": "", "creator_notes": "", "system_prompt": "", "post_history_instructions": "",
            "alternate_greetings": [], "group_only_greetings": [], "tags": [], "creator": "", "character_version": "1",
            "character_book": json.loads(json.dumps(FULL_BOOK)), "extensions": {"vendor/card": 1},
        },
    }


async def test_a_lorebook_round_trips_with_every_field_through_import_edit_and_export(lworld, tmp_path) -> None:
    from core.card_files import export_card, read_card_file

    commands, admin = lworld.app.commands, lworld.admin
    owner = Actor(Platform.DISCORD, "owner", "Owner", is_owner=True)
    imported = await commands.import_character(owner, None, json.dumps(v3_card("Hamlet-Lore")).encode())
    assert imported.ok, imported.message
    stored = imported.character.card
    assert stored["data"]["character_book"] == FULL_BOOK
    for fmt in ("json", "png", "charx"):
        read = read_card_file(export_card(stored, None, fmt)).card
        assert read["data"]["character_book"] == FULL_BOOK, fmt

    # an edit changes the fields it names; every other field, known or not, is exported as it came
    assert (await commands.lore_edit(admin, lworld.place, 1, {"content": "Yorick, the jester.", "priority": 9}, "Hamlet-Lore")).ok
    edited = (await lworld.app.store.characters.get_by_name("Hamlet-Lore")).card
    expected = json.loads(json.dumps(FULL_BOOK))
    expected["entries"][0].update(content="Yorick, the jester.", priority=9)
    assert edited["data"]["character_book"] == expected
    assert read_card_file(export_card(edited, None, "png")).card["data"]["character_book"] == expected


async def test_a_long_lorebook_is_listed_within_one_chat_message(lworld) -> None:
    await give_book(lworld, {"entries": [entry([f"key{i}"], f"Entry {i}: " + "lore " * 40) for i in range(200)], "extensions": {}})
    listed = await lworld.app.commands.lore(lworld.admin, lworld.place, "list")
    assert listed.ok and len(listed.message) <= 4096
    assert listed.message.splitlines()[1].startswith("1. [key0] order 100: Entry 0:")
    assert listed.message.endswith("to 200: /lore show N).")
    shown = await lworld.app.commands.lore(lworld.admin, lworld.place, "show 200")
    assert shown.ok and shown.message.startswith("200. [key199] order 100\nEntry 199:")
