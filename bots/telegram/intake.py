"""Taking updates in so that none is lost: a message is stored before Telegram is told it arrived.

PTB's own Updater confirms an update (the next ``getUpdates`` offset) as soon as it fetched it, and
answers a webhook request before anything is stored. ``Poller`` and ``WebhookServer`` replace it:
each update's message is handed to ``Engine.accept`` (stored, pending) first, then confirmed (the
offset moves past it, or the webhook answers 200), then processed by the Application.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from telegram import Update
from telegram.error import Conflict, InvalidToken, TelegramError
from telegram.ext import Application

from bots.compose import App
from bots.telegram.handlers import CHAT_TEXT, chat_event
from core.cancelled import pause
from core.reply import NOTICE_STORAGE_HELD

if TYPE_CHECKING:
    from bots.replicas import Lease

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


async def record(app: App, application: Application, update: Update) -> bool:
    """Store the update's message (pending) if a character will answer it; False when it could not
    be stored (the database is away): the update must then not be confirmed, so Telegram keeps it."""
    if not CHAT_TEXT.check_update(update):
        return True
    event = chat_event(update.effective_message, application.bot)  # type: ignore[arg-type]
    if event is None:
        return True
    try:
        await app.engine.accept(event)
        return True
    except Exception as exc:  # noqa: BLE001 - the database's own errors: said in one line, the update kept
        log.warning(
            "could not store Telegram message %s on arrival (%s); it stays with Telegram until the database answers",
            event.message_id, _short(exc),
        )
        log.debug("storing Telegram message %s failed", event.message_id, exc_info=True)
        if app.engine.storage_notice_due(f"{event.platform}:{event.user_id}"):
            with contextlib.suppress(TelegramError):
                await application.bot.send_message(
                    int(event.chat_id), NOTICE_STORAGE_HELD, reply_to_message_id=int(event.message_id)
                )
        return False


CONFLICT = "another process polls this bot: run one poller, or give replicas a shared PERSONAE_REDIS_URL"
CONFLICTS_REPORTED = 2  # 409 Conflicts in a row that say another process polls (one may be a poller just stopping)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


class Poller:
    """Long polling with ``getUpdates``: the offset confirms an update only once it was recorded."""

    def __init__(self, app: App, application: Application, *, timeout: int, allowed_updates: list[str]) -> None:
        self.app = app
        self.application = application
        self.timeout = timeout
        self.allowed_updates = allowed_updates
        self.offset: int | None = None
        self._task: asyncio.Task[None] | None = None
        # Since when every poll has failed (None: the last one worked). python-telegram-bot's
        # requests retry nothing here; the adapter gives up after PERSONAE_TELEGRAM_GIVE_UP_S.
        self.failing_since: float | None = None
        self.held_back_s = 2.0  # between fetches while the database cannot store what comes
        self.conflicts = 0  # 409 Conflicts in a row (another getUpdates caller)
        self.unconfirmed: str | None = None  # why the updates taken could not be confirmed at stop

    @property
    def conflicted(self) -> str | None:
        """Why this poller gets nothing (another process polls the same bot), or None."""
        return CONFLICT if self.running and self.conflicts >= CONFLICTS_REPORTED else None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def ended(self) -> str | None:
        """Why the poller stopped by itself (a refused token), or None while it runs or was stopped."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        error = task.exception()
        return f"{type(error).__name__}: {error}" if error is not None else "it returned"

    async def start(self) -> None:
        self.unconfirmed = None
        self._task = asyncio.create_task(self._run(), name="telegram-poller")

    async def _run(self) -> None:
        bot = self.application.bot
        delay = 1.0
        webhook_deleted = False
        while True:
            try:
                if not webhook_deleted:
                    # A webhook left set would make getUpdates fail: polling and webhooks exclude each
                    # other. Failing, it counts as a failed poll (the give-up watch sees it).
                    await bot.delete_webhook()
                    webhook_deleted = True
                updates = await bot.get_updates(
                    offset=self.offset, timeout=self.timeout, allowed_updates=self.allowed_updates
                )
            except InvalidToken:
                log.error("Telegram rejected the token while polling: check PERSONAE_TELEGRAM_TOKEN")
                raise
            except Conflict:
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                self.conflicts += 1
                if self.conflicts == CONFLICTS_REPORTED:
                    log.error("Telegram answers 409 Conflict to getUpdates: %s", CONFLICT)
                await pause(delay)
                delay = min(delay * 2, 30.0)
                continue
            except TelegramError as exc:
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                log.warning("fetching Telegram updates failed (%s); trying again in %.0f s", exc, delay)
                await pause(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 1.0
            self.failing_since = None
            self.conflicts = 0
            for update in updates:
                if not await record(self.app, self.application, update):
                    # Not stored: leave it (and what follows) unconfirmed; fetch it again in a while.
                    await pause(self.held_back_s)
                    break
                await self.application.update_queue.put(update)
                # Only now may the next getUpdates confirm it.
                self.offset = update.update_id + 1

    async def stop(self) -> None:
        """Stop fetching, then confirm what was recorded so that it is not fetched again."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)  # the caller's own cancellation goes on
        if self.offset is not None:
            try:
                # limit=1, no wait: an update this fetches stays unconfirmed and comes again next time.
                await self.application.bot.get_updates(offset=self.offset, timeout=0, limit=1)
            except TelegramError as exc:
                # Telegram sends them again at the next start; stored already, they are answered once.
                self.unconfirmed = f"confirming the updates taken: {_short(exc)}"


class ElectedPoller:
    """Long polling by one replica at a time: Telegram allows one ``getUpdates`` caller per bot, so the
    replicas on one Redis elect the poller with a lease; the others stand by and take over when its
    lease runs out (it died) or is given up (it stopped)."""

    def __init__(self, poller: Poller, lease: "Lease") -> None:
        self.poller = poller
        self.lease = lease
        self._task: asyncio.Task[None] | None = None

    @property
    def polling(self) -> bool:
        """Whether this replica is the one polling right now."""
        return self.poller.running

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def ended(self) -> str | None:
        return self.poller.ended

    @property
    def failing_since(self) -> float | None:
        return self.poller.failing_since if self.poller.running else None

    @property
    def conflicted(self) -> str | None:
        return self.poller.conflicted

    async def start(self) -> None:
        from bots.replicas import while_elected

        self._task = asyncio.create_task(
            while_elected(self.lease, self.poller.start, self.poller.stop, what="polls Telegram"), name="telegram-election"
        )

    @property
    def unconfirmed(self) -> str | None:
        return self.poller.unconfirmed

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # gather, not a suppressed await: a cancellation of the caller (its close time ran out)
            # goes on to it instead of being taken for the election task's own.
            await asyncio.gather(self._task, return_exceptions=True)


class WebhookServer:
    """The webhook endpoint on starlette and uvicorn: check the secret, store, answer 200, then process."""

    def __init__(self, app: App, application: Application, *, path: str, secret: str, listen: str, port: int) -> None:
        import uvicorn

        self.app = app
        self.application = application
        self.secret = secret
        routes = [Route("/" + path.lstrip("/"), self._receive, methods=["POST"])]
        config = uvicorn.Config(
            Starlette(routes=routes), host=listen, port=port, log_level="warning", lifespan="off", access_log=False
        )
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(), name="telegram-webhook")
        while not self.server.started:
            if self._task.done():
                await self._task  # raises what stopped it (e.g. the port is taken)
                raise OSError("the webhook server stopped at start-up")
            await asyncio.sleep(0.01)

    async def _receive(self, request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.secret.encode()):
            return Response(status_code=403)
        try:
            data = json.loads(await request.body())
            if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
                raise ValueError("not an object with an integer update_id")
            update = Update.de_json(data, self.application.bot)
        except Exception as exc:  # noqa: BLE001 - whatever the body is, it is not an update: one line, 400
            log.warning("a webhook request did not hold an update (%s)", _short(exc))
            return Response(status_code=400)
        if update is None:
            return Response(status_code=400)
        if not await record(self.app, self.application, update):
            return Response(status_code=503)  # not stored: Telegram sends it again later
        return Response(status_code=200, background=BackgroundTask(self.application.update_queue.put, update))

    async def stop(self) -> None:
        """Stop taking requests (those in progress finish)."""
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
