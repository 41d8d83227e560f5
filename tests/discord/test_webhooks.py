"""Characters speak through a channel webhook under their own name and avatar; the bot where it must.

Also: other bots' and proxies' messages (PluralKit, Tupperbox): a proxied message is answered once,
as its author's, and the original the proxy deletes is not answered.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

import pytest

from bots.discord.chat import GONE
from core.engine import ReplyStatus
from tests.discord.conftest import (
    CHARACTER, Bot, build_app, discord_settings, start_bot, stop_bot,
)
from bots.fakes.discord import ALICE, BOB, DM, GUILD_ID, LOBBY, OTHER_BOT, ROLEPLAY, THREAD, FakeDiscord, RateLimits
from tests.discord.test_regenerate import press

AVATAR = b"\x89PNG\r\n\x1a\n" + b"hamlet's face" * 10
FIRST = "To be, or not to be: that is the question."
SECOND = "Whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune."


@pytest.fixture
async def hooked(store: Any, cache: Any, fake: FakeDiscord, tgi: Any) -> AsyncIterator[Bot]:
    """A bot with webhooks on, avatars uploaded to LOBBY, and Hamlet (with an avatar) bound in ROLEPLAY."""
    from core.cards import new_card

    app = build_app(store, cache, discord_settings(fake, tgi, discord_webhooks=True, discord_avatar_channel=LOBBY))
    card = new_card(
        name=CHARACTER, world="8th Century Danish Royalty", traits=["extreme", "strong", "decisive"], mbti="ENFJ",
        style=["indecisive", "decisive", "sentimental"], scene="Elsinore at night.", greeting="",
    )
    await store.characters.add(card, AVATAR, "png")
    running, task = await start_bot(app, fake, tgi)
    await running.bind(ROLEPLAY)
    yield running
    await stop_bot(app, task)


async def test_webhook_writes_take_the_channels_budget_and_bucket(store, cache, fake, tgi, caplog):
    """A webhook's writes count against the channel's writes, in the client's room and in the fake's
    buckets: with one send a minute, a second message would wait past PERSONAE_DELIVERY_MAX_WAIT_S
    for its reply's first text, so it is dropped and logged, and Discord never answered 429."""
    from core.cards import new_card

    caplog.set_level(logging.WARNING, logger="bots.discord.client")
    fake.limits = RateLimits(per_channel=1, window_s=60.0)
    app = build_app(store, cache, discord_settings(
        fake, tgi, discord_webhooks=True, discord_channel_writes=1, discord_channel_window_s=60.0, delivery_max_wait_s=5.0,
    ))
    card = new_card(
        name=CHARACTER, world="8th Century Danish Royalty", traits=["extreme"], mbti="ENFJ", style=["decisive"],
        scene="Elsinore at night.", greeting="",
    )
    await store.characters.add(card)
    running, task = await start_bot(app, fake, tgi)
    try:
        await running.bind(ROLEPLAY)
        tgi.script(reply=FIRST)
        _, first = await running.say(ROLEPLAY, ALICE, "Who goes there?")
        assert first is not None and first.status is ReplyStatus.ANSWERED
        payload, second = await running.say(ROLEPLAY, BOB, "And who are you?")

        assert second is None  # never handed to the engine
        (shown,) = fake.webhook_messages(ROLEPLAY)
        assert shown["content"] == FIRST and fake.bot_messages(ROLEPLAY) == []
        assert fake.limits._windows[("POST", ROLEPLAY)][1] == 1  # the webhook's send, in the channel's bucket
        assert fake.limits.refused == 0
        (line,) = [r.getMessage() for r in caplog.records if "dropped message" in r.getMessage()]
        assert payload["id"] in line
    finally:
        await stop_bot(app, task)


def channel_webhook_calls(fake: FakeDiscord, method: str) -> list[Any]:
    return fake.requests(method, rf"/channels/\d+/webhooks")


async def test_a_reply_comes_through_the_channel_webhook_with_the_characters_name_and_avatar(hooked):
    fake = hooked.fake
    sentence = "The time is out of joint; O cursed spite, that ever I was born to set it right. "
    hooked.tgi.script(reply=(sentence * 4).strip(), chunks=16, token_delay=0.12)  # about 2 s: a send, then edits

    _, reply = await hooked.say(ROLEPLAY, ALICE, "What troubles you?")

    assert reply is not None and reply.status is ReplyStatus.ANSWERED
    assert fake.bot_messages(ROLEPLAY) == [] and fake.posted(ROLEPLAY) == []
    (shown,) = fake.webhook_messages(ROLEPLAY)
    assert shown["author"]["username"] == CHARACTER
    assert shown["content"] == reply.text
    (upload,) = fake.posted(LOBBY)  # the avatar, uploaded once as an attachment
    (avatar_file,) = upload.files.values()
    assert avatar_file == AVATAR
    link = fake.bot_messages(LOBBY)[0]["attachments"][0]["url"]
    (post,) = fake.webhook_posts(ROLEPLAY)
    assert post.body["username"] == CHARACTER and post.body["avatar_url"] == link
    assert post.query["wait"] in ("1", "true")
    # It streamed: the first words, then edits through the webhook's route, the last with the button.
    edits = fake.requests("PATCH", rf"/webhooks/{shown['webhook_id']}/[^/]+/messages/{shown['id']}")
    assert edits and len(post.body["content"]) < len(reply.text)
    (row,) = shown["components"]
    assert row["components"][0]["label"] == "Regenerate"

    # The next reply reuses the webhook and the avatar's link.
    hooked.tgi.script(reply=FIRST)
    await hooked.say(ROLEPLAY, BOB, "And you, my lord?")
    assert len(fake.webhook_posts(ROLEPLAY)) == 2 and fake.webhook_posts(ROLEPLAY)[1].body["avatar_url"] == link
    assert len(channel_webhook_calls(fake, "POST")) == 1 and len(channel_webhook_calls(fake, "GET")) == 1
    assert len(fake.posted(LOBBY)) == 1


async def test_a_webhook_reply_can_be_regenerated_and_its_button_moves(hooked):
    fake = hooked.fake
    hooked.tgi.script(reply=FIRST)
    await hooked.say(ROLEPLAY, ALICE, "What troubles you?")
    (shown,) = fake.webhook_messages(ROLEPLAY)
    hooked.tgi.script(reply=SECOND)

    sent, reply = await press(hooked, int(shown["id"]), ALICE)

    assert reply.status is ReplyStatus.ANSWERED
    now = fake.messages[int(shown["id"])]
    assert now["content"] == SECOND and now["components"] == shown["components"]
    assert fake.edits(ROLEPLAY) == []  # never through the channel's route: the bot cannot edit the webhook's message
    stored = await hooked.app.store.messages.recent(reply.conversation, 2)
    assert stored[-1].content == SECOND

    # The next reply gets the button; the old message keeps its own (no write spent on it)...
    hooked.tgi.script(reply=FIRST)
    await hooked.say(ROLEPLAY, ALICE, "And then?")
    newer = max(fake.webhook_messages(ROLEPLAY), key=lambda m: int(m["id"]))
    assert newer["components"] and fake.messages[int(shown["id"])]["components"]

    # ...pressed, it says only the newest reply can be regenerated, and loses it, through the webhook.
    sent, reply = await press(hooked, int(shown["id"]), ALICE)
    assert reply.status is ReplyStatus.NOT_FOUND
    assert fake.answer_text(sent) == GONE
    assert fake.messages[int(shown["id"])]["content"] == SECOND
    assert fake.messages[int(shown["id"])]["components"] == []
    assert fake.edits(ROLEPLAY) == []


async def test_a_reply_to_the_characters_webhook_message_addresses_it(hooked):
    await hooked.bind(ROLEPLAY, trigger="mention")
    hooked.tgi.script(reply=FIRST)
    await hooked.say(ROLEPLAY, ALICE, "Anyone there?", mentions=[])  # not addressed (no mention, no name): no reply
    assert hooked.tgi.count("/v1/chat/completions") == 0
    _, reply = await hooked.say(ROLEPLAY, ALICE, "@personae speak", mentions=[hooked.client.user.id])
    assert reply.status is ReplyStatus.ANSWERED
    (shown,) = hooked.fake.webhook_messages(ROLEPLAY)

    _, answered = await hooked.say(ROLEPLAY, ALICE, "Why so?", reply_to=int(shown["id"]))

    assert answered is not None and answered.status is ReplyStatus.ANSWERED


async def test_a_thread_reply_goes_through_the_parent_channels_webhook(hooked):
    hooked.tgi.script(reply=FIRST)
    _, reply = await hooked.say(THREAD, ALICE, "A word, in private?")
    assert reply.status is ReplyStatus.ANSWERED
    (shown,) = hooked.fake.webhook_messages(THREAD)
    assert shown["author"]["username"] == CHARACTER and shown["content"] == FIRST
    (post,) = hooked.fake.webhook_posts(THREAD)
    assert post.query["thread_id"] == str(THREAD)
    assert hooked.fake.requests("POST", rf"/channels/{ROLEPLAY}/webhooks")  # the parent's webhook


async def test_in_a_dm_the_bot_speaks_itself(hooked):
    chosen = await hooked.fake.slash("use", {"character": "hamlet"}, channel=DM)
    await hooked.fake.answer_to(chosen)
    hooked.tgi.script(reply=FIRST)

    _, reply = await hooked.say(DM, ALICE, "Good evening, my lord.")

    assert reply.status is ReplyStatus.ANSWERED
    assert hooked.fake.posted(DM)[-1].body["content"] == FIRST
    assert hooked.fake.webhook_posts() == [] and channel_webhook_calls(hooked.fake, "GET") == []


async def test_without_the_manage_webhooks_permission_the_bot_speaks_itself_after_one_log_line(hooked, caplog):
    caplog.set_level(logging.INFO)
    hooked.fake.refuse_webhooks = True
    hooked.tgi.script(reply=FIRST)

    _, reply = await hooked.say(ROLEPLAY, ALICE, "What troubles you?")
    await hooked.say(ROLEPLAY, BOB, "And you?")

    assert reply.status is ReplyStatus.ANSWERED
    assert [m["content"] for m in hooked.fake.bot_messages(ROLEPLAY)] == [FIRST, FIRST]
    assert hooked.fake.bot_messages(ROLEPLAY)[-1]["components"]  # the Regenerate button as always
    told = [r for r in caplog.records if "no webhook in channel" in r.getMessage()]
    assert len(told) == 1 and "Manage Webhooks" in told[0].getMessage() and told[0].exc_info is None
    assert len(channel_webhook_calls(hooked.fake, "GET")) == 1  # not asked again for every reply


async def test_webhooks_off_the_bot_speaks_itself(store, cache, fake, tgi):
    from tests.discord.conftest import add_character

    app = build_app(store, cache, discord_settings(fake, tgi, discord_webhooks=False))
    await add_character(store)
    bot, task = await start_bot(app, fake, tgi)
    try:
        await bot.bind(ROLEPLAY)
        tgi.script(reply=FIRST)
        await bot.say(ROLEPLAY, ALICE, "Speak.")
        assert [m["content"] for m in fake.bot_messages(ROLEPLAY)] == [FIRST]
        assert channel_webhook_calls(fake, "GET") == [] and fake.webhook_posts() == []
    finally:
        await stop_bot(app, task)


async def test_a_deleted_webhook_is_made_again(hooked, caplog):
    caplog.set_level(logging.INFO)
    hooked.tgi.script(reply=FIRST)
    await hooked.say(ROLEPLAY, ALICE, "What troubles you?")
    (first_hook,) = hooked.fake.webhooks
    hooked.fake.delete_webhook(first_hook)

    _, reply = await hooked.say(ROLEPLAY, ALICE, "Speak again.")

    assert reply.status is ReplyStatus.ANSWERED
    (second_hook,) = hooked.fake.webhooks
    assert second_hook != first_hook
    newest = max(hooked.fake.webhook_messages(ROLEPLAY), key=lambda m: int(m["id"]))
    assert newest["webhook_id"] == str(second_hook) and newest["content"] == FIRST
    assert hooked.fake.bot_messages(ROLEPLAY) == []
    assert not [r for r in caplog.records if r.exc_info]


async def test_other_bots_are_ignored(hooked):
    hooked.tgi.script(reply=FIRST)
    _, reply = await hooked.say(ROLEPLAY, OTHER_BOT, "Beep.")
    assert reply is None and hooked.tgi.count("/v1/chat/completions") == 0


def expect(bot: Bot, *payloads: dict[str, Any]) -> Any:
    """Start waiting (now, before the messages go out) until the bot is done with each message:
    answered, discarded or ignored. Await the result for their replies by id."""
    waits = [
        bot.client.wait_for("turn_finished", check=lambda m, _, i=int(p["id"]): m.id == i, timeout=30) for p in payloads
    ]

    async def gather() -> dict[int, Any]:
        return {message.id: reply for message, reply in await asyncio.gather(*waits)}

    return gather()


async def say(bot: Bot, payload: dict[str, Any]) -> None:
    bot.fake.messages[int(payload["id"])] = payload
    await bot.fake.dispatch("MESSAGE_CREATE", payload)


async def test_a_proxied_message_is_answered_once_as_its_authors_and_the_deleted_original_never(hooked):
    fake = hooked.fake
    hooked.tgi.script(reply=FIRST)

    # The server's first proxied message: its original is answered before the copy comes; the
    # copy is not answered again, and the proxy deleting the original takes nothing back.
    original = fake.message_payload(ROLEPLAY, ALICE, "o: Good evening, my lord.")
    done = expect(hooked, original)
    await say(hooked, original)
    replies = await done
    copy_done = hooked.client.wait_for("turn_finished", check=lambda m, _: m.webhook_id is not None, timeout=30)
    copy = await fake.proxy(original, "Ophelia", "Good evening, my lord.")
    message, copy_reply = await copy_done
    assert message.id == int(copy["id"]) and copy_reply is None
    assert replies[int(original["id"])].status is ReplyStatus.ANSWERED
    assert hooked.tgi.count("/v1/chat/completions") == 1

    # Now the server is known to have a proxy: the next original waits, its copy is answered, as
    # Alice's (her conversation, her button), under the persona's name, and the original never.
    second = fake.message_payload(ROLEPLAY, ALICE, "o: Are you well?")
    done = expect(hooked, second)
    copy_done = hooked.client.wait_for("turn_finished", check=lambda m, _: m.webhook_id is not None, timeout=30)
    await say(hooked, second)
    copy2 = await fake.proxy(second, "Ophelia", "Are you well?")
    replies = await done
    message, answered = await copy_done
    assert message.id == int(copy2["id"])
    assert replies[int(second["id"])] is None
    assert answered.status is ReplyStatus.ANSWERED and answered.conversation.user_id == str(ALICE)
    assert hooked.tgi.count("/v1/chat/completions") == 2
    prompt = str(hooked.tgi.bodies()[-1])
    assert "Are you well?" in prompt and "o: Are you well?" not in prompt and "Ophelia" in prompt
    stored = await hooked.app.store.messages.recent(answered.conversation, 10)
    assert "o: Are you well?" not in [m.content for m in stored]
    pending = [t async for t in hooked.app.engine.recover("discord")]
    assert pending == []  # the discarded original is settled: no restart answers it

    # A held original deleted (by the proxy, or anyone) before it is answered is never answered.
    third = fake.message_payload(ROLEPLAY, ALICE, "o: Farewell.")
    done = expect(hooked, third)
    await say(hooked, third)
    await fake.delete_message(third)
    assert (await done)[int(third["id"])] is None
    assert hooked.tgi.count("/v1/chat/completions") == 2

    # A message no proxy takes is answered once the wait is over.
    hooked.client.proxies.wait_s = 0.05
    _, plain = await hooked.say(ROLEPLAY, BOB, "Is anyone there?")
    assert plain.status is ReplyStatus.ANSWERED and hooked.tgi.count("/v1/chat/completions") == 3


async def test_a_webhook_message_that_copies_nobody_is_ignored(hooked):
    hooked.tgi.script(reply=FIRST)
    stray = {"id": str(hooked.fake.next_id()), "channel_id": str(ROLEPLAY), "guild_id": str(GUILD_ID)}
    waiter = hooked.client.wait_for("turn_finished", check=lambda m, _: m.webhook_id is not None, timeout=30)
    feed = 900000000000000777  # a news feed's application: not a proxy
    copy = await hooked.fake.proxy(
        {**hooked.fake.message_payload(ROLEPLAY, ALICE, "unrelated"), **stray}, "Newsbot", "Release 1.2 is out",
        delete=False, application=feed,
    )
    assert copy["webhook_id"]
    message, reply = await waiter
    assert message.id == int(copy["id"]) and reply is None and hooked.tgi.count("/v1/chat/completions") == 0
    assert not hooked.client.proxies.has_proxy(GUILD_ID)  # people's messages there are not held for it


async def test_a_webhook_deleted_while_a_reply_streams_the_rest_comes_as_a_new_message(hooked, caplog):
    caplog.set_level(logging.INFO)
    fake = hooked.fake
    sentence = "The time is out of joint; O cursed spite, that ever I was born to set it right. "
    hooked.tgi.script(reply=(sentence * 4).strip(), chunks=16, token_delay=0.12)
    payload = fake.message_payload(ROLEPLAY, ALICE, "What troubles you?")
    turn = asyncio.create_task(hooked.deliver(payload))
    await fake.wait_for(lambda: fake.webhook_posts(ROLEPLAY), what="the first words")
    (first_hook,) = fake.webhooks
    fake.delete_webhook(first_hook)

    reply = await turn

    assert reply.status is ReplyStatus.ANSWERED
    (second_hook,) = fake.webhooks
    (now,) = fake.webhook_messages(ROLEPLAY)  # the new webhook's message (the old one's is not counted)
    assert now["webhook_id"] == str(second_hook) and now["content"] == reply.text and now["components"]
    assert not [r for r in caplog.records if r.exc_info]


async def test_deleting_a_webhook_reply_in_discord_takes_it_back(hooked):
    hooked.tgi.script(reply=FIRST)
    _, reply = await hooked.say(ROLEPLAY, ALICE, "Speak.")
    (shown,) = hooked.fake.webhook_messages(ROLEPLAY)

    taken_back = hooked.client.wait_for("reply_deleted", timeout=10)
    await hooked.fake.delete_message(shown)
    await taken_back

    assert await hooked.app.store.messages.recent(reply.conversation, 10) == []


async def test_an_avatar_link_is_renewed_before_it_expires_and_when_the_avatar_changes(hooked):
    import time

    fake, links = hooked.fake, hooked.client.avatars
    hooked.tgi.script(reply=FIRST)
    await hooked.say(ROLEPLAY, ALICE, "Speak.")
    await hooked.say(ROLEPLAY, ALICE, "Again.")
    assert len(fake.posted(LOBBY)) == 1  # uploaded once, then reused

    links.clock = lambda: time.time() + 86400  # a day later: past the link's expiry (less an hour)
    await hooked.say(ROLEPLAY, ALICE, "A day later.")
    assert len(fake.posted(LOBBY)) == 2
    newest = fake.bot_messages(LOBBY)[-1]["attachments"][0]["url"]
    assert fake.webhook_posts(ROLEPLAY)[-1].body["avatar_url"] == newest

    character = await hooked.app.store.characters.get_by_name(CHARACTER)
    await hooked.app.store.characters.replace(character.id, character.card, b"\x89PNG\r\n\x1a\nnew face", "png")
    links.clock = lambda: time.time() + 86400 + 2 * 3600  # past the hourly check
    await hooked.say(ROLEPLAY, ALICE, "You look different.")
    assert len(fake.posted(LOBBY)) == 3
    assert list(fake.posted(LOBBY)[-1].files.values()) == [b"\x89PNG\r\n\x1a\nnew face"]


async def test_a_webhook_message_refused_alone_comes_from_the_bot_and_the_channel_keeps_its_webhook(hooked, caplog):
    caplog.set_level(logging.INFO)
    hooked.tgi.script(reply=FIRST)
    hooked.fake.fail("POST", r"/webhooks/\d+/whtoken-\d+", status=400, via=False, times=1)

    _, refused = await hooked.say(ROLEPLAY, ALICE, "Speak.")
    _, later = await hooked.say(ROLEPLAY, ALICE, "Again.")

    assert refused.status is ReplyStatus.ANSWERED and later.status is ReplyStatus.ANSWERED
    assert [m["content"] for m in hooked.fake.bot_messages(ROLEPLAY)] == [FIRST]
    assert [m["content"] for m in hooked.fake.webhook_messages(ROLEPLAY)] == [FIRST]
    told = [r for r in caplog.records if "Discord refused a webhook message" in r.getMessage()]
    assert len(told) == 1 and told[0].exc_info is None


def test_webhook_names_avoid_what_discord_refuses():
    from bots.discord.faces import webhook_name

    assert webhook_name("Hamlet") == "Hamlet"
    assert "discord" not in webhook_name("Discordia").lower() and webhook_name("Discordia").replace("\u200b", "") == "Discordia"
    assert "clyde" not in webhook_name("Clyde").lower()
    assert len(webhook_name("x" * 100)) == 80


async def test_the_greeting_on_first_contact_comes_through_the_webhook_too(hooked):
    from core.cards import new_card
    from bots.fakes.discord import TAVERN

    card = new_card(
        name="Ophelia", world="8th Century Danish Royalty", traits=["gentle"], mbti="INFP", style=["soft"],
        scene="A garden.", greeting="(curtsies) Good my lord, how does your honour for this many a day?",
    )
    await hooked.app.store.characters.add(card)
    await hooked.bind(TAVERN, character="Ophelia")
    hooked.tgi.script(reply=FIRST)

    await hooked.say(TAVERN, ALICE, "Fair lady.")

    shown = sorted(hooked.fake.webhook_messages(TAVERN), key=lambda m: int(m["id"]))
    # The greeting opens the reply's own message.
    assert [m["content"] for m in shown] == [card["data"]["first_mes"] + "\n\n" + FIRST]
    assert {m["author"]["username"] for m in shown} == {"Ophelia"}
    assert [c.body.get("avatar_url") for c in hooked.fake.webhook_posts(TAVERN)] == [None]  # no avatar: no link
    assert hooked.fake.bot_messages(TAVERN) == []


async def test_regenerating_a_message_of_a_deleted_webhook_writes_a_new_message(hooked, caplog):
    caplog.set_level(logging.INFO)
    hooked.tgi.script(reply=FIRST)
    await hooked.say(ROLEPLAY, ALICE, "What troubles you?")
    (shown,) = hooked.fake.webhook_messages(ROLEPLAY)
    hooked.fake.delete_webhook(int(shown["webhook_id"]))
    hooked.tgi.script(reply=SECOND)

    _, reply = await press(hooked, int(shown["id"]), ALICE)

    assert reply.status is ReplyStatus.ANSWERED
    (now,) = hooked.fake.webhook_messages(ROLEPLAY)  # through a new webhook
    assert now["content"] == SECOND and now["components"] and now["id"] != shown["id"]
    assert not [r for r in caplog.records if r.exc_info]


async def test_after_a_restart_regenerating_a_message_of_a_deleted_webhook_writes_a_new_message(hooked, caplog):
    from bots.discord.faces import Webhooks

    caplog.set_level(logging.INFO)
    hooked.tgi.script(reply=FIRST)
    await hooked.say(ROLEPLAY, ALICE, "What troubles you?")
    (shown,) = hooked.fake.webhook_messages(ROLEPLAY)
    hooked.fake.delete_webhook(int(shown["webhook_id"]))
    # What a new process knows: no webhook, no earlier reply.
    hooked.client.webhooks = Webhooks(hooked.client)
    hooked.client._offers.clear()
    hooked.tgi.script(reply=SECOND)

    _, reply = await press(hooked, int(shown["id"]), ALICE)

    assert reply.status is ReplyStatus.ANSWERED
    (now,) = hooked.fake.webhook_messages(ROLEPLAY)
    assert now["content"] == SECOND and now["components"] and now["id"] != shown["id"]
    assert hooked.fake.messages[int(shown["id"])]["content"] == FIRST  # nobody can edit it now
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_notice_that_the_model_server_is_down_comes_from_the_bot(hooked):
    from core.engine import NOTICE_UNAVAILABLE

    hooked.tgi.fail("503", times=10)

    _, reply = await hooked.say(ROLEPLAY, ALICE, "Speak.")

    assert reply.status is ReplyStatus.FAILED
    assert [m["content"] for m in hooked.fake.bot_messages(ROLEPLAY)] == [NOTICE_UNAVAILABLE]
    assert hooked.fake.webhook_posts() == []
