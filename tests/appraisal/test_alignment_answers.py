"""The model appraiser reads the answers the BeyondDialogue alignment tasks were trained to give."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bots.appraisal_check import run_check
from bots.llm.alignment_answers import READABLE, AlignmentAnswers
from bots.llm.dialects import analysis_then_object
from core.appraisal import BadAnswer, emotion_schema, read_emotions, read_relationship, relationship_schema
from tests.cli_process import personae
from tests.dynamics.conftest import close, person, stored_state, zh_world
from tests.engine.conftest import build_world

ANALYSIS = "Hamlet hides his grief behind wit; his anger at the court shows in every sharp reply."


def test_the_object_after_an_analysis_or_in_a_code_fence_is_read() -> None:
    assert read_relationship(f'{ANALYSIS}\n{{"relationship": 6}}') == 6
    assert read_relationship(f'{ANALYSIS}\n\n```json\n{{"relationship": 9}}\n```') == 9
    # An example object in the analysis does not count: the last one does.
    assert read_relationship('Had it been {"relationship": 1} before? Now:\n{"relationship": 4}') == 4


@pytest.mark.parametrize("written, level", [(7.5, 8), (6.5, 7), (0.4, 0), (9.49, 9), (10.5, 10), (11, 10), (-2, 0), ("7", 7), ("7.5", 8)])
def test_scores_are_rounded_half_up_and_clamped_to_the_scale(written, level) -> None:
    value = f'"{written}"' if isinstance(written, str) else str(written)
    assert read_relationship(f'{{"relationship": {value}}}') == level


def test_a_chinese_answer_is_read_with_chinese_keys() -> None:
    answer = '角色很悲伤。\n```json\n{"快乐": 1.5, "悲伤": 8, "厌恶": 2, "恐惧": 0, "惊讶": 3, "愤怒": 6.5}\n```'
    assert read_emotions(answer, "zh") == {"happiness": 2, "sadness": 8, "disgust": 2, "fear": 0, "surprise": 3, "anger": 7}


@pytest.mark.parametrize("answer", [ANALYSIS, f'{ANALYSIS}\n{{"relationship": 7', '{"relationship": "close"}', '{"relationship": null}'])
def test_an_answer_without_a_usable_score_is_refused(answer) -> None:
    with pytest.raises(BadAnswer):
        read_relationship(answer)


@pytest.mark.parametrize("language", ["en", "zh"])
def test_the_tgi_grammar_admits_every_readable_shape_it_can_end_on(language) -> None:
    """The grammar must let the trained answer through: analysis, fractions, the bare object (a
    fenced object cannot close its fence under the grammar, so it is not a shape TGI produces)."""
    answers = AlignmentAnswers(("analysis", "float", "bare"))
    marker = "快乐评分" if language == "zh" else "happiness score"
    regex = analysis_then_object(emotion_schema(language))
    for _ in range(9):
        text = answers({"messages": [{"role": "user", "content": f"... {marker} ..."}]})
        assert re.fullmatch(regex, text), text
    relationship = analysis_then_object(relationship_schema())
    assert re.fullmatch(relationship, f'{ANALYSIS}\n{{"relationship": 7.5}}')
    assert not re.fullmatch(relationship, '{"relationship": 7.5} and then more words')


async def test_the_parse_rate_on_alignment_style_answers_is_at_least_95_percent() -> None:
    result = await run_check(48)
    assert result.readable == 48 * 2 * len(READABLE) // 6  # every shape given as often as the others
    assert result.parse_rate >= 0.95 and result.ok
    assert result.changed_unreadable == 0


async def test_alignment_answers_move_the_state_through_the_engine(store, cache, tgi) -> None:
    tgi.alignment = AlignmentAnswers(("float",), seed=3)
    world = await build_world(store, cache, tgi, appraiser="model")
    try:
        reply, _ = await world.say("Good evening, my lord.")
        await world.app.engine.drain()
        said = {s.task: s.levels for s in tgi.alignment.said}
        (change,) = await world.app.store.relationships.changes(await person(world))
        read = ", ".join([f"{k} {v}" for k, v in said["emotion"].items()] + [f"intimacy {said['relationship']['relationship']}"])
        assert change.reason.startswith(f"model read {read};") and change.message_id == reply.reply_message_id
        assert (await stored_state(world)).version == 1
    finally:
        await close(world)


async def test_a_chinese_character_is_moved_by_a_fenced_answer_with_chinese_keys(store, cache, tgi) -> None:
    world = await zh_world(store, cache, tgi, appraiser="model")
    tgi.alignment = AlignmentAnswers(("fence",), seed=5)
    try:
        await world.say("你好，朋友。")
        await world.app.engine.drain()
        state = await stored_state(world)
        assert state.version == 1
        (change,) = await world.app.store.relationships.changes(await person(world))
        said = {s.task: s.levels for s in tgi.alignment.said}
        assert f"intimacy {said['relationship']['relationship']}" in change.reason
        assert f"happiness {said['emotion']['happiness']}" in change.reason
    finally:
        await close(world)


async def test_personae_appraisal_check_prints_the_parse_rate_and_exits_0(tmp_path: Path) -> None:
    finished = await personae("appraisal-check", "--n", "12", home=tmp_path)
    assert finished.code == 0, finished.output
    assert "parse rate over readable shapes: 100.0% of 16" in finished.output
    assert re.search(r"^no_json\s+4\s+0$", finished.output, re.M) and re.search(r"^float\s+4\s+4$", finished.output, re.M)


async def test_the_check_asks_in_the_layout_the_real_appraiser_uses() -> None:
    from bots.settings import Settings

    # auto: the double serves a BD-RP model id, so the appraisals go as the raw training string on /generate
    trained = await run_check(4, settings=Settings(_env_file=None))
    assert trained.layout.startswith("training") and set(trained.routes) == {"/generate"}
    assert trained.routes["/generate"] >= 8 and trained.ok
    chat = await run_check(4, settings=Settings(_env_file=None, prompt_layout="chat"))
    assert chat.layout.startswith("chat") and set(chat.routes) == {"/v1/chat/completions"} and chat.ok
