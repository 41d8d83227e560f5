"""A reply growing in a private chat's draft bubble (``sendMessageDraft``), at the pace Telegram allows."""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Awaitable, Callable

from telegram.error import NetworkError, RetryAfter, TelegramError, TimedOut

from bots.streaming import EditBudget
from core.text import split_message

log = logging.getLogger(__name__)


def is_transient(exc: TelegramError) -> bool:
    """A failure that may pass on its own (flood wait, timeout, connection or 5xx), not a refusal.

    PTB's BadRequest and Forbidden subclass NetworkError, so the test is on the exact type.
    """
    return isinstance(exc, (RetryAfter, TimedOut)) or type(exc) is NetworkError


class DraftStream:
    """Shows text deltas as one animated draft, updated at most as often as ``budget`` allows.

    The draft shows the piece being written (the last ``limit`` characters' worth). The caller sends
    the finished text as real messages: a draft is only a preview. If the first draft is refused
    (the Bot API has no drafts here), ``run`` stops reading and returns False; ``text`` holds what
    was read so far and the remaining deltas are left for the caller.
    """

    def __init__(self, *, send_draft: Callable[[str], Awaitable[object]], budget: EditBudget, limit: int) -> None:
        self._send_draft = send_draft
        self.budget = budget
        self.limit = limit
        self.text = ""
        self.drafts = 0  # drafts Telegram accepted
        self.refused = False
        self._shown = ""
        self._changed = asyncio.Event()
        self._finished = asyncio.Event()

    async def run(self, deltas: AsyncIterator[str]) -> bool:
        """Read ``deltas`` to the end while drafting; False if drafts were refused (see the class)."""
        painter = asyncio.create_task(self._paint())
        try:
            async for delta in deltas:
                self.text += delta
                self._changed.set()
                if self.refused:
                    break
        finally:
            self._finished.set()
            self._changed.set()
            await painter
        return not self.refused

    def _visible(self) -> str:
        return split_message(self.text.strip(), self.limit)[-1]

    async def _paint(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._finished.is_set():
                return
            delay = self.budget.wait_time()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._finished.wait(), timeout=delay)
                    return  # the reply is complete: the caller sends it, no more previews
                except TimeoutError:
                    pass
            text = self._visible()
            if not text.strip() or text == self._shown:
                continue
            await self.budget.take()
            try:
                await self._send_draft(text)
            except TelegramError as exc:
                if is_transient(exc):
                    log.debug("draft not shown (%s); trying again with the next text", exc)
                    continue
                if self.drafts == 0:
                    self.refused = True
                else:
                    log.warning("Telegram stopped accepting drafts for this reply: %s", exc)
                return
            self.drafts += 1
            self._shown = text
