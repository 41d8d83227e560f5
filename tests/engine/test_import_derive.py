"""Importing a card that lacks world, traits, MBTI and style: with a model server the command layer
derives them (stored marked as derived); when that fails, or with no server, it says what the
prompt uses instead. The model is the TGI-protocol double; every backend of storage is real."""

from __future__ import annotations

import json
from typing import Any, Mapping

import pytest

from bots.compose import wire
from bots.llm.client import ModelClient
from core.cards import DERIVED_KEY, EXTENSION_KEY
from core.commands import Actor, Commands, Place
from core.derive import DERIVE_PROMPT
from core.events import Platform
from core.hot import HotState
from storage.cache import MemoryCache
from tests.card_builders import foreign_card, png_card
from tests.engine.conftest import build_world, make_settings
from tests.tgi_server import DEFAULT_REPLY, TGIServer

OWNER = Actor(Platform.DISCORD, "u-owner", "Owner", is_owner=True)
PROPOSAL = {"world": "The Danish court at Elsinore", "traits": ["gentle", "obedient", "fragile"], "mbti": "ISFJ", "style": ["soft", "hesitant"]}
FOUR = ("world", "traits", "mbti", "style")
DERIVE_MARKER = DERIVE_PROMPT.split("{", 1)[0][:60]  # the opening words of the derive request


def is_derive_request(body: Mapping[str, Any]) -> bool:
    return DERIVE_MARKER in body["messages"][-1]["content"]


def answers(proposal: str) -> Any:
    """The double's reply function: ``proposal`` to a derive request, a role-play line to anything else."""
    return lambda body: proposal if is_derive_request(body) else DEFAULT_REPLY


@pytest.fixture
async def world(store, cache, tgi):
    w = await build_world(store, cache, tgi)
    yield w
    await w.app.engine.drain()
    await w.app.model.close()


async def import_ophelia(commands: Commands):
    outcome = await commands.import_character(OWNER, None, png_card(), "ophelia.png")
    assert outcome.ok, outcome.message
    return outcome


async def test_import_derives_the_missing_fields_and_the_prompt_then_has_no_filler(world) -> None:
    world.tgi.reply = answers(json.dumps(PROPOSAL))

    outcome = await import_ophelia(world.app.commands)

    assert outcome.derived == FOUR and outcome.derive_failed is None
    assert outcome.message.startswith(
        "Imported Ophelia. Derived by the model from the card (change any with /character edit): "
        "World: The Danish court at Elsinore; Traits: gentle, obedient, fragile; MBTI: ISFJ; Style: soft, hesitant."
    )
    assert "deriving them failed" not in outcome.message
    stored = await world.app.store.characters.get_by_name("Ophelia")
    ext = stored.card["data"]["extensions"][EXTENSION_KEY]
    assert {k: ext[k] for k in PROPOSAL} == PROPOSAL and ext[DERIVED_KEY] == list(FOUR)
    assert stored.profile.derived == FOUR and not set(FOUR) & set(stored.profile.missing)
    assert stored.card["data"]["extensions"]["some_other_app"] == {"keep": True}
    (derive_body,) = [b for b in world.tgi.bodies() if is_derive_request(b)]
    assert "A noblewoman of Denmark" in derive_body["messages"][-1]["content"]

    # The next prompt carries the derived profile, and no "not specified".
    place = Place(Platform.DISCORD, world.chat, "chan-ophelia")
    assert (await world.app.commands.bind(world.admin, place, "Ophelia")).ok
    reply, _ = await world.say("Good morrow, lady.", channel_id="chan-ophelia")
    assert reply.status.value == "answered"
    system = world.tgi.bodies()[-1]["messages"][0]["content"]
    assert "not specified" not in system
    assert "Introverted (I), Sensing (S), Feeling (F), Judging (J)" in system
    assert "The Danish court at Elsinore" in system and "soft, hesitant" in system

    shown = (await world.app.commands.show_character(OWNER, "Ophelia")).message
    for label, value in [("World", "The Danish court at Elsinore"), ("Traits", "gentle, obedient, fragile"), ("MBTI", "ISFJ"), ("Style", "soft, hesitant")]:
        assert f"\n{label}: {value} (derived by the model)\n" in shown, shown


async def test_an_edit_of_a_derived_field_removes_its_mark(world) -> None:
    world.tgi.reply = answers(json.dumps(PROPOSAL))
    await import_ophelia(world.app.commands)

    edited = await world.app.commands.edit_character(OWNER, None, "Ophelia", {"mbti": "INFP", "traits": "wistful,loyal"})

    assert edited.ok, edited.message
    assert edited.character.profile.derived == ("world", "style")
    assert edited.character.card["data"]["extensions"][EXTENSION_KEY][DERIVED_KEY] == ["world", "style"]
    shown = (await world.app.commands.show_character(OWNER, "Ophelia")).message
    assert "\nMBTI: INFP\n" in shown and "\nTraits: wistful, loyal\n" in shown
    assert "\nWorld: The Danish court at Elsinore (derived by the model)\n" in shown
    # Editing the last two: no mark is left in the card at all.
    await world.app.commands.edit_character(OWNER, None, "Ophelia", {"world": "Elsinore", "style": "soft"})
    stored = await world.app.store.characters.get_by_name("Ophelia")
    assert DERIVED_KEY not in stored.card["data"]["extensions"][EXTENSION_KEY] and stored.profile.derived == ()
    assert "derived" not in (await world.app.commands.show_character(OWNER, "Ophelia")).message


def assert_the_fallback_note(message: str, reason: str | None) -> None:
    """One line: the fields it lacks, why deriving failed, what the prompt uses, and the commands."""
    assert "\n" not in message
    assert message.startswith("Imported Ophelia. It has no world, traits, mbti, style, language, emotion, relationship yet")
    if reason is not None:
        assert "yet (deriving them failed: " in message and reason in message, message
    else:
        assert "deriving" not in message
    assert (
        "so the prompt uses World: A noblewoman of Denmark; Traits: gentle, obedient, fragile; MBTI: not specified; "
        "Style: natural; Language: English; Emotion: happiness 0, sadness 0, disgust 0, fear 0, surprise 0, anger 0; "
        "Relationship: 3."
    ) in message, message
    assert message.endswith("Set them with /character edit or `personae characters derive 'Ophelia'`.")


@pytest.mark.parametrize(
    "script, reason",
    [
        (lambda tgi: setattr(tgi, "reply", answers("She seems kind and shy.")), "the model's proposal was not usable: the model's answer holds no JSON object"),
        (lambda tgi: setattr(tgi, "reply", answers(json.dumps({**PROPOSAL, "mbti": "XYZW"}))), "the model's proposal was not usable: MBTI 'XYZW' is not a type"),
        (lambda tgi: tgi.fail("422", times=5), "Input validation error"),
        (lambda tgi: tgi.fail("hang", hang_s=30), "the model server gave no proposal within 0.3 s"),
    ],
    ids=["no-json", "bad-mbti", "server-error", "timeout"],
)
async def test_when_deriving_fails_the_card_is_imported_with_a_one_line_note(world, script, reason) -> None:
    # The deadline is the case's subject only for the hang; the others get their failure from the
    # server's answer, and a 0.3 s deadline could pass first on a busy machine.
    world.app.commands.derive_timeout_s = 0.3 if "within" in reason else 30
    script(world.tgi)

    outcome = await import_ophelia(world.app.commands)

    assert outcome.derived == () and reason in (outcome.derive_failed or "")
    assert_the_fallback_note(outcome.message, reason)
    stored = await world.app.store.characters.get_by_name("Ophelia")
    assert stored.card["data"]["extensions"].get(EXTENSION_KEY) is None  # nothing derived, nothing marked
    if "within" not in reason:  # a 0.3 s deadline may pass before a busy machine's request arrives
        assert world.tgi.count("/v1/chat/completions") >= 1  # it was asked


async def test_a_model_server_that_is_down_leaves_the_import_done_with_the_note(store) -> None:
    cache = MemoryCache()
    down = ModelClient("http://127.0.0.1:1", retries=0, timeout_s=2.0, concurrency=1)
    try:
        commands = Commands(store, cache, HotState(store, cache, ttl_s=60), derive_model=down, derive_timeout_s=10)
        outcome = await import_ophelia(commands)
    finally:
        await down.close()

    assert outcome.derive_failed and "127.0.0.1:1" in outcome.derive_failed
    assert_the_fallback_note(outcome.message, outcome.derive_failed)
    assert (await store.characters.get_by_name("Ophelia")) is not None


async def test_without_a_model_server_the_import_and_show_say_what_the_prompt_uses(store, cache, tgi) -> None:
    # The app's model is there (the bundled one would be), but PERSONAE_LLM_URL is unset: nothing is derived.
    client = ModelClient(tgi.base_url, retries=0, timeout_s=2.0, concurrency=1)
    app = wire(make_settings(llm_url=None), store, cache, client)
    try:
        outcome = await import_ophelia(app.commands)
        shown = (await app.commands.show_character(OWNER, "Ophelia")).message
    finally:
        await client.close()

    assert tgi.count("/v1/chat/completions") == 0
    assert outcome.derived == () and outcome.derive_failed is None
    assert_the_fallback_note(outcome.message, None)
    assert "\nWorld: A noblewoman of Denmark (missing: the prompt uses this)\n" in shown
    assert "\nTraits: gentle, obedient, fragile (missing: the prompt uses this)\n" in shown
    assert "\nMBTI: not specified (missing: the prompt uses this)\n" in shown
    assert "\nStyle: natural (missing: the prompt uses this)\n" in shown
    assert (
        "Missing profile fields: world, traits, mbti, style, language, emotion, relationship "
        "(set them with /character edit or `personae characters derive 'Ophelia'`)."
    ) in shown.splitlines()


async def test_a_card_with_every_derivable_field_asks_the_model_nothing(world) -> None:
    card = foreign_card()
    card["data"]["extensions"][EXTENSION_KEY] = {k: PROPOSAL[k] for k in FOUR}
    outcome = await world.app.commands.import_character(OWNER, None, png_card(card), "ophelia.png")

    assert outcome.ok and outcome.derived == ()
    assert world.tgi.count("/v1/chat/completions") == 0
    assert outcome.message.startswith("Imported Ophelia. It has no language, emotion, relationship yet, so the prompt uses Language: English;")
