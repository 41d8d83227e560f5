"""Showing a streamed reply on a platform that sends and edits messages, at the pace it allows."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, AsyncIterable, AsyncIterator, Awaitable, Callable, Generic, TypeVar

from core import observe
from core.text import split_point

if TYPE_CHECKING:
    from core.engine import Reply

H = TypeVar("H")  # a platform's handle of a sent message


def first_shown(reply: "Reply", platform: str) -> None:
    """The person can now see the first text of ``reply``: measure the time since their message (once)."""
    if reply.shown:
        return
    reply.shown = True
    if reply.arrived_at is not None:
        observe.metrics.first_text(platform, max(0.0, time.time() - reply.arrived_at))


async def greeting_first(reply: "Reply", send: Callable[[str], Awaitable[object]], platform: str = "") -> AsyncIterator[str]:
    """The reply's deltas; on first contact the character's greeting is sent on its own before them."""
    async for delta in reply:
        if reply.greeting is not None:
            greeting, reply.greeting = reply.greeting, None
            await send(greeting)
            if platform:
                first_shown(reply, platform)
        yield delta


class EditBudget:
    """A sliding window: at most ``count`` sends or edits per ``per`` seconds (e.g. one channel's)."""

    def __init__(self, count: int, per: float) -> None:
        self.count, self.per = count, per
        self._times: deque[float] = deque()

    def wait_time(self) -> float:
        now = time.monotonic()
        while self._times and now - self._times[0] >= self.per:
            self._times.popleft()
        return 0.0 if len(self._times) < self.count else self.per - (now - self._times[0])

    async def take(self) -> None:
        while (delay := self.wait_time()) > 0:
            await asyncio.sleep(delay)
        self._times.append(time.monotonic())


class StreamedMessage(Generic[H]):
    """Renders text deltas as one or more messages: the first send, then paced edits.

    ``send(text)`` posts a new message and returns its handle; ``edit(handle, text)`` replaces its
    text. Past ``limit`` characters the reply continues in a new message, cut at a paragraph or
    sentence end. The last edit of each message always carries its complete text.
    """

    def __init__(
        self,
        *,
        limit: int,
        send: Callable[[str], Awaitable[H]],
        edit: Callable[[H, str], Awaitable[None]],
        interval: float = 1.0,
        budget: EditBudget | None = None,
        on_first: Callable[[], None] | None = None,
        halted: Callable[[], bool] | None = None,
    ) -> None:
        self.limit = limit
        # True once nothing more may be shown (the reply's turn lost its lock: another replica answers).
        self._halted = halted
        self._on_first = on_first  # told once, when the first message is sent (its text is visible)
        self._send, self._edit = send, edit
        self.interval = interval
        self.budget = budget
        self.handles: list[H] = []
        self.pieces: list[str] = []  # the text each message shows (or will show)
        self._shown: list[str] = []
        self._text = ""
        self._changed = asyncio.Event()
        self._done = False

    @property
    def text(self) -> str:
        return self._text

    async def run(self, deltas: AsyncIterable[str]) -> list[H]:
        """Consume ``deltas`` and keep the messages up to date; returns the message handles."""
        painter = asyncio.create_task(self._paint())
        try:
            async for delta in deltas:
                self._text += delta
                self._changed.set()
        finally:
            self._done = True
            self._changed.set()
            await painter
        return self.handles

    def _layout(self) -> list[str]:
        pieces, rest = [], self._text
        # Messages already sent keep their cut, so earlier messages never shift.
        for shown in self._shown[:-1]:
            take = len(shown) if rest.startswith(shown) else split_point(rest, self.limit)
            pieces.append(rest[:take].rstrip())
            rest = rest[take:].lstrip()
        while len(rest) > self.limit:
            cut = split_point(rest, self.limit)
            pieces.append(rest[:cut].rstrip())
            rest = rest[cut:].lstrip()
        pieces.append(rest)
        return pieces

    async def _paint(self) -> None:
        last = 0.0
        while True:
            await self._changed.wait()
            self._changed.clear()
            if not self._done and self.handles:
                # Pace edits: at most one per interval while the reply is still streaming.
                wait = self.interval - (time.monotonic() - last)
                if wait > 0:
                    try:
                        await asyncio.wait_for(self._wait_done(), timeout=wait)
                    except TimeoutError:
                        pass
            await self._sync()
            last = time.monotonic()
            if self._done and not self._changed.is_set():
                await self._sync()
                return

    async def _wait_done(self) -> None:
        while not self._done:
            await self._changed.wait()
            self._changed.clear()
        self._changed.set()

    async def _sync(self) -> None:
        if self._halted is not None and self._halted():
            return
        pieces = [p for p in self._layout() if p.strip()] or []
        for i, piece in enumerate(pieces):
            if i < len(self.handles):
                if self._shown[i] != piece:
                    if self.budget:
                        await self.budget.take()
                    await self._edit(self.handles[i], piece)
                    self._shown[i] = piece
            else:
                if self.budget:
                    await self.budget.take()
                self.handles.append(await self._send(piece))
                self._shown.append(piece)
                if self._on_first is not None:
                    on_first, self._on_first = self._on_first, None
                    on_first()
        self.pieces = list(self._shown)
