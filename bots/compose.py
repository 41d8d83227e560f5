"""The composition root: the one place that builds clients and wires storage and the model to core."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import AsyncIterator

from bots.settings import Settings
from core.commands import Commands
from core.engine import Engine, EngineConfig
from core.ports import Cache, ChatModel, Store

log = logging.getLogger(__name__)


@dataclass(slots=True)
class App:
    """Everything an adapter needs: the engine, the command layer, and the settings."""

    settings: Settings
    store: Store
    cache: Cache
    model: ChatModel
    engine: Engine
    commands: Commands

    def is_owner(self, platform: str, user_id: str) -> bool:
        """Owner ids are written plain (any platform) or as ``platform:id``."""
        ids = self.settings.owner_ids
        return user_id in ids or f"{platform}:{user_id}" in ids


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        max_input_tokens=settings.max_input_tokens,
        history_turns=settings.history_turns,
        rate_limit_messages=settings.rate_limit_messages,
        rate_limit_window_s=settings.rate_limit_window_s,
        dedupe_ttl_s=settings.dedupe_ttl_s,
        cache_ttl_s=settings.cache_ttl_s,
        turn_deadline_s=settings.turn_deadline_s,
        max_message_chars=settings.max_message_chars,
    )


def wire(settings: Settings, store: Store, cache: Cache, model: ChatModel) -> App:
    """Assemble an App from already-built parts (tests use this with their own parts)."""
    engine = Engine(store, cache, model, engine_config(settings))
    return App(settings, store, cache, model, engine, Commands(store, cache, engine.hot))


async def open_store(settings: Settings) -> Store:
    from storage.database import open_store as _open

    return await _open(settings.database_url)


def open_cache(settings: Settings) -> Cache:
    from storage.cache import MemoryCache, RedisCache

    return RedisCache(settings.redis_url) if settings.redis_url else MemoryCache()


def model_client(settings: Settings, base_url: str, *, concurrency: int | None = None) -> ChatModel:
    from bots.llm.client import ModelClient

    return ModelClient(
        base_url,
        model=settings.llm_model,
        api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
        timeout_s=settings.llm_timeout_s,
        concurrency=concurrency or settings.llm_concurrency,
        retries=settings.llm_retries,
        layout=settings.prompt_layout,
    )


@contextlib.asynccontextmanager
async def open_app(settings: Settings, *, model_url: str | None = None) -> AsyncIterator[App]:
    """Build the App from settings; with no model URL, start the embedded model server first."""
    async with contextlib.AsyncExitStack() as stack:
        url = model_url or settings.llm_url
        concurrency = None
        if url is None:
            from bots.llm.embedded import EmbeddedModelServer

            server = await stack.enter_async_context(EmbeddedModelServer())
            url = server.base_url
            concurrency = 1  # llama.cpp's server answers one request at a time
        store = await open_store(settings)
        stack.push_async_callback(store.close)
        cache = open_cache(settings)
        stack.push_async_callback(cache.close)
        model = model_client(settings, url, concurrency=concurrency)
        stack.push_async_callback(model.close)
        app = wire(settings, store, cache, model)
        stack.push_async_callback(app.engine.drain)
        yield app
