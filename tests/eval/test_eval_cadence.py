"""`personae eval --cadence`: each cadence's cost (model requests, tokens) and accuracy, from the states
it would have reached, measured on the same appraisal answers (each exchange asked once)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from bots.eval.cadences import ALL, cadence_names
from bots.eval.command import SUMMARY, EvalRequest, run_eval
from bots.eval.roles import bundled_role_files
from bots.eval.run import EvalConfig
from bots.llm.tgi_double import TGIServer
from core.appraisal import APPRAISAL_SYSTEM
from tests.cli_process import personae
from tests.eval.scripted import ScriptedModel
from tests.eval.test_eval_double import settings

HAMLET = next(p for p in bundled_role_files() if p.stem == "Hamlet")


def appraisal_requests(server: TGIServer) -> list[dict]:
    return [b for b in server.bodies() if b.get("messages") and b["messages"][0]["content"] == APPRAISAL_SYSTEM]


def run(tmp_path: Path, cadences: tuple[str, ...], turns: int = 4) -> EvalRequest:
    config = EvalConfig(turns=turns, samples=1, max_tokens=32, partner_max_tokens=32, judge_max_tokens=64, cadences=cadences)
    return EvalRequest(role_files=(HAMLET,), out=tmp_path / "out", chats=1, config=config)


async def test_every_second_exchange_asks_half_as_much_and_its_error_is_that_of_the_states_it_reaches(tmp_path: Path) -> None:
    # Hamlet with Elena: labels happiness 1, sadness 8, disgust 5, fear 7, surprise 6, anger 4; intimacy 7.
    # The scripted appraiser always reads happiness 1, sadness 6, disgust 5, fear 7, surprise 6, anger 4;
    # intimacy 8. From the start (every emotion 0, intimacy 5), weight 0.5, steps of at most 2 (emotions)
    # and 1 (intimacy), one appraisal moves the state to 1,2,2,2,2,2 / 6; a second to 1,4,4,4,4,3 / 7;
    # a third to 1,5,5,6,5,4 / 8; a fourth to 1,6,5,7,6,4 / 8. Summed distances to the labels: 20, 11,
    # 5, 2 (and 31 at the start); an emotion error is that sum / 6 emotions / 10 levels, in percent.
    async with TGIServer(reply=ScriptedModel()) as server:
        table = await run_eval(settings(server.base_url, tmp_path), run(tmp_path, ("every", "every:2")), lambda _: None)
        asked = appraisal_requests(server)
    assert len(asked) == 4 * 2  # each of the 4 exchanges asked once (emotion + relationship), for both cadences
    cadences = json.loads((tmp_path / "out" / SUMMARY).read_text())["appraiser"]["cadences"]
    every, second = cadences["every"], cadences["every:2"]
    assert (every["appraised"], every["calls"]) == (4, 8)
    assert (second["appraised"], second["calls"]) == (2, 4)
    assert second["answer_tokens"] * 2 == every["answer_tokens"] > 0  # the same answer each time
    assert 0 < second["prompt_tokens"] < every["prompt_tokens"]
    # every: states after each exchange 20, 11, 5, 2 off; intimacy 6, 7, 8, 8 (label 7)
    assert every["state_emotion_error"]["mean"] == pytest.approx((20 + 11 + 5 + 2) / 4 / 6 * 10, abs=0.01)
    assert every["state_relationship_error"]["mean"] == pytest.approx((10 + 0 + 10 + 10) / 4)
    assert every["final_emotion_error"]["mean"] == pytest.approx(2 / 6 * 10, abs=0.01)
    # every:2: moved after the 2nd and the 4th exchange only: 31, 20, 20, 11 off; intimacy 5, 6, 6, 7
    assert second["state_emotion_error"]["mean"] == pytest.approx((31 + 20 + 20 + 11) / 4 / 6 * 10, abs=0.01)
    assert second["state_relationship_error"]["mean"] == pytest.approx((20 + 10 + 10 + 0) / 4)
    assert second["final_relationship_error"]["mean"] == 0
    # What each appraisal read is the same for both: sadness 2 off, intimacy 1 off.
    for c in (every, second):
        assert c["emotion_error"]["mean"] == pytest.approx(2 / 6 * 10, abs=0.01)
        assert c["relationship_error"]["mean"] == pytest.approx(10.0)
        assert c["emotion_parsed"] == 100 and c["relationship_parsed"] == 100
    assert cadences["start"]["state_emotion_error"]["mean"] == pytest.approx(31 / 6 * 10, abs=0.01)
    assert cadences["start"]["state_relationship_error"]["mean"] == 20
    assert "every:2" in table and "2/4" in table and "(start, no appraisal)" in table


async def test_all_cadences_share_one_set_of_answers(tmp_path: Path) -> None:
    async with TGIServer(reply=ScriptedModel()) as server:
        await run_eval(settings(server.base_url, tmp_path), run(tmp_path, ALL, turns=3), lambda _: None)
        asked = appraisal_requests(server)
    cadences = json.loads((tmp_path / "out" / SUMMARY).read_text())["appraiser"]["cadences"]
    assert list(cadences) == ["start", *ALL]
    assert len(asked) == 3 * 2  # every needs every exchange; the others reuse those answers
    assert cadences["every:3"]["appraised"] == 1 and cadences["every:3"]["calls"] == 2
    moved = cadences["moved"]
    assert moved["calls"] == 2 * moved["appraised"] and moved["appraised"] <= 3


async def test_an_unparsed_appraisal_costs_its_requests_and_moves_nothing(tmp_path: Path) -> None:
    async with TGIServer(reply=ScriptedModel(appraisal="He seems sad.")) as server:
        await run_eval(settings(server.base_url, tmp_path), run(tmp_path, ("every:2",), turns=2), lambda _: None)
    second = json.loads((tmp_path / "out" / SUMMARY).read_text())["appraiser"]["cadences"]["every:2"]
    assert (second["appraised"], second["calls"], second["emotion_parsed"]) == (1, 2, 0)
    assert second["state_emotion_error"]["mean"] == pytest.approx(31 / 6 * 10, abs=0.01)  # still the start


def test_cadence_names() -> None:
    assert cadence_names("all") == ALL
    assert cadence_names("every, EVERY:1,every:4,moved") == ("every", "every:4", "moved")
    with pytest.raises(ValueError, match="every:N"):
        cadence_names("every:0")


async def test_the_command_takes_the_cadence_and_refuses_a_wrong_one_in_one_line(tmp_path: Path) -> None:
    done = await personae("eval", "--cadence", "sometimes", "-o", "out", home=tmp_path)
    assert done.code != 0 and "Traceback" not in done.output
    errors = [line for line in done.lines if line.startswith("error:")]
    assert len(errors) == 1 and "--cadence" in errors[0] and "every:N" in errors[0]
    async with TGIServer(reply=ScriptedModel()) as server:
        done = await personae(
            "eval", str(HAMLET), "--chats", "1", "--turns", "2", "--cadence", "every,every:2", "-o", "out", home=tmp_path,
            PERSONAE_LLM_URL=server.base_url, PERSONAE_LLM_RETRIES="0", PERSONAE_PROMPT_LAYOUT="chat",
            PERSONAE_APPRAISER="model",
        )
    assert done.code == 0, done.output
    assert "appraisal cadences" in done.output
    summary = json.loads((tmp_path / "out" / SUMMARY).read_text())
    assert summary["about"]["cadences"] == ["every", "every:2"]
    assert summary["appraiser"]["cadences"]["every:2"]["calls"] == 2


async def test_reappraise_replays_the_done_dialogues_with_another_appraiser_without_playing_or_judging(tmp_path: Path) -> None:
    async with TGIServer(reply=ScriptedModel()) as server:
        await run_eval(settings(server.base_url, tmp_path), run(tmp_path, ("every",), turns=2), lambda _: None)
        sent = len(server.bodies())
        request = run(tmp_path, ALL, turns=2)
        request = replace(request, config=replace(request.config, reappraise=True))
        lines: list[str] = []
        lexicon = settings(server.base_url, tmp_path).model_copy(update={"appraiser": "lexicon"})
        await run_eval(lexicon, request, lines.append)
        assert len(server.bodies()) == sent  # nothing played, judged or asked of the model
    summary = json.loads((tmp_path / "out" / SUMMARY).read_text())
    assert summary["appraiser"]["kind"] == "lexicon" and list(summary["appraiser"]["cadences"]) == ["start", *ALL]
    assert summary["appraiser"]["cadences"]["every"]["calls"] == 0 and summary["dialogues"] == 1
    assert summary["dimensions"]["role_choice"]["mean"] == 100  # the judging was kept
    assert any("appraised again" in line for line in lines)
