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

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from telegram import Update
from telegram.error import InvalidToken, TelegramError
from telegram.ext import Application

from bots.compose import App
from bots.telegram.handlers import CHAT_TEXT, chat_event

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


async def record(app: App, application: Application, update: Update) -> None:
    """Store the update's message (pending) if a character will answer it."""
    if not CHAT_TEXT.check_update(update):
        return
    event = chat_event(update.effective_message, application.bot)  # type: ignore[arg-type]
    if event is None:
        return
    try:
        await app.engine.accept(event)
    except Exception:  # noqa: BLE001 - the handler tells the person; the update must not block the rest
        log.exception("could not store Telegram message %s on arrival", event.message_id)


class Poller:
    """Long polling with ``getUpdates``: the offset confirms an update only once it was recorded."""

    def __init__(self, app: App, application: Application, *, timeout: int, allowed_updates: list[str]) -> None:
        self.app = app
        self.application = application
        self.timeout = timeout
        self.allowed_updates = allowed_updates
        self.offset: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # A webhook left set would make getUpdates fail: polling and webhooks exclude each other.
        await self.application.bot.delete_webhook()
        self._task = asyncio.create_task(self._run(), name="telegram-poller")

    async def _run(self) -> None:
        bot = self.application.bot
        delay = 1.0
        while True:
            try:
                updates = await bot.get_updates(
                    offset=self.offset, timeout=self.timeout, allowed_updates=self.allowed_updates
                )
            except InvalidToken:
                log.error("Telegram rejected the token while polling: check PERSONAE_TELEGRAM_TOKEN")
                raise
            except TelegramError as exc:
                log.warning("fetching Telegram updates failed (%s); trying again in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            delay = 1.0
            for update in updates:
                await record(self.app, self.application, update)
                await self.application.update_queue.put(update)
                # Only now may the next getUpdates confirm it.
                self.offset = update.update_id + 1

    async def stop(self) -> None:
        """Stop fetching, then confirm what was recorded so that it is not fetched again."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.offset is not None:
            with contextlib.suppress(TelegramError):
                # limit=1, no wait: an update this fetches stays unconfirmed and comes again next time.
                await self.application.bot.get_updates(offset=self.offset, timeout=0, limit=1)


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
            update = Update.de_json(json.loads(await request.body()), self.application.bot)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("a webhook request did not hold an update: %s", exc)
            return Response(status_code=400)
        if update is None:
            return Response(status_code=400)
        await record(self.app, self.application, update)
        return Response(status_code=200, background=BackgroundTask(self.application.update_queue.put, update))

    async def stop(self) -> None:
        """Stop taking requests (those in progress finish)."""
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
