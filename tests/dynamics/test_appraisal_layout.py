"""The appraisals go in the layout of the replies. On the default path (PERSONAE_PROMPT_LAYOUT=auto)
a BD-RP server gets each alignment task as the raw string it was trained on, byte for byte
(``You are a helpful assistant.[INST] {task} [/INST]``, the server adds BOS), on TGI's ``/generate``
with the regex grammar that lets the analysis come first; another model gets the chat request."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from bots.compose import model_client, wire
from bots.llm.dialects import analysis_then_object
from core.appraisal import emotion_schema, relationship_schema
from core.cards import new_card
from tests.dynamics.conftest import ZH_CARD, levels, person, stored_state
from tests.engine.conftest import World, build_world, built_apps, make_settings
from tests.tgi_server import TGIServer

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
HELPER = "You are a helpful assistant."
REPLY = "(smiles) Well met, Elena."
HAMLET = {"happiness": 1, "sadness": 8, "disgust": 5, "fear": 7, "surprise": 6, "anger": 4, "intimacy": 7}
ANALYSIS = "Hamlet greets her warmly, yet the night weighs on him; there is cheer on the surface and grief beneath."
EMOTION_EN = {"happiness": 8.5, "sadness": 2, "disgust": 0, "fear": 0.5, "surprise": 9, "anger": 0}
EMOTION_ZH = {"快乐": 8.5, "悲伤": 2, "厌恶": 0, "恐惧": 0.5, "惊讶": 9, "愤怒": 0}


def raw_task(body) -> str | None:
    """``emotion`` / ``relationship`` for an appraisal sent in the training layout, else None."""
    text = body.get("inputs") or body.get("prompt") or ""
    if not text.startswith(HELPER + "[INST] "):
        return None
    return "emotion" if ("happiness score" in text or "快乐评分" in text) else "relationship"


class AlignmentStyle:
    """Replies for the turns; for the two tasks, answers as the alignment data has them: an analysis,
    then the object (fractional scores; ``fence``: the object in a ```json code fence)."""

    def __init__(self, *, zh: bool = False, fence: bool = False) -> None:
        self.zh, self.fence = zh, fence

    def __call__(self, body) -> str:
        task = raw_task(body)
        if task is None:
            return REPLY
        obj = json.dumps((EMOTION_ZH if self.zh else EMOTION_EN) if task == "emotion" else {"relationship": 7.5}, ensure_ascii=False)
        return f"{ANALYSIS}\n\n```json\n{obj}\n```" if self.fence else f"{ANALYSIS}\n{obj}"


async def default_world(store, cache, tgi: TGIServer, *, zh: bool = False, **settings) -> World:
    """A world wired as `personae run` wires it (layout auto), with the model appraiser on the same client."""
    world = await build_world(store, cache, tgi)
    await world.app.model.close()
    config = make_settings(llm_url=tgi.base_url, appraiser="model", **settings)
    assert config.prompt_layout == "auto"
    world.app = wire(config, store, cache, model_client(config, tgi.base_url))
    built_apps.append(world.app)
    if zh:
        name = f"李白-{uuid.uuid4().hex[:6]}"
        await store.characters.add(new_card(name=name, **ZH_CARD))
        assert (await world.app.commands.bind(world.admin, world.place, name)).ok
        world.character_name = name
    return world


async def close(world: World) -> None:
    await world.app.engine.drain()
    await world.app.model.close()


def expected_tasks(world: World, *, zh: bool, said: str) -> tuple[str, str]:
    name = world.character_name
    if zh:
        fields = dict(
            role_name=name, character="温柔，聪慧，坚定", MBTI="内向型（I）、直觉型（N）、情感型（F）、判断型（J）",
            style="含蓄、典雅", scene="长安城的夜晚，月光洒在石板路上。", dialogues=f"Elena: {said}\n{name}: {REPLY}",
        )
    else:
        fields = dict(
            role_name=name, character="extreme, strong, decisive", MBTI="Extraverted (E), Intuitive (N), Feeling (F), Judging (J)",
            style="indecisive, decisive, sentimental", scene="Elsinore at night.", dialogues=f"Elena: {said}\n{name}: {REPLY}",
        )
    language = "zh" if zh else "en"
    emotion = (GOLDEN / f"emotion_appraisal.{language}.txt").read_text(encoding="utf-8").format(**fields)
    relationship = (GOLDEN / f"relationship_appraisal.{language}.txt").read_text(encoding="utf-8").format(target_name="Elena", **fields)
    return emotion, relationship


@pytest.mark.parametrize("zh", [False, True], ids=["english", "chinese"])
async def test_bd_rp_gets_each_task_as_the_trained_raw_string_on_generate_and_the_answer_moves_the_state(store, cache, zh) -> None:
    async with TGIServer(model_id="yuyouyu/Mistral-Nemo-BD-RP", reply=AlignmentStyle(zh=zh)) as tgi:
        world = await default_world(store, cache, tgi, zh=zh)
        said = "你好，朋友。" if zh else "Good evening, my lord."
        try:
            reply, _ = await world.say(said)
            await world.app.engine.drain()
            assert reply.text == REPLY
            emotion_task, relationship_task = expected_tasks(world, zh=zh, said=said)
            bodies = {raw_task(b): b for b in tgi.bodies("/generate")}
            assert tgi.count("/generate") == 2 and set(bodies) == {"emotion", "relationship"}
            assert tgi.count("/v1/chat/completions") == 0  # the reply went raw too, on /v1/completions
            assert bodies["emotion"]["inputs"] == f"{HELPER}[INST] {emotion_task} [/INST]"
            assert bodies["relationship"]["inputs"] == f"{HELPER}[INST] {relationship_task} [/INST]"
            language = "zh" if zh else "en"
            for task, schema in (("emotion", emotion_schema(language)), ("relationship", relationship_schema())):
                grammar = bodies[task]["parameters"]["grammar"]
                assert grammar == {"type": "regex", "value": analysis_then_object(schema)}
                # What the double answered is an answer that grammar allows (analysis, then the object, 7.5 included).
                assert re.fullmatch(grammar["value"], AlignmentStyle(zh=zh)(bodies[task]))
                assert bodies[task]["parameters"]["max_new_tokens"] == 768
            state = await stored_state(world)
            (change,) = await world.app.store.relationships.changes(await person(world))
            assert change.appraiser == "model" and change.message_id == reply.reply_message_id
            # 8.5 -> 9, 0.5 -> 1, 7.5 -> 8 (half up), read from after the analysis.
            assert "happiness 9" in change.reason and "fear 1" in change.reason and "intimacy 8" in change.reason
            assert state.version == 1 and levels(state) != levels(change.before)
        finally:
            await close(world)


async def test_a_refused_grammar_is_retried_without_and_later_appraisals_go_without(store, cache) -> None:
    async with TGIServer(reply=AlignmentStyle(fence=True), grammar_support=False) as tgi:
        world = await default_world(store, cache, tgi)
        try:
            await world.say("Good evening, my lord.")
            await world.app.engine.drain()
            first = tgi.bodies("/generate")
            with_grammar = [b for b in first if "grammar" in b["parameters"]]
            # Both tasks may go out before the first refusal is known: each is asked again once, without.
            assert len(with_grammar) in (1, 2) and len(first) == 2 + len(with_grammar)
            assert sorted(raw_task(b) for b in first if "grammar" not in b["parameters"]) == ["emotion", "relationship"]
            # The answers (analysis, then the object in a ```json fence) were read.
            (change,) = await world.app.store.relationships.changes(await person(world))
            assert "intimacy 8" in change.reason and "happiness 9" in change.reason
            await world.say("And how fares the king?")
            await world.app.engine.drain()
            later = tgi.bodies("/generate")[len(first):]
            assert len(later) == 2 and all("grammar" not in b["parameters"] for b in later)
            assert (await stored_state(world)).version == 2
        finally:
            await close(world)


async def test_a_chat_layout_server_still_gets_the_chat_request(store, cache) -> None:
    async with TGIServer(model_id="HuggingFaceTB/SmolLM2-135M-Instruct") as tgi:
        tgi.reply = lambda body: (
            '{"relationship": 9}' if "intimacy score" in body["messages"][-1]["content"]
            else '{"happiness": 9, "sadness": 0, "disgust": 0, "fear": 0, "surprise": 9, "anger": 0}'
            if body["messages"][0]["content"] == HELPER else REPLY
        )
        world = await default_world(store, cache, tgi)
        said = "Good evening, my lord."
        try:
            await world.say(said)
            await world.app.engine.drain()
            assert tgi.count("/generate") == tgi.count("/v1/completions") == 0
            appraisals = [b for b in tgi.bodies() if b["messages"][0]["content"] == HELPER]
            assert len(appraisals) == 2
            assert sorted(b["messages"][1]["content"] for b in appraisals) == sorted(expected_tasks(world, zh=False, said=said))
            assert all(b["response_format"]["type"] == "regex" for b in appraisals)
            assert (await stored_state(world)).version == 1
        finally:
            await close(world)
