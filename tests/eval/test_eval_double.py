"""`personae eval` against the TGI-protocol double: the role is played as the bots play it, scores are
read and never invented, the appraiser is scored, a judge that is down leaves resumable failed items."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from bots.eval.command import CHART, RESULTS, SUMMARY, EvalIncomplete, EvalRequest, run_eval
from bots.eval.roles import bundled_role_files, load_role_file
from bots.eval.run import EvalConfig, actor_messages
from bots.llm.tgi_double import TGIServer
from bots.settings import Settings
from core.errors import InvalidInput
from core.prompt import Turn
from tests.cli_process import personae
from tests.eval.scripted import EXPECTED, PARTNER_LINE, ROLE_REPLY, ScriptedModel

HAMLET = next(p for p in bundled_role_files() if p.stem == "Hamlet")
CONFIG = EvalConfig(turns=2, samples=2, max_tokens=32, partner_max_tokens=32, judge_max_tokens=64)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(url: str, tmp_path: Path, **more) -> Settings:
    # The double scripts chat answers; it reports a BD-RP model id, which would choose the training layout.
    return Settings(_env_file=None, llm_url=url, database_url=f"sqlite+aiosqlite:///{tmp_path / 'p.db'}",
                    llm_retries=0, appraiser="model", prompt_layout="chat", **more)


def request(out: Path, **more) -> EvalRequest:
    return EvalRequest(role_files=(HAMLET,), out=out, chats=1, config=CONFIG, **more)


def role_requests(server: TGIServer) -> list[dict]:
    return [b for b in server.bodies() if b["messages"][0]["content"].startswith("I want you to answer questions as if you are")]


async def test_the_role_is_played_with_the_engines_prompt_and_the_scores_are_the_judges(tmp_path: Path) -> None:
    lines: list[str] = []
    async with TGIServer(reply=ScriptedModel()) as server:
        table = await run_eval(settings(server.base_url, tmp_path), request(tmp_path / "out"), lines.append)
    role = load_role_file(HAMLET)
    chat = role.chats[0]
    sent = role_requests(server)
    assert len(sent) == 4  # two dialogues of two exchanges
    assert all(b["stream"] is True and b["max_tokens"] == 32 for b in sent)
    # The second reply of a dialogue sees the first exchange, built by the engine's functions.
    history = [Turn("user", PARTNER_LINE), Turn("assistant", ROLE_REPLY)]
    assert sent[1]["messages"] == actor_messages(role, chat, history, PARTNER_LINE, CONFIG)
    assert "Your intimacy level with them is 7" in sent[0]["messages"][0]["content"]

    records = [json.loads(x) for x in (tmp_path / "out" / RESULTS).read_text().splitlines()]
    assert [r["status"] for r in records] == ["done", "done"]
    assert records[0]["dialogue"] == [["Elena", PARTNER_LINE], ["Hamlet", ROLE_REPLY]] * 2  # the partner's first line only
    summary = json.loads((tmp_path / "out" / SUMMARY).read_text())
    for dim, value in EXPECTED.items():
        assert summary["dimensions"][dim]["mean"] == pytest.approx(value, abs=0.01), dim
        assert summary["dimensions"][dim]["n"] == 2 and summary["dimensions"][dim]["se"] == 0
    appraiser = summary["appraiser"]
    assert appraiser["kind"] == "model" and appraiser["exchanges"] == 4
    assert appraiser["emotion_parsed"] == 100 and appraiser["relationship_parsed"] == 100
    assert appraiser["emotion_error"]["mean"] == pytest.approx(100 * 2 / 6 / 10, abs=0.01)
    assert appraiser["relationship_error"]["mean"] == pytest.approx(10.0)
    assert (tmp_path / "out" / CHART).read_bytes().startswith(b"\x89PNG")
    assert "Role choice" in table and "dialogues: 2" in table
    assert any(line.startswith("[2/2] Hamlet with Elena #2") for line in lines)


async def test_a_rerun_skips_the_done_dialogues(tmp_path: Path) -> None:
    async with TGIServer(reply=ScriptedModel()) as server:
        await run_eval(settings(server.base_url, tmp_path), request(tmp_path / "out"), lambda _: None)
        asked = server.count("/v1/chat/completions")
        lines: list[str] = []
        await run_eval(settings(server.base_url, tmp_path), request(tmp_path / "out"), lines.append)
        assert server.count("/v1/chat/completions") == asked
    assert any(line.startswith("2 of 2 dialogues already done") for line in lines)
    assert len((tmp_path / "out" / RESULTS).read_text().splitlines()) == 2


async def test_a_score_that_cannot_be_read_is_counted_as_unparsed_not_invented(tmp_path: Path) -> None:
    model = ScriptedModel(judge="A fine performance; I would give it high marks overall.", appraisal="He seems sad.")
    async with TGIServer(reply=model) as server:
        table = await run_eval(settings(server.base_url, tmp_path), request(tmp_path / "out"), lambda _: None)
    summary = json.loads((tmp_path / "out" / SUMMARY).read_text())
    for dim in EXPECTED:
        assert summary["dimensions"][dim] == {"mean": None, "se": None, "n": 0, "unparsed": 2, "skipped": 0}, dim
    assert summary["dimensions"]["avg"]["mean"] is None
    assert summary["appraiser"]["emotion_parsed"] == 0 and summary["appraiser"]["emotion_error"]["mean"] is None
    records = [json.loads(x) for x in (tmp_path / "out" / RESULTS).read_text().splitlines()]
    assert records[0]["judged"]["character"]["detail"] == {"reason": "no JSON object"}
    assert "dialogues: 2" in table


async def test_an_answer_that_breaks_the_reader_is_unparsed_and_the_run_goes_on(tmp_path: Path) -> None:
    # Nesting too deep to decode (RecursionError) after a valid object; a 400-digit score is clamped, not an OverflowError.
    deep = '{"relationship": 5} {"a": ' + "[" * 100_000
    model = ScriptedModel(judge=deep, appraisal=deep)
    async with TGIServer(reply=model) as server:
        await run_eval(settings(server.base_url, tmp_path), request(tmp_path / "out"), lambda _: None)
    records = [json.loads(x) for x in (tmp_path / "out" / RESULTS).read_text().splitlines()]
    assert [r["status"] for r in records] == ["done", "done"]
    summary = json.loads((tmp_path / "out" / SUMMARY).read_text())
    assert summary["appraiser"]["emotion_parsed"] == 0 and summary["appraiser"]["relationship_parsed"] == 0
    assert all(summary["dimensions"][dim]["unparsed"] == 2 for dim in EXPECTED)


async def test_a_judge_that_is_down_leaves_failed_items_that_a_rerun_finishes(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{closed_port()}"
    async with TGIServer(reply=ScriptedModel()) as server:
        with pytest.raises(EvalIncomplete) as stopped:
            await run_eval(settings(server.base_url, tmp_path, eval_judge_url=down), request(tmp_path / "out"), lambda _: None)
        message = str(stopped.value)
        assert "2 of 2 dialogues not done" in message and "PERSONAE_EVAL_JUDGE_URL" in message and "resume" in message
        records = [json.loads(x) for x in (tmp_path / "out" / RESULTS).read_text().splitlines()]
        assert [(r["status"], r["stage"]) for r in records] == [("failed", "judge")] * 2
        assert all(len(r["dialogue"]) == 4 for r in records)
        played = len(role_requests(server))

        await run_eval(settings(server.base_url, tmp_path), request(tmp_path / "out"), lambda _: None)
        assert len(role_requests(server)) == played  # the dialogues were kept, only the judging was redone
    summary = json.loads((tmp_path / "out" / SUMMARY).read_text())
    assert summary["dialogues"] == 2 and summary["failed"] == 0
    assert summary["dimensions"]["role_choice"]["mean"] == 100


async def test_the_command_says_in_one_line_that_the_judge_is_down(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{closed_port()}"
    async with TGIServer(reply=ScriptedModel()) as server:
        done = await personae(
            "eval", str(HAMLET), "--chats", "1", "--turns", "1", "-o", "out", home=tmp_path,
            PERSONAE_LLM_URL=server.base_url, PERSONAE_EVAL_JUDGE_URL=down, PERSONAE_LLM_RETRIES="0", PERSONAE_PROMPT_LAYOUT="chat",
        )
    assert done.code == 1, done.output
    assert "Traceback" not in done.output
    errors = [line for line in done.lines if line.startswith("error:")]
    assert len(errors) == 1 and "PERSONAE_EVAL_JUDGE_URL" in errors[0] and "run the same command again" in errors[0]
    assert "[1/1] Hamlet with Elena #1: failed at the judge" in done.output
    assert (tmp_path / "out" / RESULTS).exists()


async def test_a_stored_character_is_evaluated_by_name(tmp_path: Path) -> None:
    async with TGIServer(reply=ScriptedModel()) as server:
        done = await personae(
            "eval", "--character", "Mira", "--turns", "1", "-o", "out", home=tmp_path,
            PERSONAE_LLM_URL=server.base_url, PERSONAE_LLM_RETRIES="0", PERSONAE_APPRAISER="lexicon", PERSONAE_PROMPT_LAYOUT="chat",
        )
    assert done.code == 0, done.output
    assert "[1/1] Mira with Traveller #1" in done.output and "dialogues: 1" in done.output
    assert "evaluating 1 dialogue (Mira), 1 exchange each;" in done.output
    assert f"model: {server.base_url}" in done.output and "model: model server:" not in done.output
    summary = json.loads((tmp_path / "out" / SUMMARY).read_text())
    assert summary["appraiser"]["kind"] == "lexicon"
    assert summary["dimensions"]["role_choice"]["n"] + summary["dimensions"]["role_choice"]["unparsed"] == 1


async def test_recorded_dialogues_are_judged_without_playing_new_ones(tmp_path: Path) -> None:
    data = json.loads(HAMLET.read_text())
    data["chats"]["Elena"]["dialogues"] = [
        {"role": "Elena", "dialogue": "What do you see, my prince?"},
        {"role": "Hamlet", "dialogue": "(clutches his chest) A kingdom of ghosts, Elena."},
    ]
    role_file = tmp_path / "Hamlet.json"
    role_file.write_text(json.dumps(data))
    async with TGIServer(reply=ScriptedModel()) as server:
        await run_eval(settings(server.base_url, tmp_path),
                       EvalRequest(role_files=(role_file,), out=tmp_path / "out", config=EvalConfig(recorded=True, judge_max_tokens=64)),
                       lambda _: None)
    assert role_requests(server) == []
    assert not [b for b in server.bodies() if b["messages"][0]["content"].startswith("You are Elena")]
    [record] = [json.loads(x) for x in (tmp_path / "out" / RESULTS).read_text().splitlines()]
    assert record["id"] == "Hamlet/Elena/1" and record["dialogue"][1] == ["Hamlet", "(clutches his chest) A kingdom of ghosts, Elena."]
    assert record["scores"]["role_choice"] == 100


async def test_a_role_file_that_is_missing_or_broken_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"name": "X", "chats": {}}')
    for arg, says in (("missing.json", "cannot read missing.json"), ("broken.json", "has no 'chats'")):
        done = await personae("eval", arg, home=tmp_path, PERSONAE_LLM_URL="http://127.0.0.1:9")
        assert done.code == 1 and done.lines == [done.lines[0]] and "Traceback" not in done.output, done.output
        assert done.lines[0].startswith("error: ") and says in done.lines[0], done.output


async def test_a_character_that_cannot_be_measured_is_skipped_and_the_others_are_gathered(tmp_path: Path) -> None:
    from bots.eval.command import gather_roles
    from core.cards import parse_card_json
    from storage import migrate
    from storage.database import SqlStore

    s = settings("http://127.0.0.1:9", tmp_path)
    await migrate.upgrade(s.database_url)
    store = await SqlStore.open(s.database_url)
    try:
        for sample in ("hamlet", "mira"):
            await store.characters.add(parse_card_json((Path(__file__).resolve().parents[2] / "core" / "samples" / f"{sample}.json").read_bytes()))
        await store.characters.add(parse_card_json(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": {
            "name": "Nyx", "description": "A night spirit.", "first_mes": "Hm?",
            "extensions": {"personae": {"mbti": "INTJ"}}}}).encode()))
    finally:
        await store.close()
    said: list[str] = []
    roles = await gather_roles(s, EvalRequest(characters=("Nyx", "Hamlet")), said.append)
    assert [r.name for r in roles] == ["Hamlet"]
    assert said == [said[0]] and said[0].startswith("skipping Nyx: Nyx has no traits or speaking style to measure against")
    with pytest.raises(InvalidInput, match="Nyx has no traits or speaking style"):
        await gather_roles(s, EvalRequest(characters=("Nyx",)), said.append)
