"""``personae bench``'s model tokens per turn: the counting, and a tiny run whose report adds up."""

from __future__ import annotations

import pytest

from bots import bench_tokens
from bots.bench import _token_pass
from bots.llm import bench_answers
from bots.llm.token_ledger import Tokenizer, prompt_text, shared_prefix
from bots.settings import Settings
from tests.tgi_server import TGIServer


def _entry(kind: str, ids: list[int], completion: int) -> dict:
    return {"api": "chat", "kind": kind, "prompt_tokens": len(ids), "completion_tokens": completion, "prompt_ids": ids}


def test_shared_prefixes_are_taken_per_kind_within_a_conversation() -> None:
    one = [
        _entry("reply", [1, 2, 3], 4),
        _entry("emotion", [9, 8, 7], 30),
        _entry("relationship", [9, 8, 6], 20),
        _entry("reply", [1, 2, 3, 4, 5], 4),
        _entry("emotion", [9, 8, 5, 5], 30),
        _entry("relationship", [9, 8, 6, 1], 20),
    ]
    other = [_entry("reply", [1, 2, 3, 7], 2), _entry("reply", [6], 2)]  # another person: never compared with `one`
    totals = bench_tokens.tally([one, other])
    reply, appraisal = totals["reply"], totals["appraisal"]
    assert (reply.requests, reply.prompt, reply.completion) == (4, 3 + 5 + 4 + 1, 12)
    assert (reply.later_requests, reply.later_prompt, reply.shared_with_previous) == (2, 5 + 1, 3 + 0)
    assert (appraisal.requests, appraisal.prompt, appraisal.completion) == (4, 14, 100)
    # emotion with the emotion before (2), relationship with the relationship before (3)
    assert (appraisal.later_requests, appraisal.later_prompt, appraisal.shared_with_previous) == (2, 8, 5)
    assert appraisal.shared_with_any_earlier == 2 + 3  # [9,8,5,5] shares at most 2 with anything earlier

    report = bench_tokens.report([one, other], turns=2)
    assert report.reply["prompt"] == pytest.approx(13 / 4) and report.reply["completion"] == pytest.approx(3)
    assert report.reply["shared_prefix"] == pytest.approx(3 / 2)  # per later turn
    assert report.reply["shared_share"] == pytest.approx(3 / 6)
    assert report.appraisal["shared_share"] == pytest.approx(5 / 8)
    assert report.appraisal_share_of_decoded == pytest.approx(100 / 112)
    assert report.requests_per_turn == pytest.approx(8 / 4)
    assert "appraisal share of decoded tokens: 89%" in bench_tokens.table(report)
    assert "note: 4 reply requests for 4 turns" not in bench_tokens.table(report)
    assert "note: 4 reply requests for 6 turns" in bench_tokens.table(bench_tokens.report([one, other], turns=3))


def _settings(tmp_path, **values) -> Settings:
    return Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path / 'bench.db'}", **values)


async def test_a_tiny_run_adds_up_with_the_model_appraiser(tmp_path) -> None:
    settings = _settings(tmp_path, appraiser="model", prompt_layout="training")
    async with TGIServer(reply=bench_answers.replies(), alignment=bench_answers.alignment()) as server:
        report = await _token_pass(settings, server.base_url, conversations=2, turns=3)
    entries = server.ledger.entries
    turns = 2 * 3
    assert report.layout == "training" and report.appraiser == "model"
    assert report.tokenizer.startswith("estimate")  # the in-process double counts with the estimate, and says so
    assert report.requests_per_turn == 3 and len(entries) == 3 * turns
    replies = [e for e in entries if e.kind == "reply"]
    appraisals = [e for e in entries if e.kind != "reply"]
    assert {e.api for e in replies} == {"completions"} and {e.kind for e in appraisals} == {"emotion", "relationship"}
    assert report.reply["prompt"] * turns == pytest.approx(sum(e.prompt_tokens for e in replies))
    assert report.reply["completion"] * turns == pytest.approx(sum(e.completion_tokens for e in replies))
    assert report.appraisal["prompt"] * turns == pytest.approx(sum(e.prompt_tokens for e in appraisals))
    decoded = sum(e.completion_tokens for e in entries)
    assert report.appraisal_share_of_decoded == pytest.approx(sum(e.completion_tokens for e in appraisals) / decoded)
    assert report.appraisal_share_of_decoded > 0.8  # the trained answers are long
    assert 0 < report.appraisal["shared_share"] < 1 and 0 < report.reply["shared_share"] < 1


@pytest.mark.parametrize("layout", ["training", "chat"])
async def test_what_a_reply_prompt_shares_with_the_one_before(tmp_path, layout: str) -> None:
    """With feelings that do not move (no appraiser), the training layout's reply prompt is the one
    before, its reply, and the new turn; the chat template moves the system text to the last turn."""
    settings = _settings(tmp_path, appraiser="none", prompt_layout=layout)
    async with TGIServer(reply=bench_answers.replies()) as server:
        report = await _token_pass(settings, server.base_url, conversations=1, turns=3)
    prompts = [prompt_text(r.body)[1] for r in server.requests if r.path in ("/v1/completions", "/v1/chat/completions")]
    answers = [bench_answers.REPLIES[0], bench_answers.REPLIES[1]]
    entries = server.ledger.entries
    count = Tokenizer(use_model=False).count
    later = entries[1:]
    if layout == "training":
        for before, answer, after in zip(prompts, answers, prompts[1:]):
            assert after.startswith(before + answer)
        for before, after in zip(entries, later):
            assert shared_prefix(before.prompt_ids, after.prompt_ids) >= before.prompt_tokens - 1
        assert report.reply["shared_share"] > 0.6
    else:
        system_tokens = count(prompts[0]) - count("Turn 0: tell me about the weather, please.")
        assert all(shared_prefix(b.prompt_ids, a.prompt_ids) < b.prompt_tokens - system_tokens // 2 for b, a in zip(entries, later))
        assert report.reply["shared_share"] < 0.5
    assert report.reply["shared_prefix"] * 2 == pytest.approx(sum(shared_prefix(b.prompt_ids, a.prompt_ids) for b, a in zip(entries, later)))
