"""`personae eval` plays a stored character with its lorebook: the role's prompt is the engine's, entries included."""

from __future__ import annotations

from bots.eval.roles import role_from_character
from bots.eval.run import EvalConfig, actor_messages
from core.cards import new_card, normalise_card, profile_from_card
from core.character import Character
from core.lorebook import LoreSettings
from core.prompt import Turn


def test_the_eval_role_prompt_holds_the_entries_its_turns_activate() -> None:
    card = new_card(name="Hamlet", world="Denmark", traits=["brooding"], mbti="INFP", style=["poetic"], scene="Elsinore at night.")
    card["data"]["character_book"] = {
        "entries": [{"keys": ["Yorick"], "content": "Yorick was the king's jester.", "extensions": {}, "enabled": True, "insertion_order": 100}],
        "extensions": {},
    }
    card = normalise_card(card)
    role = role_from_character(Character(1, profile_from_card(card), card))
    chat = role.chats[0]
    history = [Turn("user", "Hello."), Turn("assistant", "Good evening.")]
    system = actor_messages(role, chat, history, "Poor Yorick!", EvalConfig())[0]["content"]
    assert "Current scene:\nElsinore at night. Yorick was the king's jester.\n" in system
    assert "jester" not in actor_messages(role, chat, history, "Hello again.", EvalConfig())[0]["content"]
    assert "jester" not in actor_messages(role, chat, history, "Poor Yorick!", EvalConfig(lore=LoreSettings(max_tokens=0)))[0]["content"]
