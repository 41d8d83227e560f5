"""The database goes away mid-reply and comes back: the reply shown is kept; a message that arrives
meanwhile stays with Telegram (unconfirmed), its sender is told once, and it is answered once the
database is back."""

from __future__ import annotations

import sqlalchemy as sa

from core.reply import NOTICE_STORAGE_HELD
from storage import migrate
from storage.cache import MemoryCache
from storage.database import SqlStore
from storage.tables import messages
from tests.telegram.conftest import running_bot
from tests.telegram.test_durable_intake import _private
from tests.throwaway import throwaway_postgres

REPLY = "(bows) Good morrow, friend; the night is long and the castle is cold."


async def test_a_reply_shown_while_the_database_is_down_is_stored_when_it_is_back(tg, tgi) -> None:
    async with throwaway_postgres() as postgres:
        await migrate.upgrade(postgres.url)
        store = await SqlStore.open(postgres.url)
        cache = MemoryCache()
        try:
            async with running_bot(store, cache, tg, tgi, store_retry_s=120.0) as bot:
                await bot.add_character("Hamlet")
                ann, bob = tg.user(71, "Ann"), tg.user(72, "Bob")
                ann_chat, bob_chat = tg.private(ann), tg.private(bob)
                for who in (ann, bob):
                    await bot.app.commands.use(*_private(who), "Hamlet")
                tgi.script(reply=REPLY, chunks=8, token_delay=0.2)
                tg.say(ann_chat, ann, "Who goes there?")
                await tg.wait_for(lambda: tg.calls_of("sendMessageDraft", ann_chat["id"]), what="Ann's reply to start")
                await postgres.stop()  # the database host goes down mid-reply

                tg.say(bob_chat, bob, "Hello?")
                tg.say(bob_chat, bob, "Anyone there?")
                await tg.wait_for(lambda: tg.texts(bob_chat["id"]), what="Bob's notice")
                await tg.wait_for(lambda: tgi.in_flight == 0 and tgi.count("/v1/chat/completions") == 1, what="Ann's reply to end")

                assert tg.texts(ann_chat["id"]) == []  # shown as a draft; the message waits for the reply to be stored
                assert tg.texts(bob_chat["id"]) == [NOTICE_STORAGE_HELD]  # told once, though he wrote twice
                assert tg.pending == 2  # Bob's messages are not confirmed: Telegram keeps them
                await postgres.start()
                await tg.wait_for(lambda: tg.texts(ann_chat["id"]), timeout=60, what="Ann's reply to be stored and shown")
                await tg.wait_for(lambda: len(tg.texts(bob_chat["id"])) == 3, timeout=60, what="Bob's two answers")
                await bot.idle(timeout=30)
            assert tg.texts(ann_chat["id"]) == [REPLY]
            assert tg.texts(bob_chat["id"]) == [NOTICE_STORAGE_HELD, REPLY, REPLY]
            async with store.engine.connect() as conn:
                rows = (await conn.execute(sa.select(messages.c.role, messages.c.content, messages.c.status))).all()
            assert sorted(tuple(r) for r in rows) == sorted([
                ("user", "Who goes there?", "answered"), ("assistant", REPLY, None),
                ("user", "Hello?", "answered"), ("assistant", REPLY, None),
                ("user", "Anyone there?", "answered"), ("assistant", REPLY, None),
            ])
        finally:
            await cache.close()
            await store.close()
