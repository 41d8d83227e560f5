"""Ten turns through the real Engine with the lexicon appraiser: kind words, then insults."""

from __future__ import annotations

import pytest

from bots.compose import wire
from core.commands import Actor
from core.events import Platform
from core.emotions import EMOTIONS, EmotionState
from storage.cache import MemoryCache
from storage.database import SqlStore
from tests.dynamics.conftest import close, levels, person, stored_state, zh_world
from tests.engine.conftest import build_world, make_settings

KIND_EN = [
    "Good evening, my dear friend. You are so kind to me.",
    "Thank you for listening, you are wonderful.",
    "I love our talks; you make me happy.",
    "You are the best friend I have ever had.",
    "You are brave and good, and I admire you.",
]
INSULTS_EN = [
    "You are a stupid, worthless fool.",
    "I hate you, you pathetic idiot.",
    "You disgust me, you filthy liar.",
    "You are a useless, cowardly wretch.",
    "Shut up, you miserable, hateful clown.",
]
KIND_ZH = ["你好，我亲爱的朋友，你真好。", "谢谢你，我很喜欢和你说话。", "你真是太温柔了，我好开心！", "你是我最好的朋友。", "我很佩服你，你真勇敢。"]
INSULTS_ZH = ["你这个混蛋，我讨厌你！", "你真恶心，蠢货。", "滚开，你这个废物！", "你真可恶，我恨你。", "你这个骗子，真让人讨厌。"]
REPLIES = {
    "en": ("(smiles) Your words warm my heart, friend.", "(scowls) Begone from my sight."),
    "zh": ("（微笑）谢谢你，朋友。", "（皱眉）你走吧。"),
}


async def check_rise_then_fall(world, kind, insults, language, baseline: dict[str, int]) -> list[dict[str, int]]:
    warm, cold = REPLIES[language]
    replies = {text: warm for text in kind} | {text: cold for text in insults}
    world.tgi.reply = lambda body: replies[body["messages"][-1]["content"]]
    course = [baseline]
    for text in kind + insults:
        reply, _ = await world.say(text)
        assert reply.status.value == "answered"
        # The prompt of this turn was built on the state the previous appraisal wrote (the cache
        # copy was refreshed after the database update).
        system = world.tgi.bodies()[-1]["messages"][0]["content"]
        previous = dict(course[-1])
        intimacy = previous.pop("intimacy")
        assert f"\n{EmotionState(**previous).render(language)}\n" in system
        assert (f"亲密度为{intimacy}(" if language == "zh" else f"intimacy level with them is {intimacy} ") in system
        await world.app.engine.drain()
        course.append(levels(await stored_state(world)))

    for before, after in zip(course, course[1:]):
        for name in EMOTIONS:
            assert abs(after[name] - before[name]) <= 2, (name, before, after)
        assert abs(after["intimacy"] - before["intimacy"]) <= 1, (before, after)
    kind_end, end = course[5], course[10]
    for series in ("happiness", "intimacy"):
        rising = [c[series] for c in course[:6]]
        falling = [c[series] for c in course[5:]]
        assert rising == sorted(rising) and rising[-1] > rising[0], (series, rising)
        assert falling == sorted(falling, reverse=True) and falling[-1] < falling[0], (series, falling)
    assert end["anger"] > kind_end["anger"] and end["disgust"] > kind_end["disgust"]

    # Every turn left an audit row saying which appraiser moved what, after which reply.
    rows = await world.app.store.relationships.changes(await person(world), limit=50)
    assert len(rows) == 10 and {r.appraiser for r in rows} == {"lexicon"}
    assert all(r.message_id is not None and r.reason.startswith(f"lexicon ({language})") for r in rows)
    assert [levels(r.after) for r in reversed(rows)] == course[1:]
    return course


async def same_after_restart(world, store, expected: dict[str, int]) -> None:
    """A new store and a cold cache on the same database, a new Engine: the same state."""
    again = await SqlStore.open(store.engine.url.render_as_string(hide_password=False))
    cache = MemoryCache()
    try:
        app = wire(make_settings(), again, cache, world.app.model)
        key = await person(world)
        character = await again.characters.get(key.character_id)
        state = await app.engine.hot.read_state(key, character)
        assert levels(state) == expected
        mood = await app.commands.mood(Actor(Platform.DISCORD, "u1", "Elena"), world.place)
        assert levels(mood.state) == expected
    finally:
        await cache.close()
        await again.close()


async def test_kind_words_then_insults_in_english(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi)
    try:
        baseline = {"happiness": 1, "sadness": 8, "disgust": 5, "fear": 7, "surprise": 6, "anger": 4, "intimacy": 7}
        course = await check_rise_then_fall(world, KIND_EN, INSULTS_EN, "en", baseline)
        await same_after_restart(world, store, course[-1])
    finally:
        await close(world)


async def test_kind_words_then_insults_in_chinese(store, cache, tgi) -> None:
    world = await zh_world(store, cache, tgi)
    try:
        baseline = {"happiness": 3, "sadness": 4, "disgust": 1, "fear": 2, "surprise": 2, "anger": 1, "intimacy": 5}
        course = await check_rise_then_fall(world, KIND_ZH, INSULTS_ZH, "zh", baseline)
        await same_after_restart(world, store, course[-1])
    finally:
        await close(world)


@pytest.mark.parametrize("text", ["What time is it?", "现在几点了？"])
async def test_a_neutral_exchange_changes_nothing(store, cache, tgi, text) -> None:
    world = await build_world(store, cache, tgi)
    try:
        tgi.reply = "It is nearly midnight."
        await world.say(text)
        await world.app.engine.drain()
        state = await stored_state(world)
        assert state.version == 0
        assert await world.app.store.relationships.changes(await person(world)) == []
    finally:
        await close(world)
