"""The one place the Telegram application is assembled, started and stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator
from urllib.parse import urlsplit

from telegram import BotCommand, Update
from telegram.constants import ChatType
from telegram.error import Forbidden, InvalidToken, TelegramError
from telegram.request import HTTPXRequest
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bots import heartbeat
from bots.compose import App
from bots.settings import Settings
from bots.telegram.arguments import COMMANDS
from bots.recovering import keep_recovering, sweep_every
from bots.telegram.handlers import CHAT_TEXT, FORGET, PLATFORM, USE, Handlers, chat_event
from bots.telegram.intake import ElectedPoller, Poller, WebhookServer
from bots.telegram.replies import REGENERATE, Replies
from bots.telegram.updates import OrderedUpdates
from core import observe
from core.errors import ConfigurationError, PersonaeError

log = logging.getLogger(__name__)

ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]
RECOVERED = "personae.deliver_recovered"  # bot_data: how the answer to a recovered message is shown
INTAKE = "personae.intake"  # bot_data: the Poller or WebhookServer taking updates in
_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")


class TelegramStartError(PersonaeError):
    """The Telegram adapter cannot start (token rejected, Bot API unreachable, bad webhook settings)."""


class TelegramMisconfigured(TelegramStartError, ConfigurationError):
    """A Telegram setting is wrong (the token was rejected, a webhook setting is malformed)."""


class TelegramConnectionLost(PersonaeError):
    """The Bot API could not be reached for longer than ``PERSONAE_TELEGRAM_GIVE_UP_S``."""


# The Bot API methods that write a message: the ones Telegram's flood limits count.
MESSAGE_WRITES = frozenset({
    "sendMessage", "editMessageText", "editMessageReplyMarkup", "editMessageCaption", "sendPhoto", "sendDocument",
    "copyMessage", "forwardMessage",
})


class WritesRateLimiter(AIORateLimiter):
    """python-telegram-bot's limiter (and its retries after a 429), with the group limits applied to
    message writes only: "typing…", member lookups and the like are not messages, and counted among
    them they would hold a group's replies back."""

    async def process_request(self, callback: Any, args: Any, kwargs: dict[str, Any], endpoint: str, data: dict[str, Any], rate_limit_args: Any) -> Any:  # type: ignore[override]
        if endpoint not in MESSAGE_WRITES and "chat_id" in data:
            data = {k: v for k, v in data.items() if k != "chat_id"}  # it only picks the limits; the call keeps its own
        return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)


@dataclass(frozen=True, slots=True)
class Tuning:
    """Pacing and timing of the adapter. The defaults follow Telegram's limits; tests shorten some."""

    edit_interval: float = 1.0  # seconds between edits of one streamed message
    draft_interval: float = 1.0  # seconds between drafts in one private chat
    group_messages_per_minute: int = 20  # sends and edits per group chat
    chat_interval: float = 1.0  # seconds between sends or edits in one chat (private or group)
    poll_timeout: int = 30  # seconds one getUpdates may wait for updates
    request_timeout: float = 15.0  # connect/read/write timeout of one Bot API call
    rate_limit_retries: int = 2  # retries of a call Telegram answers with "retry after"
    admin_ttl: float = 60.0  # how long a getChatMember answer is trusted


def bot_api_client(timeout_s: float, *, updates: bool = False) -> HTTPXRequest:
    """python-telegram-bot's HTTP client, as its builder makes it (256 connections, or one for
    ``getUpdates`` with its own default timeouts but the read), with the process's TLS context:
    each client would load the certificates again, tens of milliseconds of CPU."""
    import httpx

    from bots.llm.client import tls_context

    verify = {"verify": tls_context(httpx)}
    if updates:
        return HTTPXRequest(connection_pool_size=1, read_timeout=timeout_s, httpx_kwargs=verify)
    return HTTPXRequest(
        connection_pool_size=256, connect_timeout=timeout_s, read_timeout=timeout_s, write_timeout=timeout_s,
        pool_timeout=timeout_s, httpx_kwargs=verify,
    )


def build_application(app: App, tuning: Tuning | None = None) -> Application:
    """The python-telegram-bot Application for ``app``'s token and Bot API address, handlers registered."""
    tuning = tuning or Tuning()
    settings = app.settings
    if settings.telegram_token is None:
        raise TelegramStartError("PERSONAE_TELEGRAM_TOKEN is not set.")
    hide_token(settings.telegram_token.get_secret_value())
    updates = OrderedUpdates(256, max_waiting_per_key=settings.max_waiting_per_person)
    application = (
        ApplicationBuilder()
        .token(settings.telegram_token.get_secret_value())
        .base_url(settings.telegram_api_base)
        .base_file_url(settings.telegram_file_base)
        .concurrent_updates(updates)
        .rate_limiter(WritesRateLimiter(max_retries=tuning.rate_limit_retries, group_max_rate=0))
        .request(bot_api_client(tuning.request_timeout))
        .get_updates_request(bot_api_client(tuning.request_timeout, updates=True))
        .updater(None)  # updates come in through bots.telegram.intake, stored before they are confirmed
        .build()
    )
    # A message stored on arrival and then dropped from a flooded line gets no answer, now or after a restart.
    updates.on_drop = lambda update: _settle_dropped(app, application, update)
    replies = Replies(
        application.bot,
        edit_interval=tuning.edit_interval,
        draft_interval=tuning.draft_interval,
        group_per_minute=tuning.group_messages_per_minute,
        chat_interval=tuning.chat_interval,
        max_wait_s=settings.delivery_max_wait_s,
    )
    handlers = Handlers(app, replies, admin_ttl=tuning.admin_ttl)
    register(application, handlers)
    application.bot_data[RECOVERED] = handlers.deliver_recovered
    return application


class RedactToken(logging.Filter):
    """Replaces the bot token with ``<token>`` in log records (Bot API URLs carry it)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.token and self.token in message:
            record.msg, record.args = message.replace(self.token, "<token>"), None
        return True


# The loggers that print Bot API URLs: httpx (each request, at INFO) and PTB's Bot (its URL, at DEBUG).
_URL_LOGGERS = ("httpx", "telegram.Bot", "telegram.ext.ExtBot")


def hide_token(token: str) -> None:
    """Keep the token out of every log line that would show a Bot API URL, whatever the log level."""
    for name in _URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactToken) and f.token == token for f in logger.filters):
            logger.addFilter(RedactToken(token))


def register(application: Application, h: Handlers) -> None:
    """Every handler, in the order they are tried."""
    new = filters.UpdateType.MESSAGE  # edits of old messages are not answered again
    commands = {
        "start": h.on_start,
        "help": h.on_help,
        "characters": h.on_characters,
        "use": h.on_use,
        "mood": h.on_mood,
        "reset": h.on_reset,
        "memory": h.on_memory,
        "forget": h.on_forget,
        "bind": h.on_bind,
        "unbind": h.on_unbind,
        "scene": h.on_scene,
        "character": h.on_character,
        "lore": h.on_lore,
    }
    for name, callback in commands.items():
        application.add_handler(CommandHandler(name, callback, filters=new))
    card_caption = filters.CaptionRegex(r"^/character(@\w+)?\s+import\b")
    application.add_handler(MessageHandler(new & filters.Document.ALL & card_caption, h.on_card_document))
    application.add_handler(MessageHandler(CHAT_TEXT, h.on_message))
    application.add_handler(MessageHandler(new & filters.COMMAND & filters.ChatType.PRIVATE, h.on_unknown_command))
    application.add_handler(CallbackQueryHandler(h.on_use_button, pattern=rf"^{USE}:"))
    application.add_handler(CallbackQueryHandler(h.on_regenerate_button, pattern=rf"^{REGENERATE}:"))
    application.add_handler(CallbackQueryHandler(h.on_forget_button, pattern=rf"^{FORGET}:"))
    application.add_error_handler(on_error)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log a failed update with where it came from; tell a private chat, briefly, that it did not work.

    python-telegram-bot calls this for any exception in a handler and goes on with the next update.
    """
    if isinstance(context.error, Forbidden):
        log.info("Telegram refused to deliver to a chat (the bot was blocked or removed): %s", context.error)
        return
    where = ""
    if isinstance(update, Update):
        chat, user = update.effective_chat, update.effective_user
        where = f" (update {update.update_id}, chat {chat.id if chat else '-'}, user {user.id if user else '-'})"
    if isinstance(context.error, BaseException):
        observe.metrics.error("adapter", context.error)
    log.error("handling a Telegram update failed%s: %r", where, context.error, exc_info=context.error)
    if isinstance(update, Update) and update.effective_chat and update.effective_chat.type == ChatType.PRIVATE:
        with contextlib.suppress(TelegramError):
            await context.bot.send_message(update.effective_chat.id, "Something went wrong on my side. Please try again.")


async def announce_commands(application: Application) -> None:
    """Register the command list Telegram shows in its menu (setMyCommands)."""
    await application.bot.set_my_commands([BotCommand(name, about) for name, about in COMMANDS])


def webhook_secret(settings: Settings) -> str:
    """The secret Telegram must send with every webhook request; a fresh random one if none is set."""
    if settings.telegram_webhook_secret is None:
        return secrets.token_urlsafe(32)
    secret = settings.telegram_webhook_secret.get_secret_value()
    if not _SECRET.match(secret):
        raise TelegramMisconfigured("PERSONAE_TELEGRAM_WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and -.")
    return secret


@contextlib.asynccontextmanager
async def serving(
    application: Application, settings: Settings, tuning: Tuning | None = None, *, app: App
) -> AsyncIterator[Application]:
    """Log in, start taking updates (webhook if configured, else long polling), and stop cleanly on exit."""
    tuning = tuning or Tuning()
    token = settings.telegram_token.get_secret_value() if settings.telegram_token else ""
    secret = webhook_secret(settings) if settings.telegram_webhook_url else None
    try:
        await application.initialize()
    except InvalidToken:
        # PTB's own message quotes the token: never let it reach a log.
        await application.bot.shutdown()
        raise TelegramMisconfigured(
            "PERSONAE_TELEGRAM_TOKEN is set but Telegram rejected it (401 Unauthorized): "
            "check the token with @BotFather."
        ) from None
    except TelegramError as exc:
        await application.bot.shutdown()
        reason = exc.message.replace(token, "<token>") if token else exc.message
        raise TelegramStartError(
            f"Telegram could not be reached at {settings.telegram_api_base} ({reason}); check the network "
            "(or PERSONAE_TELEGRAM_API_BASE)"
        ) from None
    try:
        await announce_commands(application)
        await application.start()
        # Started before new updates come in; what they bring is being answered and is left alone.
        recovery = asyncio.create_task(keep_recovering(
            app.engine, PLATFORM, application.bot_data[RECOVERED], sweep_s=sweep_every(settings, app.cache)
        ))
        intake: Poller | ElectedPoller | WebhookServer | None = None
        try:
            if settings.telegram_webhook_url:
                url = settings.telegram_webhook_url
                intake = WebhookServer(
                    app, application, path=urlsplit(url).path, secret=secret or "",
                    listen=settings.telegram_webhook_listen, port=settings.telegram_webhook_port,
                )
                await intake.start()
                await application.bot.set_webhook(url, allowed_updates=ALLOWED_UPDATES, secret_token=secret)
                log.info("Telegram bot @%s is taking updates by webhook at %s", application.bot.username, url)
            else:
                intake = Poller(app, application, timeout=tuning.poll_timeout, allowed_updates=ALLOWED_UPDATES)
                if getattr(app.cache, "shared", False):
                    # Replicas on one Redis: one of them polls (Telegram allows one getUpdates caller).
                    from bots.replicas import Lease
                    from core.hot import leader_key

                    lease = Lease(app.cache, leader_key("telegram-polling"), app.replica, settings.replica_lease_s)
                    intake = ElectedPoller(intake, lease)
                await intake.start()
                log.info("Telegram bot @%s is taking updates by long polling%s", application.bot.username,
                         " (one replica at a time, elected in Redis)" if isinstance(intake, ElectedPoller) else "")
            application.bot_data[INTAKE] = intake
            yield application
        finally:
            application.bot_data.pop(INTAKE, None)
            await stop_serving(application, recovery, intake)
    finally:
        await application.shutdown()


# After the service's close time ran out (the adapter is cancelled): how long the updates being
# handled get to end before they are cancelled (each leaves its message pending, answered after the
# restart), and how long they then get to end cancelled.
ABANDON_S = 1.0
UNANSWERED = "Telegram did not answer while stopping (%s); pending messages are answered after the restart"


async def stop_serving(application: Application, recovery: asyncio.Task[None], intake: Any) -> None:
    """Stop taking updates, confirm those taken (``intake.stop``), and let the updates being handled
    finish (``Application.stop``). Telegram's answers are waited for until the service's close time
    runs out and cancels this; the Application is then stopped without them (python-telegram-bot's
    ``shutdown`` refuses an Application still running), and one line says what was left."""
    recovery.cancel()
    left = ""
    doing = "confirming the updates taken"
    try:
        await asyncio.gather(recovery, return_exceptions=True)
        if intake is not None:
            await intake.stop()
            left = getattr(intake, "unconfirmed", None) or ""
        doing = "the updates being handled"
        if application.running:
            await application.stop()
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError):
            left = left or f"{doing}, cut off when the close time ran out"
        await _abandon(application)
        raise
    finally:
        if left:
            log.warning(UNANSWERED, left)


async def _abandon(application: Application) -> None:
    """Stop ``application`` when there is no time left. ``Application.stop`` marks it stopped as soon as
    it runs; the updates being handled (waiting for Telegram) get ``ABANDON_S`` more, then they are
    cancelled (their messages stay pending) and get ``ABANDON_S`` to end, and so does the stop."""
    stopping = asyncio.create_task(application.stop(), name="telegram-stop") if application.running else None
    if stopping is not None:
        await asyncio.wait([stopping], timeout=ABANDON_S)
    processor = application.update_processor
    # Left running, they would fail once the Bot API's client is closed, each with an error line.
    handling = processor.cancel_all() if isinstance(processor, OrderedUpdates) else []
    if handling:
        await asyncio.wait(handling, timeout=ABANDON_S)
    if stopping is not None:
        if handling:
            await asyncio.wait([stopping], timeout=ABANDON_S)
        stopping.cancel()
        await asyncio.gather(stopping, return_exceptions=True)


async def _settle_dropped(app: App, application: Application, update: object) -> None:
    message = update.effective_message if isinstance(update, Update) else None
    event = chat_event(message, application.bot) if message is not None else None
    if event is not None:
        await app.engine.discard(event)


async def run_telegram(app: App, tuning: Tuning | None = None, *, stop: asyncio.Event | None = None) -> None:
    """Run the Telegram bot until ``stop`` is set (or cancelled): then no update is fetched any more,
    and the updates being handled finish. Raises TelegramStartError (one plain line) if it cannot start,
    and TelegramConnectionLost once long polling has not reached the Bot API for ``PERSONAE_TELEGRAM_GIVE_UP_S``."""
    tuning = tuning or Tuning()
    application = build_application(app, tuning)
    # The heartbeat counts Telegram as up while the application and its update intake run.
    heartbeat.watch("telegram", lambda: application.running and _taking_updates(application), app.settings.heartbeat_file)
    try:
        async with serving(application, app.settings, tuning, app=app):
            watching = asyncio.create_task(watch_polling(application, app.settings))
            stopping = asyncio.create_task((stop or asyncio.Event()).wait())
            try:
                await asyncio.wait([watching, stopping], return_when=asyncio.FIRST_COMPLETED)
                if watching.done():
                    watching.result()  # raises why the intake ended
            finally:
                for task in (watching, stopping):
                    task.cancel()
                await asyncio.gather(watching, stopping, return_exceptions=True)
    finally:
        heartbeat.unwatch("telegram")


def _taking_updates(application: Application) -> bool | str:
    """Whether the intake runs; why not, when another process polls the same bot (409 Conflict)."""
    intake = application.bot_data.get(INTAKE)
    if intake is None or not intake.running:
        return False
    return getattr(intake, "conflicted", None) or True


async def watch_polling(application: Application, settings: Settings) -> None:
    """Return never; raise TelegramConnectionLost when polling has had no answer for too long (or the
    poller stopped for good). A webhook is not watched: Telegram comes to us."""
    give_up = settings.telegram_give_up_s
    while True:
        intake = application.bot_data.get(INTAKE)
        if isinstance(intake, (Poller, ElectedPoller)):
            if intake.ended is not None:
                raise TelegramConnectionLost(f"Telegram stopped answering getUpdates ({intake.ended})")
            since = intake.failing_since
            silent = 0.0 if since is None else time.monotonic() - since
            if silent > give_up:
                raise TelegramConnectionLost(
                    f"Telegram could not be reached at {settings.telegram_api_base} for {silent:.0f} s "
                    f"(PERSONAE_TELEGRAM_GIVE_UP_S={give_up:g})"
                )
        await asyncio.sleep(min(5.0, give_up / 4))
