"""The Regenerate button: only for the person the reply answered, it replaces the shown text."""

from __future__ import annotations

from bots.discord.chat import GONE, NOT_YOURS
from core.engine import NOTICE_UNAVAILABLE, ReplyStatus
from core.events import ConversationKey
from bots.fakes.discord import ALICE, BOB, ROLEPLAY, Sent

FIRST = "To be, or not to be: that is the question."
SECOND = "Whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune."


async def press(bot, message_id: int, user: int, custom_id: str | None = None) -> tuple[Sent, object]:
    """Press the button and wait until the bot is done with the press (a refusal has no reply)."""
    before = len(bot.fake.calls)
    sent = await bot.fake.press(message_id, user=user, custom_id=custom_id)
    if user == ALICE:
        _, reply = await bot.client.wait_for("regenerate_finished", timeout=20)
        return sent, reply
    await bot.fake.wait_for(lambda: bot.fake.callbacks(sent), what="the refusal")
    assert len(bot.fake.calls) > before
    return sent, None


async def first_reply(bot) -> dict:
    await bot.bind(ROLEPLAY)
    bot.tgi.script(reply=FIRST)
    _, reply = await bot.say(ROLEPLAY, ALICE, "What troubles you?")
    assert reply is not None and reply.status is ReplyStatus.ANSWERED
    (shown,) = bot.fake.bot_messages(ROLEPLAY)
    return shown


async def test_the_newest_reply_carries_a_regenerate_button_for_its_conversation(bot):
    shown = await first_reply(bot)

    (row,) = shown["components"]
    (button,) = row["components"]
    assert button["label"] == "Regenerate"
    assert button["custom_id"].startswith("personae:regen:")
    assert f":{ROLEPLAY}:{ALICE}:" in button["custom_id"]


async def test_another_person_pressing_the_button_is_refused_privately(bot):
    shown = await first_reply(bot)
    bot.tgi.script(reply=SECOND)

    sent, _ = await press(bot, int(shown["id"]), BOB)

    (callback,) = bot.fake.callbacks(sent)
    assert callback.body["type"] == 4
    assert callback.body["data"]["content"] == NOT_YOURS
    assert callback.body["data"]["flags"] & 64  # ephemeral
    assert bot.fake.messages[int(shown["id"])]["content"] == FIRST
    assert bot.tgi.count("/v1/chat/completions") == 1


async def test_the_author_pressing_the_button_replaces_the_text(bot):
    shown = await first_reply(bot)
    bot.tgi.script(reply=SECOND)

    sent, reply = await press(bot, int(shown["id"]), ALICE)

    assert reply.status is ReplyStatus.ANSWERED
    assert bot.fake.callbacks(sent)[0].body["type"] == 6  # a silent acknowledgement
    now = bot.fake.messages[int(shown["id"])]
    assert now["content"] == SECOND
    assert now["components"] == shown["components"]  # the button stays
    assert len(bot.fake.bot_messages(ROLEPLAY)) == 1
    stored = await bot.app.store.messages.recent(reply.conversation, 2)
    assert [m.content for m in stored][-1] == SECOND


async def test_a_failed_regeneration_keeps_the_old_text_and_says_why_privately(bot):
    shown = await first_reply(bot)
    bot.tgi.fail("503", times=10)

    sent, reply = await press(bot, int(shown["id"]), ALICE)

    assert reply.status is ReplyStatus.FAILED
    assert bot.fake.messages[int(shown["id"])]["content"] == FIRST
    (followup,) = bot.fake.followups(sent)
    assert followup.body["content"] == NOTICE_UNAVAILABLE and followup.body["flags"] & 64


async def test_the_button_moves_to_the_newest_reply(bot):
    older = await first_reply(bot)
    stale = older["components"][0]["components"][0]["custom_id"]
    edits_of_older = len([c for c in bot.fake.edits(ROLEPLAY) if c.path.endswith(older["id"])])
    bot.tgi.script(reply=SECOND)
    await bot.say(ROLEPLAY, ALICE, "And then?")

    newer = max(bot.fake.bot_messages(ROLEPLAY), key=lambda m: int(m["id"]))
    assert newer["components"]
    # No write spent on taking the old button away: pressed, it says why it no longer works.
    assert bot.fake.messages[int(older["id"])]["components"]
    assert len([c for c in bot.fake.edits(ROLEPLAY) if c.path.endswith(older["id"])]) == edits_of_older

    sent, reply = await press(bot, int(older["id"]), ALICE)
    assert reply.status is ReplyStatus.NOT_FOUND
    assert bot.fake.answer_text(sent) == GONE
    assert bot.fake.messages[int(older["id"])]["content"] == FIRST
    assert bot.fake.messages[int(older["id"])]["components"] == []  # and then it is gone

    sent, reply = await press(bot, int(older["id"]), ALICE, stale)  # a screen that still shows the old button
    assert reply.status is ReplyStatus.NOT_FOUND
    assert bot.fake.answer_text(sent) == GONE


async def test_the_button_still_works_after_a_restart(bot):
    shown = await first_reply(bot)
    bot.client._offers.clear()  # what a new process knows about earlier replies: nothing
    bot.tgi.script(reply=SECOND)

    _, reply = await press(bot, int(shown["id"]), ALICE)

    assert reply.status is ReplyStatus.ANSWERED
    assert bot.fake.messages[int(shown["id"])]["content"] == SECOND
    assert isinstance(reply.conversation, ConversationKey)


async def test_regenerating_a_long_reply_reuses_its_messages_and_deletes_the_rest(bot):
    await bot.bind(ROLEPLAY)
    sentence = "The time is out of joint; O cursed spite, that ever I was born to set it right. "
    bot.tgi.script(reply=(sentence * 40).strip(), chunks=1)  # one chunk: few writes, no wait for the budget
    await bot.say(ROLEPLAY, ALICE, "Tell me everything.")
    first, last = sorted(bot.fake.bot_messages(ROLEPLAY), key=lambda m: int(m["id"]))
    assert last["components"] and not first["components"]
    bot.tgi.script(reply=SECOND)

    _, reply = await press(bot, int(last["id"]), ALICE)

    assert reply.status is ReplyStatus.ANSWERED
    (now,) = bot.fake.bot_messages(ROLEPLAY)
    assert now["id"] == first["id"]  # the reply stays where it was
    assert now["content"] == SECOND
    assert now["components"][0]["components"][0]["label"] == "Regenerate"
    assert bot.fake.requests("DELETE") and bot.fake.requests("DELETE")[0].path.endswith(last["id"])


async def test_deleting_the_newest_reply_in_discord_takes_it_back(bot):
    from bots.fakes.discord import GUILD_ID

    await bot.bind(ROLEPLAY)
    bot.tgi.script(reply=FIRST)
    _, reply = await bot.say(ROLEPLAY, ALICE, "Speak.")
    (shown,) = bot.fake.bot_messages(ROLEPLAY)

    taken_back = bot.client.wait_for("reply_deleted", timeout=10)
    await bot.fake.dispatch("MESSAGE_DELETE", {"id": shown["id"], "channel_id": str(ROLEPLAY), "guild_id": str(GUILD_ID)})
    await taken_back

    stored = await bot.app.store.messages.recent(reply.conversation, 10)
    # The exchange is taken back: the message it answered leaves the history too (marked undone),
    # so the person's next message is a turn of its own rather than joined to "Speak.".
    assert [(m.role, m.content) for m in stored] == []
