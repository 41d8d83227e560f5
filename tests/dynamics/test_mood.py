"""/mood's state and course, its picture, and `personae state` for admins."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from bots.cli import app as cli_app
from bots.mood_picture import BAR_W, BAR_X, COLOURS, ROW, TOP, mood_png, render_mood
from core.commands import Actor, Outcome
from core.events import Platform
from storage import migrate
from storage.database import SqlStore
from tests.dynamics.conftest import close, levels, stored_state
from tests.engine.conftest import build_world

ELENA = Actor(Platform.DISCORD, "u1", "Elena")
LINES = ["You are kind, thank you.", "I love our talks, dear friend.", "You are a stupid, hateful fool."]


async def test_mood_returns_the_state_and_its_course_oldest_first(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi)
    try:
        tgi.reply = "(nods) Hm."
        seen = []
        for text in LINES:
            await world.say(text)
            await world.app.engine.drain()
            seen.append(levels(await stored_state(world)))
        mood = await world.app.commands.mood(ELENA, world.place)
        assert mood.ok and levels(mood.state) == seen[-1]
        baseline = {"happiness": 1, "sadness": 8, "disgust": 5, "fear": 7, "surprise": 6, "anger": 4, "intimacy": 7}
        assert [levels(s) for s in mood.course] == [baseline, *seen]
        assert mood.message.startswith(f"{world.character_name} toward Elena:\nhappiness:")

        png = await mood_png(mood)
        image = Image.open(io.BytesIO(png))
        image.verify()
        assert image.format == "PNG" and image.size[0] >= 600
    finally:
        await close(world)


async def test_mood_before_any_change_shows_the_baseline_alone(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi)
    try:
        mood = await world.app.commands.mood(ELENA, world.place)
        assert len(mood.course) == 1 and mood.course[0] == mood.state
        assert Image.open(io.BytesIO(await mood_png(mood))).format == "PNG"
    finally:
        await close(world)


async def test_no_picture_for_a_refused_mood() -> None:
    assert await mood_png(Outcome(False, "No character plays in this channel.")) is None


def test_the_picture_draws_any_levels_and_a_chinese_title() -> None:
    from core.emotions import EmotionState
    from core.state import RelationshipState

    extremes = [
        RelationshipState(1, "discord", "u", EmotionState(), 0),
        RelationshipState(1, "discord", "u", EmotionState(10, 10, 10, 10, 10, 10), 10),
    ]
    for title in ("Hamlet", "林黛玉", None):
        image = Image.open(io.BytesIO(render_mood(extremes[-1], extremes, title=title)))
        image.load()
        assert image.mode == "RGB"


def test_each_bar_is_as_long_as_its_level_in_its_own_colour() -> None:
    from core.emotions import EmotionState
    from core.state import RelationshipState

    now = RelationshipState(1, "discord", "u", EmotionState(happiness=10, sadness=0, disgust=5, fear=3, surprise=7, anger=1), 8)
    image = Image.open(io.BytesIO(render_mood(now, [now], title="Hamlet"))).convert("RGB")
    expected = {"happiness": 10, "sadness": 0, "disgust": 5, "fear": 3, "surprise": 7, "anger": 1, "intimacy": 8}
    measured = {}
    for i, name in enumerate(["happiness", "sadness", "disgust", "fear", "surprise", "anger", "intimacy"]):
        mid = TOP + i * ROW + ROW // 2
        row = [image.getpixel((x, mid)) for x in range(BAR_X, BAR_X + BAR_W + 1)]
        measured[name] = sum(1 for pixel in row if pixel == COLOURS[name])
    # A bar covers level/10 of the track (give or take the edge pixels).
    for name, level in expected.items():
        assert abs(measured[name] - BAR_W * level / 10) <= 2, (name, level, measured)


# -- personae state ---------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture
async def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'personae.db'}"
    await migrate.upgrade(url)
    monkeypatch.chdir(tmp_path)  # no .env file from the working tree
    monkeypatch.setenv("PERSONAE_DATABASE_URL", url)
    return url


async def test_the_state_command_shows_a_persons_state_and_changes(db, tgi) -> None:
    from storage.cache import MemoryCache

    store, cache = await SqlStore.open(db), MemoryCache()
    world = await build_world(store, cache, tgi)
    try:
        tgi.reply = "(smiles) Thank you."
        for text in LINES[:2]:
            await world.say(text)
            await world.app.engine.drain()
        expected = levels(await stored_state(world))
        from core.events import ConversationKey
        from core.memory import NewMemory

        character = await store.characters.get_by_name(world.character_name)
        for channel, memory in ((world.channel, NewMemory("fact", "Elena keeps a blue lantern.", 1, 2, 9)), ("dm-u1", NewMemory("event", "They met in private.", 1, 2, 7))):
            assert await store.memories.condensed(ConversationKey(character.id, "discord", channel, "u1"), 0, 2, [memory], [])
    finally:
        await close(world)
        await cache.close()
        await store.close()

    result = await asyncio.to_thread(runner.invoke, cli_app, ["state", world.character_name, "--user", "discord:u1", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["now"] == shown["stored"] == expected and shown["version"] == 2
    assert [c["appraiser"] for c in shown["changes"]] == ["lexicon", "lexicon"]
    assert shown["changes"][0]["after"] == expected and shown["baseline"]["intimacy"] == 7
    # Its memories of the person, in every chat (the admin's view; the person sees one chat's with /memory).
    assert {c: [(m["number"], m["kind"], m["text"]) for m in ms] for c, ms in shown["memories"].items()} == {
        world.channel: [(1, "fact", "Elena keeps a blue lantern.")], "dm-u1": [(1, "event", "They met in private.")],
    }

    text = await asyncio.to_thread(runner.invoke, cli_app, ["state", world.character_name.lower(), "--user", "discord:u1"])
    assert text.exit_code == 0 and "Recent changes, newest first:" in text.stdout and "intimacy" in text.stdout
    assert f"Memories in channel {world.channel} (the person's /memory numbers):\n  1. Elena keeps a blue lantern. (fact, " in text.stdout

    for args, message in [
        (["state", world.character_name, "--user", "u1"], "--user must be PLATFORM:ID"),
        (["state", world.character_name, "--user", "myspace:1"], "--user must be PLATFORM:ID"),
        (["state", "Nobody", "--user", "discord:u1"], "there is no character called 'Nobody'"),
        (["state", world.character_name, "--user", "discord:someone-else"], "has no state toward discord:someone-else"),
    ]:
        refused = await asyncio.to_thread(runner.invoke, cli_app, args)
        assert refused.exit_code == 1 and message in refused.output, (args, refused.output)
