"""Role files in AutoRPEval's shape, stored characters as roles, and the figures of a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from bots.eval import report
from bots.eval.roles import bundled_role_files, load_role_file, role_from_character, role_from_json
from core.cards import parse_card_json, profile_from_card
from core.character import Character
from core.errors import InvalidInput

SAMPLES = Path(__file__).resolve().parents[2] / "core" / "samples"


def test_the_bundled_role_set_is_english_autorpeval_roles_with_labels_and_an_identity_question() -> None:
    roles = [load_role_file(p) for p in bundled_role_files()]
    assert [r.name for r in roles] == ["Hamlet", "Mira"]
    for role in roles:
        assert role.profile.language == "en" and role.profile.mbti
        assert len(role.chats) == 2 and role.role_answer in "ABCD"
        assert f"{role.role_answer}. {role.name}." in role.role_candidates


def test_an_autorpeval_file_reads_float_relationships_and_chinese_emotion_names() -> None:
    role = role_from_json({
        "name": "林黛玉", "world": "大观园", "character": "敏感，聪慧", "personality": "INFP", "style": "含蓄、伤感",
        "chats": {"宝玉": {"chat_role": "宝玉", "scene": "潇湘馆内。", "relationship_score": 7.6,
                          "emotions": {"快乐": 1, "悲伤": 8, "厌恶": 0, "恐惧": 2, "惊讶": 1, "愤怒": 3}}},
    })
    assert role.profile.language == "zh" and role.profile.traits == ("敏感", "聪慧")
    assert role.chats[0].relationship == 8 and role.chats[0].emotion.sadness == 8
    assert role.role_candidates is None  # no identity question: role choice is not asked


@pytest.mark.parametrize("broken, says", [
    ({"name": "X", "world": "w", "character": "a", "personality": "ENFJ", "style": "b"}, "no 'chats'"),
    ({"name": "X", "world": "w", "character": "a", "personality": "ENFJ", "style": "b",
      "chats": {"Y": {"scene": "s", "emotions": {"joy": 1}, "relationship_score": 3}}}, "unknown emotion 'joy'"),
    ({"name": "X", "world": "w", "character": "a", "personality": "ENFJ", "style": "b",
      "chats": {"Y": {"scene": "s", "emotions": {}, "relationship_score": 11}}}, "must be 0-10"),
    ({"name": "X", "world": "w", "character": "a", "personality": "XYZW", "style": "b",
      "chats": {"Y": {"scene": "s", "emotions": {}, "relationship_score": 1}}}, "MBTI"),
])
def test_a_broken_role_file_is_refused_with_what_is_wrong(broken: dict, says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        role_from_json(broken, "role.json")


def test_a_stored_character_meets_a_stranger_in_its_own_scene_labelled_with_its_baseline() -> None:
    card = parse_card_json((SAMPLES / "mira.json").read_bytes())
    mira = Character(1, profile_from_card(card), card)
    hamlet = profile_from_card(parse_card_json((SAMPLES / "hamlet.json").read_bytes()))
    role = role_from_character(mira, [hamlet])
    chat = role.chats[0]
    assert chat.partner == "Traveller" and "Traveller" in chat.scene and "{{user}}" not in chat.scene
    assert chat.emotion == mira.profile.emotion and chat.relationship == mira.profile.relationship
    letters = dict(line.split(". ", 1) for line in role.role_candidates.splitlines())
    assert letters[role.role_answer].startswith("Mira.") and len(letters) == 2


def test_a_character_that_cannot_be_measured_is_told_exactly_what_it_lacks() -> None:
    card = parse_card_json(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": {
        "name": "Nyx", "description": "A night spirit.", "first_mes": "Hm?",
        "extensions": {"personae": {"mbti": "INTJ"}}}}).encode())
    nyx = Character(1, profile_from_card(card), card)
    assert nyx.profile.mbti == "INTJ"
    with pytest.raises(InvalidInput) as refused:
        role_from_character(nyx)
    assert str(refused.value).startswith("Nyx has no traits or speaking style to measure against;")
    assert "MBTI" not in str(refused.value)


def _done(scores: dict, status: str = "ok") -> dict:
    return {"status": "done", "scores": scores, "judged": {d: {"status": status if scores[d] is None else "ok"} for d in scores}}


def test_the_paper_avg_is_the_mean_of_cserp_with_errors_turned_into_accuracies() -> None:
    paper = {d: report.PAPER[d] for d in ("character", "style", "emotion_error", "relationship_error", "personality",
                                           "human_likeness", "coherence", "role_choice")}
    summary = report.summarize([_done(paper), _done(paper)])
    assert summary["dimensions"]["avg"]["mean"] == pytest.approx(report.PAPER["avg"], abs=0.01)
    assert summary["dimensions"]["character"] == {"mean": 74.58, "se": 0.0, "n": 2, "unparsed": 0, "skipped": 0}


def test_unparsed_scores_are_counted_and_left_out_of_the_mean(tmp_path: Path) -> None:
    a = {d: 50.0 for d in report.PAPER if d != "avg"}
    b = {**a, "character": None, "style": 100.0}
    summary = report.summarize([_done(a), _done(b, "unparsed"), {"status": "failed"}])
    character, style = summary["dimensions"]["character"], summary["dimensions"]["style"]
    assert character == {"mean": 50.0, "se": None, "n": 1, "unparsed": 1, "skipped": 0}
    assert style["mean"] == 75.0 and style["se"] == 25.0 and style["n"] == 2
    assert summary["dialogues"] == 2 and summary["failed"] == 1
    text = report.table(summary)
    assert "Character" in text and "50.00" in text and "75.00 ± 25.00" in text and "dialogues: 2 (and 1 failed)" in text
    report.write_json(summary, tmp_path / "summary.json")
    report.write_chart(summary, tmp_path / "chart.png")
    assert json.loads((tmp_path / "summary.json").read_text())["dimensions"]["style"]["mean"] == 75.0
    with Image.open(tmp_path / "chart.png") as image:
        assert image.format == "PNG" and image.width > 400
