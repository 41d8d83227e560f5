"""A message is stored before Telegram is told it arrived, and what a crash left pending is answered once."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
import sqlalchemy as sa

from core.commands import Actor, Place
from core.events import ConversationKey
from storage.tables import messages
from tests.telegram.conftest import Harness, running_bot
from bots.fakes.telegram import FakeTelegram
from tests.telegram.test_delivery import free_port


def _private(user: dict):
    uid = str(user["id"])
    return Actor("telegram", uid, user["first_name"]), Place("telegram", uid, uid, private=True)


async def stored_status(store, chat_id: int, message_id: int) -> str | None:
    async with store.engine.connect() as conn:
        return (
            await conn.execute(
                sa.select(messages.c.status).where(
                    messages.c.channel_id == str(chat_id), messages.c.platform_message_id == str(message_id)
                )
            )
        ).scalar()


async def test_a_message_is_stored_before_the_next_get_updates_confirms_it(bot: Harness) -> None:
    tg = bot.tg
    await bot.add_character("Hamlet")
    ann = tg.user(51, "Ann")
    chat = tg.private(ann)
    await bot.app.commands.use(*_private(ann), "Hamlet")
    seen_when_confirmed: list[str | None] = []
    update = tg.say(chat, ann, "Remember me.")
    serve = tg._m_getUpdates

    async def watching(params):
        if int(params.get("offset") or 0) > update["update_id"] and not seen_when_confirmed:
            seen_when_confirmed.append(await stored_status(bot.app.store, chat["id"], update["message"]["message_id"]))
        return await serve(params)

    tg._m_getUpdates = watching
    await bot.idle()
    assert seen_when_confirmed and seen_when_confirmed[0] in ("pending", "answered")
    assert tg.texts(chat["id"]) == [bot.tgi.reply]


async def test_the_webhook_stores_the_message_before_it_answers_200(store, cache, tg: FakeTelegram, tgi) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    tgi.script(first_token_delay=0.3)
    async with running_bot(
        store, cache, tg, tgi,
        telegram_webhook_url=url, telegram_webhook_listen="127.0.0.1", telegram_webhook_port=port,
        telegram_webhook_secret="s3cret",
    ) as bot:
        await bot.add_character("Hamlet")
        ann = tg.user(52, "Ann")
        chat = tg.private(ann)
        await bot.app.commands.use(*_private(ann), "Hamlet")
        update = tg.update({"message": tg.message(chat, ann, "Through the hook.")})
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"}) as response:
                assert response.status == 200
                assert await stored_status(store, chat["id"], update["message"]["message_id"]) in ("pending", "answered")
        await bot.idle()
        await tg.wait_for(lambda: tg.texts(chat["id"]), what="the reply")
    assert tg.texts(chat["id"]) == [tgi.reply]
    assert await stored_status(store, chat["id"], update["message"]["message_id"]) == "answered"



# The body is refused before anything is stored: one backend pair is enough.
@pytest.mark.parametrize("backends", ["sqlite-memory"], indirect=True)
@pytest.mark.parametrize("body", [b"[]", b'{"update_id": 1, "message": 5}', b"null", b"\xff\xfe", b'{"update_id": "x"}', b"{"])
async def test_a_webhook_body_that_is_not_an_update_is_a_400_in_one_line(store, cache, tg: FakeTelegram, tgi, caplog, body: bytes) -> None:
    caplog.set_level(logging.WARNING, logger="bots.telegram.intake")
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    async with running_bot(
        store, cache, tg, tgi,
        telegram_webhook_url=url, telegram_webhook_listen="127.0.0.1", telegram_webhook_port=port,
        telegram_webhook_secret="s3cret",
    ):
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=body, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret"}) as response:
                assert response.status == 400
    (record,) = [r for r in caplog.records if "did not hold an update" in r.getMessage()]
    assert record.exc_info is None and "\n" not in record.getMessage()

async def test_a_message_left_pending_by_a_crash_is_answered_at_start_up_and_its_redelivery_is_not(
    store, cache, tg: FakeTelegram, tgi
) -> None:
    ann = tg.user(53, "Ann")
    chat = tg.private(ann)
    message = tg.message(chat, ann, "Are you still there?")
    async with running_bot(store, cache, tg, tgi) as before:
        hamlet = await before.add_character("Hamlet")
        await before.app.commands.use(*_private(ann), "Hamlet")
        # What a process that died mid-reply left: the message stored (taken by it), its update
        # confirmed, no answer.
        conversation = ConversationKey(hamlet.id, "telegram", str(chat["id"]), str(ann["id"]))
        await store.messages.accept(conversation, message["text"], 4, str(message["message_id"]), "Ann", owner=before.app.replica)
    async with running_bot(store, cache, tg, tgi) as after:
        await tg.wait_for(lambda: tg.texts(chat["id"]), what="the recovered answer")
        tg.push({"message": message})  # Telegram delivers it again
        await after.idle()
    assert tg.texts(chat["id"]) == [tgi.reply]
    assert tgi.count("/v1/chat/completions") == 1
    assert await stored_status(store, chat["id"], message["message_id"]) == "answered"


async def test_a_reply_left_half_shown_in_a_group_is_completed_in_place_at_start_up(
    store, cache, tg: FakeTelegram, tgi
) -> None:
    group = tg.group(-100551)
    ann = tg.user(54, "Ann")
    message = tg.message(group, ann, "Tell me of the ghost.")
    async with running_bot(store, cache, tg, tgi) as before:
        hamlet = await before.add_character("Hamlet")
        await before.bind(group["id"], "Hamlet", trigger="all")
        conversation = ConversationKey(hamlet.id, "telegram", str(group["id"]), str(ann["id"]))
        intake = await store.messages.accept(
            conversation, message["text"], 4, str(message["message_id"]), "Ann", owner=before.app.replica
        )
        half = tg._m_sendMessage({"chat_id": group["id"], "text": "(shivers) It walks the battlem"})
        await before.app.engine.showing(intake, str(half["message_id"]))
    async with running_bot(store, cache, tg, tgi):
        await tg.wait_for(lambda: tg.texts(group["id"]) == [tgi.reply], what="the half-shown reply to be completed")
        # The last edit shows before the reply is stored: wait (bounded) for the store, not for time.
        status = await stored_status(store, group["id"], message["message_id"])
        for _ in range(300):
            if status == "answered":
                break
            await asyncio.sleep(0.1)
            status = await stored_status(store, group["id"], message["message_id"])
    assert [m["message_id"] for m in tg.bot_messages(group["id"])] == [half["message_id"]]
    assert status == "answered"
