"""A whole turn against the real llama.cpp server with the bundled model, and a restart."""

from __future__ import annotations

import uuid

from bots.compose import model_client, wire
from bots.samples import ensure_samples
from core.commands import Actor, Place
from core.engine import ReplyStatus
from core.events import ChatEvent, ConversationKey, Platform
from storage.cache import MemoryCache
from storage.database import SqlStore
from storage.migrate import upgrade
from tests.engine.conftest import make_settings


async def open_app(url: str, llama_url: str):
    settings = make_settings(database_url=url, llm_url=llama_url, max_tokens=24, llm_timeout_s=60, turn_deadline_s=120)
    store = await SqlStore.open(url)
    await ensure_samples(store)
    return wire(settings, store, MemoryCache(), model_client(settings, llama_url, concurrency=1))


async def close(app) -> None:
    await app.engine.drain()
    await app.model.close()
    await app.cache.close()
    await app.store.close()


async def test_a_turn_streams_text_is_stored_and_history_survives_a_restart(tmp_path, llama_server) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'personae.db'}"
    await upgrade(url)
    place = Place(Platform.CONSOLE, "console", "console-elena", private=True)
    actor = Actor(Platform.CONSOLE, "elena", "Elena")

    def event(text: str) -> ChatEvent:
        return ChatEvent(Platform.CONSOLE, "console", "console-elena", "elena", "Elena", uuid.uuid4().hex, text, private=True)

    app = await open_app(url, llama_server.base_url)
    try:
        used = await app.commands.use(actor, place, "Hamlet")
        assert used.ok and used.greeting and used.greeting in used.message
        reply = app.engine.handle(event("Good evening, my lord."))
        deltas = [d async for d in reply]
        assert reply.status is ReplyStatus.ANSWERED
        assert len(deltas) > 1 and "".join(deltas).strip()
        first_reply = reply.text
        conversation = reply.conversation
    finally:
        await close(app)

    # A new process: new store, new (empty) cache, new engine, same database file.
    app = await open_app(url, llama_server.base_url)
    try:
        stored = await app.store.messages.recent(conversation, 10)
        assert [(m.role, m.content) for m in stored] == [
            ("assistant", used.greeting),
            ("user", "Good evening, my lord."),
            ("assistant", first_reply),
        ]
        reply = app.engine.handle(event("What troubles you tonight?"))
        assert (await reply.collect()).strip()
        assert reply.status is ReplyStatus.ANSWERED
        stored = await app.store.messages.recent(ConversationKey(conversation.character_id, "console", "console-elena", "elena"), 10)
        assert [m.role for m in stored] == ["assistant", "user", "assistant", "user", "assistant"]
        assert stored[3].content == "What troubles you tonight?"
    finally:
        await close(app)
