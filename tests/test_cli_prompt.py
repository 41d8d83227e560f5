"""`personae prompt` prints exactly what would go to the model, with no database or model server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bots.cli import app

SAMPLES = Path(__file__).resolve().parents[1] / "core" / "samples"
GOLDEN = Path(__file__).resolve().parent / "golden"
runner = CliRunner()


def prompt(*args: str):
    return runner.invoke(app, ["prompt", *args])


def test_hamlet_prompt_is_the_model_card_template_filled_byte_for_byte() -> None:
    result = prompt(str(SAMPLES / "hamlet.json"), "--user", "Elena", "--json")
    assert result.exit_code == 0, result.output
    messages = json.loads(result.stdout)["messages"]
    card = json.loads((SAMPLES / "hamlet.json").read_text())
    expected = (GOLDEN / "system_prompt.en.txt").read_text(encoding="utf-8").format(
        role_name="Hamlet",
        world="8th Century Danish Royalty",
        character="extreme, strong, decisive",
        personality="Extraverted (E), Intuitive (N), Feeling (F), Judging (J)",
        style="indecisive, decisive, sentimental",
        scene=card["data"]["scenario"],
        emotion="happiness: 1, sadness: 8, disgust: 5, fear: 7, surprise: 6, anger: 4",
        chat_role="Elena",
        relationship="7",
    )
    assert messages == [{"role": "system", "content": expected}]


def test_options_override_scene_emotion_relationship_and_history_is_appended(tmp_path: Path) -> None:
    history = tmp_path / "h.json"
    history.write_text(json.dumps([{"role": "user", "content": "Hi {role_name}"}, {"role": "assistant", "content": "Hello."}]))
    result = prompt(
        str(SAMPLES / "mira.json"), "--user", "Tom", "--scene", "A {quiet} dock.", "--emotion", "happiness=2,anger=9",
        "--relationship", "1", "--history", str(history), "--message", "Bye", "--json",
    )
    assert result.exit_code == 0, result.output
    messages = json.loads(result.stdout)["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    system = messages[0]["content"]
    assert "Current scene:\nA {quiet} dock.\n" in system
    assert "happiness: 2, sadness: 0, disgust: 0, fear: 0, surprise: 0, anger: 9" in system
    assert "Your intimacy level with them is 1 (" in system
    assert messages[1]["content"] == "Hi {role_name}"


def test_chinese_card_takes_english_emotion_keys_and_renders_chinese_names() -> None:
    result = prompt(str(SAMPLES / "lin_daiyu.json"), "--user", "宝玉", "--emotion", "happiness=4", "--json")
    assert result.exit_code == 0, result.output
    assert "快乐: 4, 悲伤: 0" in json.loads(result.stdout)["messages"][0]["content"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--emotion", "joy=3"], "unknown emotion 'joy'"),
        (["--emotion", "anger=11"], "anger must be from 0 to 10, not 11"),
        (["--relationship", "-1"], "relationship must be from 0 to 10, not -1"),
    ],
)
def test_bad_options_give_one_clear_line_and_exit_1(args: list[str], message: str) -> None:
    result = prompt(str(SAMPLES / "hamlet.json"), "--user", "Elena", *args, "--json")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {message}" or message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_a_file_that_is_not_a_card_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = prompt(str(bad), "--user", "X", "--json")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: the card is not JSON")
