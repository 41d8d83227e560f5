"""`personae eval` end to end on the bundled model: SmolLM2 plays the role, the partner and the judge,
and appraises; a tiny run (one dialogue of two exchanges, short answers) that must finish and report.
How cadences compare on the same answers is tests/eval/test_eval_cadence.py's (on the double): here
one cadence, so that the real model answers only what the harness needs (16 requests, not 18)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from bots.eval.command import CHART, RESULTS, SUMMARY, EvalRequest, run_eval
from bots.eval.judge import DIMENSIONS
from bots.eval.roles import bundled_role_files
from bots.eval.run import EvalConfig
from bots.settings import Settings

pytestmark = pytest.mark.llama


async def test_one_dialogue_is_played_judged_appraised_and_reported_on_the_bundled_model(llama_server, tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None, llm_url=llama_server.base_url, database_url=f"sqlite+aiosqlite:///{tmp_path / 'p.db'}",
        appraiser="model", appraisal_max_tokens=32, llm_retries=1,
        # A busy machine (CI with other jobs beside it) can queue a request for minutes: this test is
        # about the harness, not the speed, so it waits as long as a slow GPU deployment would.
        llm_first_token_timeout_s=600, llm_timeout_s=300,
    )
    config = EvalConfig(turns=2, samples=1, max_tokens=24, partner_max_tokens=24, judge_max_tokens=32, cadences=("every",))
    hamlet = next(p for p in bundled_role_files() if p.stem == "Hamlet")
    lines: list[str] = []
    table = await run_eval(settings, EvalRequest(role_files=(hamlet,), out=tmp_path, chats=1, config=config), lines.append)

    [record] = [json.loads(x) for x in (tmp_path / RESULTS).read_text().splitlines()]
    assert record["status"] == "done", record
    assert [who for who, _ in record["dialogue"]] == ["Elena", "Hamlet", "Elena", "Hamlet"]
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert summary["dialogues"] == 1
    for dim in DIMENSIONS:
        stat = summary["dimensions"][dim]
        # Every question was asked and its answer either read or counted as unparsed.
        assert stat["n"] + stat["unparsed"] == 1, dim
        assert record["judged"][dim]["status"] in ("ok", "unparsed")
        if stat["n"]:
            assert 0 <= stat["mean"] <= 100
    appraiser = summary["appraiser"]
    assert appraiser["kind"] == "model" and appraiser["exchanges"] == 2
    assert 0 <= appraiser["emotion_parsed"] <= 100 and 0 <= appraiser["relationship_parsed"] <= 100
    # Each exchange appraised once: emotion and relationship, two requests each.
    assert sorted(appraiser["cadences"]) == ["every", "start"]  # "start": the card's state, never appraised
    every = appraiser["cadences"]["every"]
    assert (every["appraised"], every["calls"]) == (2, 4)
    assert every["answer_tokens"] > 0
    with Image.open(tmp_path / CHART) as image:
        assert image.format == "PNG"
    assert "Character" in table and "dialogues: 1" in table
    assert any(line.startswith("[1/1] Hamlet with Elena #1:") for line in lines)
