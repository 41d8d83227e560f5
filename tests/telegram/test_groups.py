"""Group chats: binding by admins, answering mentions and replies, streaming by edits, regenerating."""

from __future__ import annotations

import logging

import pytest

from core.commands import ADMIN_ONLY
from tests.telegram.conftest import FAST, Harness
from bots.fakes.telegram import NOT_MODIFIED
from tests.texts import just_over, sentences

GROUP = -100123


def regenerate_button(message: dict) -> str:
    (row,) = message["reply_markup"]["inline_keyboard"]
    return row[0]["callback_data"]


async def test_a_non_admin_cannot_bind_and_nothing_changes(bot: Harness) -> None:
    tg = bot.tg
    await bot.add_character("Hamlet")
    group, mia = tg.group(GROUP), tg.user(31, "Mia")
    tg.members[(GROUP, 31)] = "member"
    tg.say(group, mia, "/bind Hamlet all")
    await bot.idle()
    assert tg.texts(GROUP) == [ADMIN_ONLY]
    assert await bot.app.store.bindings.get("telegram", str(GROUP)) is None
    tg.say(group, mia, "Anyone here?")
    await bot.idle()
    assert tg.texts(GROUP) == [ADMIN_ONLY]
    assert bot.tgi.count("/v1/chat/completions") == 0


@pytest.mark.parametrize("status", ["administrator", "creator"])
async def test_a_chat_admin_binds_a_character_in_mention_mode_by_default(bot: Harness, status: str) -> None:
    tg = bot.tg
    await bot.add_character("Hamlet")
    group, ada = tg.group(GROUP), tg.user(32, "Ada")
    tg.members[(GROUP, 32)] = status
    tg.say(group, ada, "/bind@persona_bot Hamlet")
    await bot.idle()
    assert tg.texts(GROUP) == ["Hamlet now plays here and answers mentions and replies."]
    binding = await bot.app.store.bindings.get("telegram", str(GROUP))
    assert binding is not None and binding.trigger == "mention"
    assert [c.params for c in tg.calls_of("getChatMember")] == [{"chat_id": GROUP, "user_id": 32}]

    tg.say(group, ada, "/scene set A cold night on the battlements.")
    await bot.idle()
    assert tg.texts(GROUP)[-1] == "Scene set."
    assert len(tg.calls_of("getChatMember")) == 1, "the admin check is cached"


async def test_admin_status_is_per_chat_and_the_cached_answer_stays_in_its_chat(bot: Harness) -> None:
    tg = bot.tg
    await bot.add_character("Hamlet")
    other_id = GROUP - 1
    group, other, ada = tg.group(GROUP), tg.group(other_id, "The Cellar"), tg.user(34, "Ada")
    tg.members[(GROUP, 34)] = "administrator"
    tg.members[(other_id, 34)] = "member"
    tg.say(group, ada, "/bind Hamlet all")
    await bot.idle()
    assert tg.texts(GROUP) == ["Hamlet now plays here and answers every message."]
    # Ada's admin status in GROUP is cached now; in the other chat she is a plain member.
    tg.say(other, ada, "/bind Hamlet all")
    await bot.idle()
    assert tg.texts(other_id) == [ADMIN_ONLY]
    assert await bot.app.store.bindings.get("telegram", str(other_id)) is None
    # And the other way round: a cached "no" in the other chat does not refuse her in GROUP.
    tg.say(group, ada, "/scene set A cold night on the battlements.")
    await bot.idle()
    assert tg.texts(GROUP)[-1] == "Scene set."
    assert sorted(c.params["chat_id"] for c in tg.calls_of("getChatMember")) == [other_id, GROUP]


async def test_mention_mode_answers_mentions_and_replies_only(bot: Harness) -> None:
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    await bot.bind(GROUP, "Hamlet", "mention")
    group, ann = tg.group(GROUP), tg.user(33, "Ann")

    tg.say(group, ann, "just chatting among ourselves")
    mention = tg.say(group, ann, "@persona_bot what do you think?")["message"]
    await bot.idle()
    assert tgi.count("/v1/chat/completions") == 1
    # What Ann said to no one is a line of the scene (the room's), not a message to answer.
    assert tgi.bodies()[-1]["messages"][-1]["content"] == "Ann: just chatting among ourselves\nAnn: what do you think?"
    (answer,) = tg.bot_messages(GROUP)
    assert answer["text"] == tgi.reply
    assert answer["reply_to_message"]["message_id"] == mention["message_id"]

    tg.say(group, ann, "and to another person", reply_to=mention["message_id"])
    tg.say(group, ann, "Really?", reply_to=answer["message_id"])
    await bot.idle()
    assert tgi.count("/v1/chat/completions") == 2
    assert tgi.bodies()[-1]["messages"][-1]["content"] == "Ann: and to another person\nAnn: Really?"
    assert tg.texts(GROUP) == [tgi.reply, tgi.reply]


async def test_a_reply_streams_by_editing_one_message_at_a_paced_rate(bot: Harness, sent) -> None:
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    await bot.bind(GROUP, "Hamlet", "all")
    group, ann = tg.group(GROUP), tg.user(34, "Ann")
    tgi.script(reply=" ".join(f"word{i}" for i in range(30)), token_delay=0.03)
    tg.say(group, ann, "Tell me a story.")
    await bot.idle()
    calls = [c for c in tg.calls if c.method in ("sendMessage", "editMessageText") and c.params.get("chat_id") == GROUP]
    assert calls[0].method == "sendMessage" and len(calls) >= 3
    assert not tg.calls_of("sendMessageDraft")
    assert all("parse_mode" not in c.params for c in calls)
    # Every edit but the last (which completes the text at once) waits its turn: measured when the
    # adapter sent each request (client side), not when the fake received it.
    times = [c.at for c in sent if c.method in ("sendMessage", "editMessageText") and c.params.get("chat_id") == GROUP]
    assert len(times) == len(calls)
    gaps = [b - a for a, b in zip(times, times[1:-1])]
    assert min(gaps) >= FAST.edit_interval - 1e-3, gaps
    (answer,) = tg.bot_messages(GROUP)
    assert answer["text"] == tgi.reply
    assert regenerate_button(answer).startswith("regen:")


async def test_a_9000_character_reply_arrives_as_three_messages(bot: Harness) -> None:
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    await bot.bind(GROUP, "Hamlet", "all")
    sentence = "Something is rotten in the state of Denmark, and the night is long. "
    text = (sentence * (9000 // len(sentence) + 1))[:9000].strip()
    tgi.script(reply=text, chunks=60)
    tg.say(tg.group(GROUP), tg.user(35, "Ann"), "Tell me everything.")
    await bot.idle()
    pieces = tg.texts(GROUP)
    assert len(pieces) == 3 and all(len(p) <= 4096 for p in pieces)
    assert " ".join(pieces).split() == text.split()
    assert len(tg.calls_of("sendMessage", GROUP)) == 3
    messages = tg.bot_messages(GROUP)
    assert "reply_markup" not in messages[0] and "reply_markup" not in messages[1]
    assert regenerate_button(messages[2]).startswith("regen:"), "the button goes on the last piece only"


async def test_a_reply_of_exactly_4096_characters_is_one_message_and_4097_are_cut_at_4096(bot: Harness) -> None:
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    await bot.bind(GROUP, "Hamlet", "all")
    group, ann = tg.group(GROUP), tg.user(36, "Ann")
    exact = sentences(4096)
    tgi.script(reply=exact, chunks=30)
    tg.say(group, ann, "All of it, in one.")
    await bot.idle()
    assert tg.texts(GROUP) == [exact]
    over, head = just_over(4096)  # the sentence end's space is character 4,096: the cut is right there
    tgi.script(reply=over, chunks=30)
    tg.say(group, ann, "All of it, and one more.")
    await bot.idle()
    assert tg.texts(GROUP)[1:] == [head, "I"]


async def test_message_is_not_modified_is_not_an_error(bot: Harness, caplog: pytest.LogCaptureFixture) -> None:
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    await bot.bind(GROUP, "Hamlet", "all")
    tg.fail("editMessageText", 400, NOT_MODIFIED, times=1)
    tgi.script(reply=" ".join(f"word{i}" for i in range(20)), token_delay=0.03)
    with caplog.at_level(logging.WARNING):
        tg.say(tg.group(GROUP), tg.user(36, "Ann"), "Go on.")
        await bot.idle()
    assert tg.texts(GROUP) == [tgi.reply]
    assert tg.calls_of("editMessageText", GROUP)  # the refused edit was made (and taken as done)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_regenerate_is_refused_to_others_and_replaces_the_reply_for_its_author(bot: Harness) -> None:
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    await bot.bind(GROUP, "Hamlet", "all")
    group, ann, bob = tg.group(GROUP), tg.user(37, "Ann"), tg.user(38, "Bob")
    tgi.script(reply="The first answer.")
    tg.say(group, ann, "Who are you?")
    await bot.idle()
    (answer,) = tg.bot_messages(GROUP)
    data = regenerate_button(answer)

    tgi.script(reply="A better answer.")
    tg.press(bob, GROUP, answer["message_id"], data)
    await bot.idle()
    (refusal,) = tg.calls_of("answerCallbackQuery")
    assert refusal.params["show_alert"] is True and "Only the person" in refusal.params["text"]
    assert tgi.count("/v1/chat/completions") == 1
    assert tg.texts(GROUP) == ["The first answer."]

    tg.press(ann, GROUP, answer["message_id"], data)
    await bot.idle()
    assert tgi.count("/v1/chat/completions") == 2
    (replaced,) = tg.bot_messages(GROUP)
    assert replaced["message_id"] == answer["message_id"] and replaced["text"] == "A better answer."
    assert regenerate_button(replaced) == data, "the new reply keeps its button"
    # The model sees the new reply as the last turn of the conversation.
    tg.say(group, ann, "And then?")
    await bot.idle()
    assert tgi.bodies()[-1]["messages"][-2] == {"role": "assistant", "content": "A better answer."}


async def test_an_older_reply_cannot_be_regenerated(bot: Harness) -> None:
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    await bot.bind(GROUP, "Hamlet", "all")
    group, ann = tg.group(GROUP), tg.user(39, "Ann")
    tg.say(group, ann, "One.")
    tg.say(group, ann, "Two.")
    await bot.idle()
    first = tg.bot_messages(GROUP)[0]
    tg.press(ann, GROUP, first["message_id"], regenerate_button(first))
    await bot.idle()
    (alert,) = tg.calls_of("answerCallbackQuery")
    assert alert.params["show_alert"] is True and "newest" in alert.params["text"]
    assert tgi.count("/v1/chat/completions") == 2


async def test_regenerating_a_long_reply_writes_over_all_its_messages(bot: Harness) -> None:
    tg, tgi = bot.tg, bot.tgi
    await bot.add_character("Hamlet")
    await bot.bind(GROUP, "Hamlet", "all")
    group, ann = tg.group(GROUP), tg.user(40, "Ann")
    tgi.script(reply="Words, words, words. " * 300, chunks=30)  # 6,300 characters: two messages
    tg.say(group, ann, "Read to me.")
    await bot.idle()
    first, second = tg.bot_messages(GROUP)
    tgi.script(reply="In short: words.")
    tg.press(ann, GROUP, second["message_id"], regenerate_button(second))
    await bot.idle()
    (only,) = tg.bot_messages(GROUP)
    assert only["message_id"] == first["message_id"] and only["text"] == "In short: words."
    assert regenerate_button(only) == regenerate_button(second)
    assert [c.params["message_id"] for c in tg.calls_of("deleteMessage", GROUP)] == [second["message_id"]]
