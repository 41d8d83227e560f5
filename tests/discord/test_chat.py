"""Messages in channels, threads and DMs, answered with streamed replies by the real discord.py client."""

from __future__ import annotations

import asyncio
import re
import time

from bots.discord.chat import ATTACHMENT_NOTE
from core.engine import NOTICE_UNAVAILABLE, ReplyStatus
from tests.texts import just_over, sentences
from bots.fakes.discord import ALICE, BOB, BOT_ID, DM, LOBBY, OTHER_BOT, OWNER, ROLEPLAY, TAVERN, THREAD

LINE = "Speak, for the night is long and the ghosts of Elsinore are restless tonight, my friend."


def record_writes(client) -> list[tuple[str, str, str, float]]:
    """Every message write the adapter makes, as (method, url, content, when it made the request):
    recorded on the client's side, before discord.py's own rate limiting and the network."""
    writes: list[tuple[str, str, str, float]] = []
    request = client.http.request

    async def recording(route, **kw):
        payload = kw.get("json") or {}
        if route.method in ("POST", "PATCH") and isinstance(payload, dict) and "content" in payload:
            writes.append((route.method, route.url, payload["content"], time.monotonic()))
        return await request(route, **kw)

    client.http.request = recording
    return writes


def content_edits(fake, channel: int) -> list:
    return [c for c in fake.edits(channel) if "content" in c.body]


async def test_a_message_in_a_bound_channel_gets_a_streamed_reply_to_it(bot):
    await bot.bind(ROLEPLAY)
    bot.tgi.script(reply=LINE, token_delay=0.12)  # about 2 s of streaming: a send, then edits

    payload, reply = await bot.say(ROLEPLAY, ALICE, "Who goes there?")

    assert reply is not None and reply.status is ReplyStatus.ANSWERED
    posts = bot.fake.posted(ROLEPLAY)
    assert len(posts) == 1
    first = posts[0].body
    assert first["message_reference"]["message_id"] == int(payload["id"])
    assert first["allowed_mentions"]["parse"] == []
    assert LINE.startswith(first["content"]) and first["content"] != LINE  # the first text, not the whole
    edits = content_edits(bot.fake, ROLEPLAY)
    assert edits, "the reply should grow by edits"
    assert all(e.body["allowed_mentions"]["parse"] == [] for e in edits)
    assert edits[-1].body["content"] == LINE
    (shown,) = bot.fake.bot_messages(ROLEPLAY)
    assert shown["content"] == LINE
    typing = bot.fake.requests("POST", f"/channels/{ROLEPLAY}/typing")
    assert typing and typing[0].at <= posts[0].at


async def test_the_person_is_not_pinged_and_the_model_cannot_ping_anyone(bot):
    await bot.bind(ROLEPLAY)
    bot.tgi.script(reply="@everyone look, <@900000000000000102> is here!")

    await bot.say(ROLEPLAY, ALICE, "Call everyone")

    (post,) = bot.fake.posted(ROLEPLAY)
    assert post.body["allowed_mentions"] == {"parse": []}


async def test_an_unbound_channel_gets_nothing(bot):
    _, reply = await bot.say(LOBBY, ALICE, "Is anyone here?")

    assert reply is not None and reply.status is ReplyStatus.IGNORED
    assert bot.fake.requests(path=rf"/channels/{LOBBY}/.*") == []
    assert bot.tgi.count("/v1/chat/completions") == 0


async def test_mention_mode_answers_mentions_and_replies_only(bot):
    await bot.bind(TAVERN, trigger="mention")

    _, ignored = await bot.say(TAVERN, ALICE, "Just talking among ourselves.")
    assert ignored is not None and ignored.status is ReplyStatus.IGNORED
    assert bot.fake.posted(TAVERN) == []

    _, mentioned = await bot.say(TAVERN, ALICE, f"<@{BOT_ID}> what news?", mentions=[BOT_ID])
    assert mentioned is not None and mentioned.status is ReplyStatus.ANSWERED
    assert len(bot.fake.posted(TAVERN)) == 1
    # The mention itself is not sent; what Alice said to no one is, as a line of the scene.
    assert bot.tgi.bodies()[-1]["messages"][-1]["content"] == "Alice: Just talking among ourselves.\nAlice: what news?"

    (bot_message,) = bot.fake.bot_messages(TAVERN)
    _, replied = await bot.say(TAVERN, BOB, "And what then?", reply_to=int(bot_message["id"]))
    assert replied is not None and replied.status is ReplyStatus.ANSWERED
    assert len(bot.fake.posted(TAVERN)) == 2
    assert bot.tgi.bodies()[-1]["messages"][-1]["content"].startswith("Alice: Just talking among ourselves.\n")


async def test_messages_from_bots_are_ignored(bot):
    await bot.bind(ROLEPLAY)

    _, from_bot = await bot.say(ROLEPLAY, OTHER_BOT, "beep boop")
    _, from_itself = await bot.say(ROLEPLAY, BOT_ID, "an echo of myself")

    assert from_bot is None and from_itself is None
    assert bot.fake.posted(ROLEPLAY) == []


async def test_system_and_empty_messages_are_ignored(bot):
    await bot.bind(ROLEPLAY)

    _, pinned = await bot.say(ROLEPLAY, ALICE, "", type=6)  # "pinned a message"
    _, empty = await bot.say(ROLEPLAY, ALICE, "   ")

    assert pinned is None and empty is None
    assert bot.fake.posted(ROLEPLAY) == []


async def test_a_thread_inherits_its_parents_binding(bot):
    await bot.bind(ROLEPLAY)

    _, reply = await bot.say(THREAD, ALICE, "Let us talk apart from the others.")

    assert reply is not None and reply.status is ReplyStatus.ANSWERED
    assert len(bot.fake.posted(THREAD)) == 1
    assert bot.fake.posted(ROLEPLAY) == []
    assert reply.conversation is not None and reply.conversation.channel_id == str(THREAD)


async def test_a_dm_without_a_character_gets_a_hint_and_after_use_a_reply(bot):
    _, before = await bot.say(DM, ALICE, "Hello?")
    assert before is not None and before.status is ReplyStatus.NO_CHARACTER
    (hint,) = bot.fake.posted(DM)
    assert "/use" in hint.body["content"] and "Hamlet" in hint.body["content"]

    chosen = await bot.fake.slash("use", {"character": "hamlet"}, channel=DM)
    assert "You are now talking to Hamlet" in await bot.fake.answer_to(chosen)

    _, after = await bot.say(DM, ALICE, "Good evening, my lord.")
    assert after is not None and after.status is ReplyStatus.ANSWERED
    assert bot.fake.posted(DM)[-1].body["content"] == bot.tgi.reply


async def test_a_long_reply_continues_in_new_messages_of_at_most_2000_characters(bot):
    await bot.bind(ROLEPLAY)
    sentence = "The time is out of joint; O cursed spite, that ever I was born to set it right. "
    text = (sentence * 70)[:5000].strip()
    bot.tgi.script(reply=text, chunks=40)

    payload, reply = await bot.say(ROLEPLAY, ALICE, "Tell me everything.")

    assert reply is not None and reply.status is ReplyStatus.ANSWERED
    messages = bot.fake.bot_messages(ROLEPLAY)
    assert len(messages) == 3
    assert all(len(m["content"]) <= 2000 for m in messages)
    assert " ".join(m["content"] for m in messages).split() == text.split()
    posts = bot.fake.posted(ROLEPLAY)
    assert posts[0].body["message_reference"]["message_id"] == int(payload["id"])
    assert all("message_reference" not in p.body for p in posts[1:])
    assert [bool(m["components"]) for m in messages] == [False, False, True]  # the button under the last


async def test_one_message_is_edited_at_most_once_a_second_while_it_streams(bot):
    await bot.bind(ROLEPLAY)
    writes = record_writes(bot.client)
    bot.tgi.script(reply=LINE, token_delay=0.25)  # a token every 0.25 s for about 4 s

    await bot.say(ROLEPLAY, ALICE, "Speak slowly.")

    methods = [method for method, *_ in writes]
    assert methods[0] == "POST" and set(methods[1:]) == {"PATCH"}
    assert len({url for _, url, *_ in writes[1:]}) == 1  # one message, edited
    assert writes[-1][2] == LINE
    times = [at for *_, at in writes]
    assert len(times) >= 4, f"too few writes ({len(times)}) for the pacing to show"
    # The send and every edit while the reply streams are at least a second apart; only the
    # final edit (the whole text, once the stream ended) may follow sooner.
    gaps = [later - earlier for earlier, later in zip(times[:-1], times[1:-1])]
    assert min(gaps) >= 1.0 - 1e-3, [round(g, 3) for g in gaps]


async def test_a_reply_of_exactly_2000_characters_is_one_message(bot):
    await bot.bind(ROLEPLAY)
    text = sentences(2000)
    bot.tgi.script(reply=text, chunks=20)

    await bot.say(ROLEPLAY, ALICE, "All of it, in one.")

    assert [m["content"] for m in bot.fake.bot_messages(ROLEPLAY)] == [text]


async def test_a_reply_of_2001_characters_is_cut_at_the_last_boundary_within_2000(bot):
    await bot.bind(ROLEPLAY)
    text, head = just_over(2000)  # the sentence end's space is character 2,000: the cut is right there
    bot.tgi.script(reply=text, chunks=20)

    await bot.say(ROLEPLAY, ALICE, "All of it, and one more.")

    assert [m["content"] for m in bot.fake.bot_messages(ROLEPLAY)] == [head, "I"]


async def test_sends_and_edits_never_exceed_five_per_five_seconds_each_in_a_channel(bot):
    """Discord counts a channel's message sends and its edits in two buckets of 5 per 5 s: the
    adapter keeps to each (client side, before discord.py's own rate limiting)."""
    await bot.bind(ROLEPLAY)
    recorded = record_writes(bot.client)
    bot.tgi.script(reply=LINE, token_delay=0.12)  # each reply streams for about 2 s

    await asyncio.gather(*(bot.say(ROLEPLAY, who, f"Question {i}") for i, who in enumerate((ALICE, BOB, OWNER, ALICE, BOB, OWNER))))

    for method in ("POST", "PATCH"):
        # When the adapter made each write (client side), not when the fake received it.
        writes = sorted(at for m, url, _, at in recorded if m == method and f"/channels/{ROLEPLAY}/messages" in url)
        for i, start in enumerate(writes):
            in_window = [t for t in writes[i:] if t < start + 5.0 - 1e-3]
            assert len(in_window) <= 5, f"{len(in_window)} {method}s within 5 s starting at {method} {i}"
    assert len([m for m, url, *_ in recorded if m == "POST" and f"/channels/{ROLEPLAY}/messages" in url]) == 6  # past the budget: one had to wait
    assert sorted(m["content"] for m in bot.fake.bot_messages(ROLEPLAY)) == [LINE] * 6


async def test_a_busy_channel_answers_each_reply_in_one_write_with_its_button(bot):
    """Sends are spent (5 per 5 s): the replies that wait for their turn are complete by then and go
    out whole, button included, in one write each (never a stale first chunk, then the rest)."""
    await bot.bind(ROLEPLAY)
    recorded = record_writes(bot.client)
    bot.tgi.script(reply=LINE, chunks=4, token_delay=0.02)

    await asyncio.gather(*(bot.say(ROLEPLAY, who, f"Question {i}") for i, who in enumerate((ALICE, BOB, OWNER) * 3)))

    posts = [content for m, url, content, _ in recorded if m == "POST" and f"/channels/{ROLEPLAY}/messages" in url]
    assert len(posts) == 9
    late = posts[5:]  # these waited for the channel's send budget
    assert late == [LINE] * 4, late
    messages = bot.fake.bot_messages(ROLEPLAY)
    waited = [m for m in messages if m["content"] == LINE and not m["edited_timestamp"]]
    assert len(waited) >= 4 and all(m["components"] for m in waited)  # one write: text and button together


async def test_the_same_message_delivered_twice_is_answered_once(bot):
    await bot.bind(ROLEPLAY)

    payload, first = await bot.say(ROLEPLAY, ALICE, "Once, only once.")
    again = await bot.deliver(payload)

    assert first is not None and first.status is ReplyStatus.ANSWERED
    assert again is not None and again.status is ReplyStatus.DUPLICATE
    assert len(bot.fake.posted(ROLEPLAY)) == 1


async def test_a_rate_limited_edit_is_retried_and_the_whole_reply_arrives(bot):
    await bot.bind(ROLEPLAY)
    bot.tgi.script(reply=LINE, token_delay=0.08)
    bot.fake.fail("PATCH", rf"/channels/{ROLEPLAY}/messages/\d+", retry_after=0.3)

    await bot.say(ROLEPLAY, ALICE, "Slowly now.")

    assert bot.fake.faults[0].times == 0, "the 429 was served"
    (shown,) = bot.fake.bot_messages(ROLEPLAY)
    assert shown["content"] == LINE


async def test_the_model_server_down_gives_a_short_notice(bot):
    await bot.bind(ROLEPLAY)
    bot.tgi.fail("503", times=10)

    _, reply = await bot.say(ROLEPLAY, ALICE, "Are you there?")

    assert reply is not None and reply.status is ReplyStatus.FAILED
    (shown,) = bot.fake.bot_messages(ROLEPLAY)
    assert shown["content"] == NOTICE_UNAVAILABLE
    assert shown["components"] == []  # nothing stored, nothing to regenerate
    assert bot.client.is_ready() and not bot.client.is_closed()


async def test_attachments_are_not_read_and_the_reply_says_so_once(bot):
    await bot.bind(ROLEPLAY)
    picture = {"id": "1", "filename": "map.png", "size": 10, "url": bot.fake.add_file("map.png", b"x"), "proxy_url": "x"}

    await bot.say(ROLEPLAY, ALICE, "Look at this map.", attachments=[picture])
    await bot.say(ROLEPLAY, ALICE, "And this one.", attachments=[picture])

    first, second = sorted(bot.fake.bot_messages(ROLEPLAY), key=lambda m: int(m["id"]))
    assert first["content"] == bot.tgi.reply + ATTACHMENT_NOTE
    assert second["content"] == bot.tgi.reply
    assert bot.fake.downloads == []


async def test_a_failing_handler_is_logged_and_the_client_keeps_running(bot, discord_logs, monkeypatch):
    await bot.bind(ROLEPLAY)

    async def broken(*args, **kwargs):
        raise RuntimeError("the database fell over")

    monkeypatch.setattr(bot.app.engine, "binding_for", broken)
    _, reply = await bot.say(ROLEPLAY, ALICE, "Hello?")
    monkeypatch.undo()
    _, after = await bot.say(ROLEPLAY, ALICE, "Hello again?")

    assert "failed to answer message" in discord_logs.text
    assert after is not None and after.status is ReplyStatus.ANSWERED


async def test_first_contact_shows_the_characters_greeting_before_the_reply(bot):
    character = await bot.app.store.characters.get_by_name("Hamlet")
    from core.cards import edit_card

    await bot.app.store.characters.replace(character.id, edit_card(character.card, {"greeting": "(starts) Who's there, {{user}}?"}))
    bot.app.engine.hot.forget_character(character.id)
    await bot.bind(ROLEPLAY)
    bot.tgi.script(reply=LINE)

    await bot.say(ROLEPLAY, ALICE, "Only a friend.")
    await bot.say(ROLEPLAY, ALICE, "May I sit?")

    posts = bot.fake.posted(ROLEPLAY)
    # The greeting rides in the reply's first message (one write, counted against the channel's budget).
    assert posts[0].body["content"].startswith("(starts) Who's there, ")
    assert posts[0].body["message_reference"]["message_id"]
    assert posts[0].body["allowed_mentions"]["parse"] == []
    assert len(posts) == 2  # one message per reply, the greeting in the first
    first = bot.fake.bot_messages(ROLEPLAY)[0]
    assert first["content"].startswith("(starts) Who's there, ") and first["content"].endswith(LINE)
    assert "Who's there" not in bot.fake.bot_messages(ROLEPLAY)[1]["content"]
