"""How updates are taken in: many chats at once, one person's updates in a chat in order, redeliveries dropped."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Generic, Hashable, TypeVar

from telegram import Update
from telegram.ext import BaseUpdateProcessor

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Recent(Generic[K, V]):
    """A bounded mapping that forgets its oldest entries first (in-process memory of recent things)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def first_time(self, key: K) -> bool:
        """Remember ``key``; True if it was not remembered already."""
        if key in self._items:
            return False
        self.put(key, None)  # type: ignore[arg-type]
        return True

    def __len__(self) -> int:
        return len(self._items)


def order_key(update: object) -> tuple[int, int] | None:
    """Updates with the same key are handled one after another: the same person in the same chat."""
    if not isinstance(update, Update):
        return None
    chat, user = update.effective_chat, update.effective_user
    if chat is None and user is None:
        return None
    return (chat.id if chat else 0, user.id if user else 0)


class OrderedUpdates(BaseUpdateProcessor):
    """Runs updates concurrently, except that one person's updates in one chat keep their order.

    Also drops an update whose ``update_id`` was seen recently: Telegram redelivers webhook updates
    it thinks failed, and a restarted poller may fetch the last batch again. The Engine drops
    redelivered messages too; this catches commands and button presses as well.

    At most ``max_waiting_per_key`` updates of one person in one chat wait here (each holds one of
    the ``max_concurrent_updates`` slots, so an unbounded line would starve everyone else); past it
    an update is dropped and counted in the log. The engine's rate limit, which counts messages by
    when they were sent, has told the person by then (the bound is kept above it).
    """

    def __init__(self, max_concurrent_updates: int = 256, remember: int = 10_000, max_waiting_per_key: int = 25) -> None:
        super().__init__(max_concurrent_updates)
        self.seen: Recent[int, None] = Recent(remember)
        self.max_waiting_per_key = max_waiting_per_key
        self.dropped = 0
        # Told of each update dropped from a flooded line (the adapter settles its stored message).
        self.on_drop: Callable[[object], Awaitable[None]] | None = None
        self._queues: dict[tuple[int, int], tuple[asyncio.Lock, list[int]]] = {}
        self._handling: set[asyncio.Task[Any]] = set()  # the tasks handling an update now

    def cancel_all(self) -> list[asyncio.Task[Any]]:
        """Cancel every update being handled (a stop that cannot wait any longer); their tasks."""
        tasks = list(self._handling)
        for task in tasks:
            task.cancel()
        return tasks

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        task = asyncio.current_task()
        if task is None:
            await self._process(update, coroutine)
            return
        self._handling.add(task)
        try:
            await self._process(update, coroutine)
        finally:
            self._handling.discard(task)

    async def _process(self, update: object, coroutine: Awaitable[Any]) -> None:
        if isinstance(update, Update) and not self.seen.first_time(update.update_id):
            log.info("dropped update %s: already handled", update.update_id)
            _discard(coroutine)
            return
        key = order_key(update)
        if key is None:
            await coroutine
            return
        queued = self._queues.get(key)
        if queued is not None and queued[1][0] >= self.max_waiting_per_key:
            self.dropped += 1
            log.warning(
                "dropped update %s from user %s in chat %s: %d of theirs waiting (PERSONAE_MAX_WAITING_PER_PERSON); "
                "%d dropped since start",
                getattr(update, "update_id", "?"), key[1], key[0], queued[1][0], self.dropped,
            )
            _discard(coroutine)
            if self.on_drop is not None:
                try:
                    await self.on_drop(update)
                except Exception:  # noqa: BLE001 - recovery sends the late notice instead
                    log.exception("could not settle dropped update %s", getattr(update, "update_id", "?"))
            return
        lock, users = self._queues.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:  # asyncio.Lock wakes waiters in arrival order
                await coroutine
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._queues[key]

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""


def _discard(coroutine: Awaitable[Any]) -> None:
    """Close a handler coroutine that will never run (no "never awaited" warning)."""
    close = getattr(coroutine, "close", None)
    if close is not None:
        close()
