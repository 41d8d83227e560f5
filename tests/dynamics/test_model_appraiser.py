"""The model appraiser end to end: the real Engine and ModelClient against the TGI-protocol server."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from bots.llm.tgi_double import split_tokens
from bots.llm.vllm_double import VLLMServer
from tests.dynamics.conftest import close, levels, person, stored_state, zh_world
from tests.engine.conftest import build_world
from tests.tgi_server import TGIServer

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
HELPER = "You are a helpful assistant."
REPLY = "(smiles) Well met, Elena."
HAMLET = {"happiness": 1, "sadness": 8, "disgust": 5, "fear": 7, "surprise": 6, "anger": 4, "intimacy": 7}


def is_emotion_prompt(body) -> bool:
    prompt = body["messages"][1]["content"]
    return "six basic emotions" in prompt or "六种基本情绪" in prompt


class Answers:
    """Role-play replies for chat turns; scripted texts for the two appraisal questions."""

    def __init__(self, emotion: str, relationship: str) -> None:
        self.emotion, self.relationship = emotion, relationship

    def __call__(self, body) -> str:
        if body["messages"][0]["content"] != HELPER:
            return REPLY
        return self.emotion if is_emotion_prompt(body) else self.relationship


def appraisal_bodies(tgi: TGIServer) -> list[dict]:
    return [b for b in tgi.bodies() if b["messages"][0]["content"] == HELPER]


async def model_world(store, cache, tgi, *, zh: bool = False, **settings):
    return await (zh_world if zh else build_world)(store, cache, tgi, appraiser="model", **settings)


async def test_the_request_carries_the_reference_prompts_and_a_grammar_that_lets_the_analysis_come_first(store, cache, tgi) -> None:
    world = await model_world(store, cache, tgi)
    tgi.reply = Answers('{"happiness": 5, "sadness": 5, "disgust": 5, "fear": 5, "surprise": 5, "anger": 5}', '{"relationship": 7}')
    try:
        for text in ("First words.", "Second words.", "Third words.", "Fourth {words}."):
            await world.say(text)
            await world.app.engine.drain()
        emotion, relationship = sorted(appraisal_bodies(tgi)[-2:], key=lambda b: not is_emotion_prompt(b))
        name = world.character_name
        # The last three exchanges (the window), one line each, "Name: text".
        dialogues = "\n".join(
            line for text in ("Second words.", "Third words.", "Fourth {words}.") for line in (f"Elena: {text}", f"{name}: {REPLY}")
        )
        fields = dict(
            role_name=name,
            character="extreme, strong, decisive",
            MBTI="Extraverted (E), Intuitive (N), Feeling (F), Judging (J)",
            style="indecisive, decisive, sentimental",
            scene="Elsinore at night.",
            dialogues=dialogues,
        )
        expected_emotion = (GOLDEN / "emotion_appraisal.en.txt").read_text(encoding="utf-8").format(**fields)
        expected_relationship = (GOLDEN / "relationship_appraisal.en.txt").read_text(encoding="utf-8").format(target_name="Elena", **fields)
        assert emotion["messages"] == [{"role": "system", "content": HELPER}, {"role": "user", "content": expected_emotion}]
        assert relationship["messages"] == [{"role": "system", "content": HELPER}, {"role": "user", "content": expected_relationship}]
        # TGI gets a regex grammar: free text (the trained analysis), then the object, keys in the template's order.
        score = r"(10|[0-9])(\.[0-9]{1,2})?"
        names = ["happiness", "sadness", "disgust", "fear", "surprise", "anger"]
        assert emotion["response_format"] == {
            "type": "regex", "value": r"[^{}]*\{\s?" + ", ?".join(f'"{n}": ?{score}' for n in names) + r"\s?\}",
        }
        assert relationship["response_format"] == {"type": "regex", "value": r'[^{}]*\{\s?"relationship": ?' + score + r"\s?\}"}
        assert emotion["stream"] is False and emotion["max_tokens"] == 768
    finally:
        await close(world)


async def test_the_answer_moves_the_state_by_the_rule(store, cache, tgi) -> None:
    world = await model_world(store, cache, tgi)
    tgi.reply = Answers('{"happiness": 9, "sadness": 0, "disgust": 0, "fear": 0, "surprise": 9, "anger": 0}', '{"relationship": 10}')
    try:
        reply, _ = await world.say("Good evening.")
        await world.app.engine.drain()
        state = await stored_state(world)
        # Halfway toward the answer, at most 2 per emotion and 1 for intimacy.
        assert levels(state) == {"happiness": 3, "sadness": 6, "disgust": 3, "fear": 5, "surprise": 8, "anger": 2, "intimacy": 8}
        (change,) = await world.app.store.relationships.changes(await person(world))
        assert change.appraiser == "model" and change.message_id == reply.reply_message_id
        assert levels(change.before) == HAMLET and change.after == state
        assert "happiness 9" in change.reason and "intimacy 10" in change.reason
    finally:
        await close(world)


async def test_a_chinese_character_is_asked_in_chinese_and_answered_with_chinese_keys(store, cache, tgi) -> None:
    world = await model_world(store, cache, tgi, zh=True)
    answer = {"快乐": 9, "悲伤": 0, "厌恶": 1, "恐惧": 2, "惊讶": 2, "愤怒": 1}
    tgi.reply = Answers("分析：她很开心。\n" + json.dumps(answer, ensure_ascii=False), '{"relationship": 9}')
    try:
        await world.say("你好，朋友。")
        await world.app.engine.drain()
        emotion, relationship = sorted(appraisal_bodies(tgi), key=lambda b: not is_emotion_prompt(b))
        fields = dict(
            role_name=world.character_name, character="温柔，聪慧，坚定", MBTI="内向型（I）、直觉型（N）、情感型（F）、判断型（J）",
            style="含蓄、典雅", scene="长安城的夜晚，月光洒在石板路上。", dialogues=f"Elena: 你好，朋友。\n{world.character_name}: {REPLY}",
        )
        assert emotion["messages"][1]["content"] == (GOLDEN / "emotion_appraisal.zh.txt").read_text(encoding="utf-8").format(**fields)
        assert relationship["messages"][1]["content"] == (
            (GOLDEN / "relationship_appraisal.zh.txt").read_text(encoding="utf-8").format(target_name="Elena", **fields)
        )
        assert emotion["response_format"]["value"].startswith(r'[^{}]*\{\s?"快乐": ?') and '"愤怒": ?' in emotion["response_format"]["value"]
        state = await stored_state(world)
        assert levels(state) == {"happiness": 5, "sadness": 2, "disgust": 1, "fear": 2, "surprise": 2, "anger": 1, "intimacy": 6}
    finally:
        await close(world)


async def test_on_a_server_that_is_not_tgi_the_last_json_object_of_the_answer_counts(store, cache) -> None:
    async with TGIServer(tgi=False) as plain:
        world = await model_world(store, cache, plain)
        plain.reply = Answers(
            'He was {"happiness": 0} at first, then warmed.\n{"happiness": 9, "sadness": 8, "disgust": 5, "fear": 7, "surprise": 6, "anger": 4}',
            "They are close friends.\n{\"relationship\": 9}",
        )
        try:
            await world.say("Good evening.")
            await world.app.engine.drain()
            assert all("response_format" not in b for b in appraisal_bodies(plain))
            assert levels(await stored_state(world)) == {**HAMLET, "happiness": 3, "intimacy": 8}
        finally:
            await close(world)


VALID_EMOTION = '{"happiness": 9, "sadness": 0, "disgust": 0, "fear": 0, "surprise": 9, "anger": 0}'


@pytest.mark.parametrize(
    "emotion, relationship",
    [
        ("He seems calm and content.", "They are strangers."),  # no JSON at all
        ('{"happiness": 9, "sadness": 0}', '{"intimacy": 9}'),  # partial, wrong key
        ('{"happiness": "high", "sadness": 0, "disgust": 0, "fear": 0, "surprise": 0, "anger": 0}', '{"relationship": "close"}'),
        ('{"happiness": 9, "sadness": 0, "disgust": 0, "fear": 0, "surprise": 9, "anger": 0', '{"relationship": null}'),  # cut off
    ],
)
async def test_a_malformed_or_partial_answer_changes_nothing(store, cache, tgi, caplog, emotion, relationship) -> None:
    world = await model_world(store, cache, tgi)
    tgi.reply = Answers(emotion, relationship)
    try:
        with caplog.at_level(logging.WARNING, logger="core.appraisal"):
            await world.say("Good evening.")
            await world.app.engine.drain()
        state = await stored_state(world)
        assert state.version == 0 and levels(state) == HAMLET
        assert await world.app.store.relationships.changes(await person(world)) == []
        warnings = [r.getMessage() for r in caplog.records if r.name == "core.appraisal"]
        assert any("emotion answer" in w for w in warnings) and any("relationship answer" in w for w in warnings)
    finally:
        await close(world)


@pytest.mark.parametrize("relationship", ['{"relationship": "very close"}', 'Close. {"relationship": 1e999}', '{"relationship": 5} {"a": ' + "[" * 100_000])
async def test_a_bad_relationship_answer_leaves_intimacy_but_a_good_emotion_answer_counts(store, cache, tgi, relationship) -> None:
    world = await model_world(store, cache, tgi)
    tgi.reply = Answers(VALID_EMOTION, relationship)
    try:
        await world.say("Good evening.")
        await world.app.engine.drain()
        assert levels(await stored_state(world)) == {
            "happiness": 3, "sadness": 6, "disgust": 3, "fear": 5, "surprise": 8, "anger": 2, "intimacy": 7,
        }
    finally:
        await close(world)


async def test_a_failing_appraisal_server_changes_nothing_and_the_reply_is_unaffected(store, cache, tgi) -> None:
    world = await model_world(store, cache, tgi, llm_retries=0)

    def answer(body) -> str:
        if body["messages"][0]["content"] == HELPER:
            raise RuntimeError("the appraisal server fell over")  # the server answers 500
        return REPLY

    tgi.reply = answer
    try:
        reply, _ = await world.say("Good evening.")
        assert reply.status.value == "answered" and reply.text == REPLY
        await world.app.engine.drain()
        assert len(appraisal_bodies(tgi)) == 2
        assert (await stored_state(world)).version == 0
    finally:
        await close(world)


async def test_on_vllm_no_schema_forces_the_object_first_and_the_answer_moves_the_state(store, cache) -> None:
    async with VLLMServer(served_model_name="bd-rp") as vllm:
        world = await model_world(store, cache, vllm)
        vllm.reply = Answers('{"happiness": 9, "sadness": 0, "disgust": 0, "fear": 0, "surprise": 9, "anger": 0}', '{"relationship": 10}')
        try:
            await world.say("Good evening.")
            await world.app.engine.drain()
            bodies = appraisal_bodies(vllm)
            assert len(bodies) == 2 and all(b["model"] == "bd-rp" for b in bodies)
            # A JSON schema would force the object from the first token, and the trained analysis with it.
            assert all("response_format" not in b for b in bodies)
            assert levels(await stored_state(world)) == {"happiness": 3, "sadness": 6, "disgust": 3, "fear": 5, "surprise": 8, "anger": 2, "intimacy": 8}
        finally:
            await close(world)


def appraisal_task_tokens(tgi: TGIServer, body) -> int:
    """The task's tokens as the server counts them (its /tokenize)."""
    return sum(len(split_tokens(m["content"], None)) for m in body["messages"])


@pytest.mark.parametrize("appraisal_max_tokens, cut", [(1200, False), (2500, True)])
async def test_the_appraisal_prompt_is_fitted_to_the_input_budget_oldest_exchanges_first(store, cache, tgi, appraisal_max_tokens, cut) -> None:
    # Three long messages, each under the engine's 4000-character cap, make a window far over the budget
    # (PERSONAE_MAX_INPUT_TOKENS less PERSONAE_APPRAISAL_MAX_TOKENS): TGI would refuse it (422).
    world = await model_world(store, cache, tgi, max_input_tokens=3500, appraisal_max_tokens=appraisal_max_tokens)
    tgi.reply = Answers(VALID_EMOTION, '{"relationship": 9}')
    try:
        for i in range(3):
            await world.say(f"Message {i} begins. " + "I want to tell you something. " * 125 + f"Message {i} ends.")
            await world.app.engine.drain()
        last_two = appraisal_bodies(tgi)[-2:]
        assert len(last_two) == 2
        for body in last_two:
            task = body["messages"][1]["content"]
            assert appraisal_task_tokens(tgi, body) + 8 <= 3500 - appraisal_max_tokens
            assert "Message 0 begins" not in task  # the oldest went first
            assert "Message 2 begins" in task and REPLY in task  # the newest exchange stays
            assert ("Message 2 ends" not in task and "…" in task) if cut else "Message 2 ends." in task
        assert levels(await stored_state(world))["intimacy"] != HAMLET["intimacy"]  # the answer was used
    finally:
        await close(world)
