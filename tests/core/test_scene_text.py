"""The scene slot's one composition: the scene, then lorebook entries, then memories, on one line."""

from __future__ import annotations

from core.scene_text import lore_line, scene_text


def test_scene_then_lore_then_memories_on_one_line() -> None:
    en = scene_text("Elsinore at night", ["A ghost walks\nat midnight"], ["Elena keeps a lantern"])
    assert en == "Elsinore at night. A ghost walks at midnight. What {{char}} remembers of {{user}}: Elena keeps a lantern."
    zh = scene_text("长安城", ["李白爱酒"], ["艾琳娜有一盏灯笼"], language="zh")
    assert zh == "长安城。李白爱酒。{{char}}记得关于{{user}}的事：艾琳娜有一盏灯笼。"


def test_nothing_added_leaves_the_scene_byte_for_byte() -> None:
    for base in ("Elsinore at night", "  Two\nlines  ", ""):
        assert scene_text(base) == base
        assert scene_text(base, ["  "], ["\n"]) == base


def test_the_lore_budget_counts_the_entries_as_the_scene_holds_them() -> None:
    entries = ["The king is dead", "Long live the king!"]
    assert scene_text("Night.", entries).endswith(" " + lore_line(entries))
    assert scene_text("夜。", ["李白爱酒"], language="zh") == "夜。" + lore_line(["李白爱酒"], "zh")
