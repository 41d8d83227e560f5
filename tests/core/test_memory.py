"""Long-term memory's pure parts: reading the model's answer, merging, pruning, recall, the scene text."""

from __future__ import annotations

import datetime as dt

import pytest

from core.cards import new_card, profile_from_card
from core.memory import (
    BadAnswer,
    Memory,
    NewMemory,
    condensing_task,
    merge,
    prune,
    read_memories,
    select,
    words,
)
from core.model_input import model_messages
from core.prompt import estimate_tokens
from core.scene_text import scene_text

AT = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)


def mem(i: int, text: str, kind: str = "fact") -> Memory:
    return Memory(i, kind, text, i, i, estimate_tokens(text), AT)


def test_read_memories_takes_the_last_object_and_skips_what_is_not_a_memory() -> None:
    answer = (
        'Thinking about it. {"memories": [{"kind": "fact", "text": "Elena\\nkeeps a blue lantern."}, '
        '{"kind": "gossip", "text": "x"}, {"kind": "event", "text": ""}, "loose", '
        '{"kind": "relationship", "text": "Hamlet trusts Elena since she kept his secret."}]}'
    )
    assert read_memories(answer) == [
        ("fact", "Elena keeps a blue lantern."),
        ("relationship", "Hamlet trusts Elena since she kept his secret."),
    ]
    assert read_memories('{"memories": []}') == []
    long = read_memories('{"memories": [{"kind": "fact", "text": "%s"}]}' % ("a" * 1000))
    assert len(long[0][1]) == 300 and long[0][1].endswith("…")


@pytest.mark.parametrize("answer", ["no json at all", '{"memory": []}', '{"memories": "Elena"}', '{"memories": [1, 2'])
def test_read_memories_refuses_an_answer_without_a_list(answer: str) -> None:
    with pytest.raises(BadAnswer):
        read_memories(answer)


def test_words_leave_out_stop_words_and_read_chinese_in_pairs() -> None:
    assert words("Do you remember my Lanterns?") == {"remember", "lantern"}
    assert {"灯笼", "蓝色"} <= words("她有一个蓝色的灯笼")


def test_merge_replaces_an_older_memory_that_says_nearly_the_same() -> None:
    old = [mem(1, "Elena keeps a blue lantern from her grandmother."), mem(2, "Elena hates the sea.")]
    new = [
        NewMemory("fact", "Elena keeps a blue lantern from her grandmother Ingrid.", 5, 9, 12),
        NewMemory("fact", "Elena keeps a blue lantern from her grandmother Ingrid!", 5, 9, 12),
        NewMemory("event", "Elena hates the sea.", 5, 9, 6),  # another kind: not the same memory
    ]
    kept, replaced = merge(old, new)
    assert [n.text for n in kept] == [new[0].text, new[2].text]
    assert replaced == [1]


def test_prune_drops_the_oldest_events_first_then_relationship_then_facts() -> None:
    memories = [
        mem(1, "Elena's name is Elena.", "fact"),
        mem(2, "They walked on the battlements.", "event"),
        mem(3, "Hamlet warmed to Elena after the storm.", "relationship"),
        mem(4, "They read a letter together.", "event"),
        mem(5, "Elena promised to come back at dawn.", "fact"),
    ]
    total = sum(m.tokens for m in memories)
    assert prune(memories, total) == []
    assert prune(memories, total - 1) == [2]
    events = memories[1].tokens + memories[3].tokens
    assert prune(memories, total - events) == [2, 4]
    assert prune(memories, total - events - 1) == [2, 4, 3]
    assert prune(memories, memories[4].tokens) == [2, 4, 3, 1]
    kept = [m for m in memories if m.id not in prune(memories, 30)]
    assert sum(m.tokens for m in kept) <= 30


def test_select_prefers_shared_words_then_recency_within_the_budget() -> None:
    memories = [mem(i, f"They talked about the weather on day {i}.", "event") for i in range(1, 9)]
    memories.insert(1, mem(100, "Elena keeps a blue lantern from her grandmother."))
    budget = memories[1].tokens + memories[-1].tokens
    chosen = select(memories, "Do you still have my lantern?", budget)
    assert [m.id for m in chosen] == [100, 8]  # the lantern first, then the newest; oldest first in the result
    assert sum(m.tokens for m in chosen) <= budget
    assert select(memories, "lantern", 0) == []
    assert [m.id for m in select(memories, "hello", 10_000)] == [m.id for m in memories]


def test_scene_text_adds_memories_on_one_line_in_the_characters_language() -> None:
    assert scene_text("Elsinore at night.") == "Elsinore at night."
    en = scene_text("Elsinore at night.", memories=["Elena keeps a\nblue lantern.", "She hates the sea."])
    assert en == "Elsinore at night. What {{char}} remembers of {{user}}: Elena keeps a blue lantern. She hates the sea."
    zh = scene_text("夜晚的城堡。", memories=["艾琳娜有一盏蓝色的灯笼。"], language="zh")
    assert zh == "夜晚的城堡。{{char}}记得关于{{user}}的事：艾琳娜有一盏蓝色的灯笼。"
    lore = scene_text("Night.", lore=["Elsinore is a castle."], memories=["Elena keeps a lantern."])
    assert lore == "Night. Elsinore is a castle. What {{char}} remembers of {{user}}: Elena keeps a lantern."


def test_model_messages_put_memories_into_the_scene_line_only() -> None:
    profile = profile_from_card(
        new_card(name="Hamlet", world="Denmark", traits=["brooding"], mbti="INFP", style=["poetic"], scene="Elsinore at night.")
    )
    plain = model_messages(profile, user="Elena", text="Hello")
    with_memory = model_messages(profile, user="Elena", text="Hello", memories=["Elena keeps a\nblue lantern [INST]."])
    system = with_memory[0]["content"]
    assert "Elsinore at night. What Hamlet remembers of Elena: Elena keeps a blue lantern [\u2060INST]." in system
    assert len(system.splitlines()) == len(plain[0]["content"].splitlines())
    assert with_memory[1:] == plain[1:]


def test_condensing_task_names_both_and_lists_what_is_known() -> None:
    task = condensing_task("en", char="Hamlet", user="Elena", known=[mem(1, "Elena hates the sea.")], lines=[("Elena", "I am back."), ("Hamlet", "Welcome.")])
    assert "what Hamlet should remember about Elena" in task
    assert "- Elena hates the sea." in task and task.endswith("Elena: I am back.\nHamlet: Welcome.")
    zh = condensing_task("zh", char="哈姆雷特", user="艾琳娜", known=[], lines=[("艾琳娜", "我回来了。")])
    assert "哈姆雷特在以后的对话中应当记住的关于艾琳娜的事" in zh and "（暂无）" in zh
