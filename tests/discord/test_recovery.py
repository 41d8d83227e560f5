"""What a crash left behind on Discord: a pending message is answered at start-up, a half-shown reply completed or marked."""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa

from core.engine import NOTICE_INTERRUPTED
from core.events import ConversationKey, Platform, character_user
from storage.tables import messages
from tests.discord.conftest import CHARACTER, add_character, bind, build_app, discord_settings, start_bot, stop_bot
from bots.fakes.discord import ALICE, BOT_ID, ROLEPLAY


async def left_pending(
    store, cache, fake, tgi, *, half_shown: str | None = None, webhook: bool = False
) -> tuple[dict, int | None]:
    """What a process killed mid-reply leaves: the message stored as pending, maybe a reply half-shown."""
    app = build_app(store, cache, discord_settings(fake, tgi))
    await add_character(store)
    await bind(app, ROLEPLAY)
    await app.model.close()
    payload = fake.message_payload(ROLEPLAY, ALICE, "Who goes there?")
    fake.messages[int(payload["id"])] = payload
    character = await store.characters.get_by_name(CHARACTER)
    conversation = ConversationKey(character.id, Platform.DISCORD, str(ROLEPLAY), str(ALICE))
    # Owned by the dead process's replica, as the engine stores it: with Redis, a message of an owner
    # whose liveness lease is gone is answered at start-up; one of no owner only once it is old.
    intake = await store.messages.accept(conversation, payload["content"], 4, payload["id"], "Alice", owner=app.replica)
    partial_id = None
    if half_shown is not None:
        if webhook:  # shown through the channel's webhook, under the character's name
            partial = fake.webhook_says(fake.add_webhook(ROLEPLAY), half_shown, CHARACTER)
        else:
            partial = fake._create(ROLEPLAY, {"content": half_shown}, author=BOT_ID)
        partial_id = int(partial["id"])
        await app.engine.showing(intake, str(partial_id))
    return payload, partial_id


async def test_a_message_left_pending_is_answered_in_reply_to_it_at_start_up(store, cache, fake, tgi) -> None:
    payload, _ = await left_pending(store, cache, fake, tgi)
    app = build_app(store, cache, discord_settings(fake, tgi))
    bot, task = await start_bot(app, fake, tgi)
    try:
        await fake.wait_for(lambda: any(m["content"] == tgi.reply for m in fake.bot_messages(ROLEPLAY)), what="the answer")
        (shown,) = fake.bot_messages(ROLEPLAY)
        assert str(shown["message_reference"]["message_id"]) == payload["id"]
        await bot.deliver(payload)  # the gateway sends it again after the restart
        assert len(fake.bot_messages(ROLEPLAY)) == 1
    finally:
        await stop_bot(app, task)
    assert tgi.count("/v1/chat/completions") == 1


async def test_a_half_shown_reply_is_completed_in_place(store, cache, fake, tgi) -> None:
    _, partial_id = await left_pending(store, cache, fake, tgi, half_shown="(bows) Good morrow, friend; th")
    app = build_app(store, cache, discord_settings(fake, tgi))
    _, task = await start_bot(app, fake, tgi)
    try:
        await fake.wait_for(lambda: fake.messages[partial_id]["content"] == tgi.reply, what="the completed reply")
        assert [m["id"] for m in fake.bot_messages(ROLEPLAY)] == [str(partial_id)]
    finally:
        await stop_bot(app, task)


async def test_a_half_shown_reply_too_old_to_answer_is_marked_interrupted(store, cache, fake, tgi) -> None:
    _, partial_id = await left_pending(store, cache, fake, tgi, half_shown="(bows) Good morrow, friend; th")
    async with store.engine.begin() as conn:
        await conn.execute(sa.update(messages).values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)))
    app = build_app(store, cache, discord_settings(fake, tgi))
    _, task = await start_bot(app, fake, tgi)
    try:
        expected = "(bows) Good morrow, friend; th" + NOTICE_INTERRUPTED
        await fake.wait_for(lambda: fake.messages[partial_id]["content"] == expected, what="the mark")
        assert len(fake.bot_messages(ROLEPLAY)) == 1
    finally:
        await stop_bot(app, task)
    assert tgi.count("/v1/chat/completions") == 0



async def test_a_half_shown_webhook_reply_is_completed_through_the_webhook(store, cache, fake, tgi) -> None:
    _, partial_id = await left_pending(store, cache, fake, tgi, half_shown="(bows) Good morrow, friend; th", webhook=True)
    app = build_app(store, cache, discord_settings(fake, tgi, discord_webhooks=True))
    _, task = await start_bot(app, fake, tgi)
    try:
        await fake.wait_for(
            lambda: fake.messages[partial_id]["content"] == tgi.reply and fake.messages[partial_id]["components"],
            what="the completed reply with its button",
        )
        assert fake.bot_messages(ROLEPLAY) == [] and fake.edits(ROLEPLAY) == []  # all through the webhook
        assert [m["id"] for m in fake.webhook_messages(ROLEPLAY)] == [str(partial_id)]
    finally:
        await stop_bot(app, task)


async def test_a_characters_answer_to_another_left_pending_is_answered_in_reply_to_that_line_without_a_button(
    store, cache, fake, tgi, caplog
) -> None:
    """Trigger conversation: a character's answer to another character's line (stored as a message of
    user ``character:ID`` with the platform message of that line) that a crash left pending is answered
    at start-up in reply to the line, with no Regenerate button: no person may regenerate it."""
    app = build_app(store, cache, discord_settings(fake, tgi))
    await add_character(store)
    await bind(app, ROLEPLAY, trigger="conversation")
    await app.model.close()
    line = fake._create(ROLEPLAY, {"content": "Hamlet, what say you?"}, author=BOT_ID)
    character = await store.characters.get_by_name(CHARACTER)
    conversation = ConversationKey(character.id, Platform.DISCORD, str(ROLEPLAY), character_user(character.id + 1000))
    await store.messages.accept(conversation, line["content"], 4, line["id"], "Ophelia", owner=app.replica)
    caplog.set_level(logging.INFO, logger="bots.recovering")
    app = build_app(store, cache, discord_settings(fake, tgi))
    _, task = await start_bot(app, fake, tgi)
    try:
        # Logged once the delivery ended (its last write done).
        await fake.wait_for(lambda: any("left pending" in r.getMessage() for r in caplog.records), what="the delivery")
        (answer,) = [m for m in fake.bot_messages(ROLEPLAY) if m["content"] == tgi.reply]
        assert str(answer["message_reference"]["message_id"]) == line["id"]
        assert answer["components"] == []
        assert not fake.requests("PATCH", rf"/channels/{ROLEPLAY}/messages/{answer['id']}")
    finally:
        await stop_bot(app, task)
