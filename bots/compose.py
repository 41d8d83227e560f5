"""The composition root: the one place that builds clients and wires storage and the model to core."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

from bots.settings import Settings
from core.cadence import Cadence
from core.commands import Commands
from core.dynamics import Dynamics
from core.engine import Engine, EngineConfig, NoStateChange
from core.errors import ConfigurationError, ModelError
from core.feelings import Feelings
from core.hot import HotState
from core.lorebook import LoreSettings
from core.ports import Appraiser, Cache, ChatModel, ModelSlots, StateUpdater, Store
from core.scene import scene_budget
from core.state import Exchange

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
    slots: ModelSlots | None = None  # the model budget the clients take slots from (set by open_app)
    replica: str = ""  # this process's name among replicas (leases, the messages it takes)

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
        card_examples=settings.card_examples,
        scene_share=settings.scene_share,
        scene_layout=settings.scene_layout,
        conversation_turns=settings.conversation_turns,
        lore=lore_settings(settings),
        rate_limit_messages=settings.rate_limit_messages,
        rate_limit_window_s=settings.rate_limit_window_s,
        cache_ttl_s=settings.cache_ttl_s,
        turn_deadline_s=settings.turn_deadline_s,
        max_message_chars=settings.max_message_chars,
        max_concurrent_turns=settings.max_concurrent_turns,
        max_waiting_per_person=settings.max_waiting_per_person,
        max_waiting_turns=settings.max_waiting_turns,
        pending_answer_within_s=settings.pending_answer_within_s,
        store_retry_s=settings.store_retry_s,
        replica_lease_s=settings.replica_lease_s,
    )


def lore_settings(settings: Settings) -> LoreSettings:
    """The lorebook limits (PERSONAE_LORE_TOKENS, PERSONAE_LORE_RECURSION)."""
    return LoreSettings(max_tokens=settings.lore_tokens, recursion=settings.lore_recursion)


def dynamics(settings: Settings) -> Dynamics:
    return Dynamics(
        weight=settings.appraisal_weight,
        max_emotion_step=settings.max_emotion_step,
        max_intimacy_step=settings.max_intimacy_step,
        half_life_s=settings.emotion_half_life_s,
    )


def appraiser_kind(settings: Settings) -> str:
    """``model``, ``lexicon`` or ``none``: PERSONAE_APPRAISER, else the model when a real model server is configured."""
    if settings.appraiser != "auto":
        return settings.appraiser
    return "model" if settings.llm_url else "lexicon"


def model_appraiser(settings: Settings, model: ChatModel) -> Appraiser:
    from core.appraisal import ModelAppraiser

    return ModelAppraiser(
        model,
        window=settings.appraisal_window,
        max_tokens=settings.appraisal_max_tokens,
        temperature=settings.appraisal_temperature,
        max_input_tokens=settings.max_input_tokens,
    )


def appraisal_cadence(settings: Settings, appraiser: Appraiser, store: Store) -> Cadence:
    """Which exchanges ``appraiser`` reads (PERSONAE_APPRAISAL_CADENCE); the cadence paces the model
    appraiser only (the lexicon costs nothing). ``moved`` asks the lexicon whether this exchange
    moves the feelings by the same dynamics."""
    from core.cadence import EveryExchange

    if getattr(appraiser, "name", None) != "model":
        return EveryExchange()
    from core.events import ConversationKey

    async def position(exchange: Exchange) -> int:  # the exchange's number in its conversation, stored
        conversation = ConversationKey(exchange.character_id, exchange.platform, exchange.channel_id, exchange.user_id)
        return await store.messages.position(conversation, exchange.user_message_id)

    return cadence_named(settings.appraisal_cadence, dynamics(settings), position)


def cadence_named(value: str, moves: Dynamics, position: Callable[[Exchange], Awaitable[int]]) -> Cadence:
    """The cadence ``value`` names (``every``, ``every:N``, ``moved``; ValueError otherwise); ``moved``
    asks the lexicon whether the exchange moves the feelings by ``moves``; ``position`` numbers an
    exchange in its conversation (``every:N``). ``personae eval`` builds its cadences here too, so it
    measures the ones the bots run."""
    from core.cadence import EveryExchange, EveryNth, WhenMoved, parse_cadence

    kind, n = parse_cadence(value)
    if kind == "every":
        return EveryExchange() if n == 1 else EveryNth(n, position)
    from bots.lexicon import LexiconAppraiser, feelings_moved

    return WhenMoved(feelings_moved(LexiconAppraiser(), moves))


def memory_on(settings: Settings) -> bool:
    """PERSONAE_MEMORY: ``on``, ``off``, or ``auto`` (on when a model server is configured)."""
    return settings.memory == "on" or (settings.memory == "auto" and settings.llm_url is not None)


def memory_keeper(settings: Settings, store: Store, cache: Cache, model: ChatModel):
    from core.memory import MemoryConfig, MemoryKeeper

    config = MemoryConfig(
        history_turns=settings.history_turns,
        budget_tokens=settings.memory_tokens,
        prompt_tokens=settings.memory_prompt_tokens,
        batch=settings.memory_batch,
        max_tokens=settings.memory_max_tokens,
        max_input_tokens=settings.max_input_tokens,
        cache_ttl_s=settings.cache_ttl_s,
        lock_ttl_s=settings.turn_deadline_s + 5,
        concurrency=settings.appraiser_concurrency,
    )
    return MemoryKeeper(store, cache, model, config)


def wire(
    settings: Settings, store: Store, cache: Cache, model: ChatModel, *, appraiser: Appraiser | None = None,
    memory_model: ChatModel | None = None,
) -> App:
    """Assemble an App from already-built parts (tests use this with their own parts).

    Without an ``appraiser``: none when PERSONAE_APPRAISER=none, the model appraiser on ``model``
    when it is ``model``, else the lexicon appraiser (``open_app`` passes the model appraiser with
    its own client when a model server is configured).
    """
    from bots.replicas import new_replica_id

    replica = settings.replica_id or new_replica_id()
    config = engine_config(settings)
    config.replica = replica
    engine = Engine(store, cache, model, config)
    if appraiser is None and settings.appraiser == "model":
        appraiser = model_appraiser(settings, model)
    elif appraiser is None and settings.appraiser != "none":
        from bots.lexicon import LexiconAppraiser

        appraiser = LexiconAppraiser()
    updater: StateUpdater = NoStateChange()
    if appraiser is not None:
        updater = Feelings(
            store, cache, engine.hot, appraiser, dynamics(settings),
            cache_ttl_s=settings.cache_ttl_s, lock_ttl_s=settings.turn_deadline_s + 5,
            cadence=appraisal_cadence(settings, appraiser, store),
        )
    engine.state_updater = updater
    if memory_on(settings):
        # Condensing asks ``memory_model`` (open_app gives it a low-priority client), else ``model``.
        engine.memory = memory_keeper(settings, store, cache, memory_model or model)
    commands = command_layer(settings, store, cache, engine.hot, model, feelings=updater)
    commands.memory_keeper = engine.memory
    return App(settings, store, cache, model, engine, commands, replica=replica)


def command_layer(
    settings: Settings, store: Store, cache: Cache, hot: HotState, model: ChatModel | None, *, feelings: StateUpdater | None = None
) -> Commands:
    """The command layer; ``model`` proposes the profile fields an imported card lacks, but only when
    it is a configured model server (PERSONAE_LLM_URL): the bundled model is too small to judge a
    character, and a command-line import should not start it."""
    derive_model = model if settings.llm_url is not None else None
    return Commands(
        store, cache, hot, max_card_bytes=settings.max_card_bytes, feelings=feelings,
        derive_model=derive_model, derive_timeout_s=settings.derive_timeout_s, card_examples=settings.card_examples,
        scene_tokens=scene_budget(settings.scene_share, settings.max_input_tokens - settings.max_tokens),
    )


async def open_store(settings: Settings) -> Store:
    """The database, checked; a SQLite one is created or upgraded here (PostgreSQL needs `personae db upgrade`)."""
    from storage.database import open_store as _open

    return await _open(settings.database_url, migrate_sqlite=True)


def describe_database(settings: Settings) -> str:
    from storage.engine import safe_url

    return safe_url(settings.database_url)


async def open_cache(settings: Settings) -> Cache:
    """Redis (checked with a PING) when PERSONAE_REDIS_URL is set, else the in-process cache."""
    from storage.cache import connect_cache

    return await connect_cache(settings.redis_url, settings.redis_prefix, lock_lease=settings.lock_lease_s)


def describe_cache(cache: Cache) -> str:
    return getattr(cache, "where", None) or "in-process (PERSONAE_REDIS_URL is unset)"


def model_client(
    settings: Settings,
    base_url: str,
    *,
    concurrency: int | None = None,
    embedded: bool = False,
    url_setting: str = "PERSONAE_LLM_URL",
    model: str | None = None,
    slots: ModelSlots | None = None,
    low_priority: bool = False,
) -> ChatModel:
    """A client for ``base_url``; ``url_setting`` is the setting its errors name, ``model`` overrides
    PERSONAE_LLM_MODEL; ``slots`` is the deployment's model budget (``low_priority``: appraisals)."""
    from bots.llm.client import ModelClient

    return ModelClient(
        base_url,
        # The embedded server is personae's own: its errors must not send people to a setting they never set.
        url_setting=None if embedded else url_setting,
        model=model or settings.llm_model,
        api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
        timeout_s=settings.llm_timeout_s,
        connect_timeout_s=settings.llm_connect_timeout_s,
        first_token_timeout_s=settings.llm_first_token_timeout_s,
        concurrency=concurrency or settings.llm_concurrency,
        retries=settings.llm_retries,
        layout=settings.prompt_layout,
        slots=slots,
        low_priority=low_priority,
    )


def split_urls(urls: str) -> list[str]:
    return [u.strip() for u in urls.split(",") if u.strip()]


def model_pool(
    settings: Settings,
    urls: str,
    *,
    url_setting: str = "PERSONAE_LLM_URL",
    concurrency: int | None = None,
    slots: ModelSlots | None = None,
    low_priority: bool = False,
) -> ChatModel:
    """One client for one URL; for a comma-separated list, a pool that sends each request to the
    healthy server with the fewest in flight (``bots.llm.pool``). Each server has its own budget."""
    clients = [
        model_client(settings, url, concurrency=concurrency, url_setting=url_setting, slots=slots, low_priority=low_priority)
        for url in split_urls(urls)
    ]
    if len(clients) == 1:
        return clients[0]
    from bots.llm.client import ModelClient
    from bots.llm.pool import ModelPool

    return ModelPool([c for c in clients if isinstance(c, ModelClient)])


def open_slots(settings: Settings, cache: Cache) -> ModelSlots:
    """The model budget: shared by every replica on Redis, this process's own with the in-process cache."""
    from storage.slots import open_slots as _open

    return _open(cache, settings.llm_max_in_flight, settings.llm_channel_share, settings.llm_slot_lease_s)


@contextlib.asynccontextmanager
async def open_model(
    settings: Settings, *, model_url: str | None = None, about: list[str] | None = None, slots: ModelSlots | None = None
) -> AsyncIterator[ChatModel]:
    """The model client for ``PERSONAE_LLM_URL`` (or ``model_url``); with neither, the embedded model
    server, started here and supervised (a death is reported in one sentence; it is restarted once).

    A configured server is looked at once first (``/v1/models``): if nothing answers, ModelError
    says so now. What was reached is appended to ``about`` for the start-up line.
    """
    url = model_url or settings.llm_url
    if url is None:
        from bots.llm.embedded import EmbeddedModelServer
        from bots.llm.supervised import SupervisedModel

        # llama.cpp's server answers one request at a time.
        def embedded_client(base_url: str) -> ChatModel:
            return model_client(settings, base_url, concurrency=1, embedded=True)

        async with SupervisedModel(EmbeddedModelServer(), embedded_client) as supervised:
            if about is not None:
                about.append(f"model: the bundled SmolLM2-135M-Instruct on {supervised.server.base_url} (PERSONAE_LLM_URL is unset)")
            yield supervised
        return
    from bots.llm.probe import served_model

    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    urls = split_urls(url)
    served: str | None = None
    failure: ModelError | None = None
    for one in urls:
        # A pool starts when one of its servers answers; the pool probes the others back in.
        try:
            served = await served_model(one, api_key=api_key)
            failure = None
            break
        except ModelError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
    if about is not None:
        about.append(f"model server: {url}, model {settings.llm_model or served or '(the server default)'}")
    model = model_pool(settings, url, slots=slots)
    try:
        yield model
    finally:
        await model.close()


@contextlib.asynccontextmanager
async def open_appraiser(
    settings: Settings, model_url: str | None, slots: ModelSlots | None = None
) -> AsyncIterator[Appraiser | None]:
    """The appraiser the settings ask for; the model appraiser gets a client of its own (its own URL
    if PERSONAE_APPRAISER_URL is set, its own cap on requests in flight), closed on exit."""
    kind = appraiser_kind(settings)
    if kind == "none":
        yield None
    elif kind == "model":
        url = settings.appraiser_url or model_url or settings.llm_url
        if url is None:
            raise ConfigurationError("PERSONAE_APPRAISER=model needs a model server: set PERSONAE_LLM_URL or PERSONAE_APPRAISER_URL")
        # The same model budget as replies, at a lower priority: a waiting reply goes first.
        setting = "PERSONAE_APPRAISER_URL" if settings.appraiser_url else "PERSONAE_LLM_URL"
        client = model_pool(
            settings, url, url_setting=setting, concurrency=settings.appraiser_concurrency, slots=slots, low_priority=True
        )
        try:
            yield model_appraiser(settings, client)
        finally:
            await client.close()
    else:
        from bots.lexicon import LexiconAppraiser

        lexicon = LexiconAppraiser()
        await lexicon.load()
        yield lexicon


def fit_to_bundled_model(settings: Settings) -> Settings:
    """``settings`` with PERSONAE_MAX_INPUT_TOKENS no larger than the bundled model's context (its
    server refuses a longer prompt); unchanged when a model server is configured."""
    from bots.llm.embedded import CONTEXT_TOKENS

    if settings.llm_url is not None or settings.max_input_tokens <= CONTEXT_TOKENS:
        return settings
    return settings.model_copy(update={"max_input_tokens": CONTEXT_TOKENS})


@contextlib.asynccontextmanager
async def open_app(
    settings: Settings, *, model_url: str | None = None, platforms: tuple[str, ...] = ()
) -> AsyncIterator[App]:
    """Build the App from settings; with no model URL, start the embedded model server.

    Logs one line saying what it connected to (and the ``platforms`` about to start).
    """
    if model_url is None and settings.llm_url is None:
        fitted = fit_to_bundled_model(settings)
        if fitted is not settings:
            log.info(
                "the bundled model reads %d tokens at most: PERSONAE_MAX_INPUT_TOKENS=%d is lowered to that",
                fitted.max_input_tokens, settings.max_input_tokens,
            )
        settings = fitted
    async with contextlib.AsyncExitStack() as stack:
        # Storage first: a wrong database or Redis URL should not wait for a model server to start.
        store = await open_store(settings)
        stack.push_async_callback(store.close)
        cache = await open_cache(settings)
        stack.push_async_callback(cache.close)
        about = [f"database: {describe_database(settings)}", f"cache: {describe_cache(cache)}"]
        slots = open_slots(settings, cache)
        stack.push_async_callback(slots.close)
        model = await stack.enter_async_context(open_model(settings, model_url=model_url, about=about, slots=slots))
        if platforms:
            about.append(f"starting: {', '.join(platforms)}")
        log.info("; ".join(about))
        appraiser = await stack.enter_async_context(open_appraiser(settings, model_url, slots))
        memory_model = None
        if memory_on(settings) and (model_url or settings.llm_url):
            # Condensing is background work like the appraisal: the same budget, a lower priority.
            url = settings.appraiser_url or model_url or settings.llm_url
            setting = "PERSONAE_APPRAISER_URL" if settings.appraiser_url else "PERSONAE_LLM_URL"
            memory_model = model_pool(
                settings, url, url_setting=setting, concurrency=settings.appraiser_concurrency, slots=slots, low_priority=True
            )
            stack.push_async_callback(memory_model.close)
        app = wire(settings, store, cache, model, appraiser=appraiser, memory_model=memory_model)
        app.slots = slots
        stack.push_async_callback(app.engine.drain)
        yield app
