"""Showing a streamed reply on a platform that sends and edits messages, at the pace the room allows.

The pieces, from the bottom:

* ``EditBudget``: one rate-limit bucket of a platform (a Discord channel's message sends, its edits;
  a Telegram group's messages): sliding windows of at most ``count`` writes per ``per`` seconds,
  granted by priority (a reply's first text before other replies' completing edits), with a
  non-blocking ``try_take`` for writes that may be skipped (intermediate edits).
* ``Room``: where replies are written (a channel, a group): its send and edit buckets (one object
  when the platform counts both alike), how many replies wait for their first text, and whether a
  new one would wait past the bound (then the adapter drops the turn).
* ``StreamedMessage``: decides WHEN to write and WHAT text: the first text as soon as the room
  gives the reply its turn (the newest text at that moment: a reply that finished while it waited
  goes out whole, in one write); intermediate edits only when the room has spare writes; the last
  write of a message carries the complete text and the adapter's finishing touch (a button).
  HOW to write is the adapter's ``send(text, final=...)`` and ``edit(handle, text, final=...)``.
* ``Typing``: one "typing…" indicator per place, shown while any reply there waits to be written.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, AsyncIterable, AsyncIterator, Awaitable, Callable, Generic, TypeVar

from core import observe
from core.text import split_point

if TYPE_CHECKING:
    from core.engine import Reply

log = logging.getLogger(__name__)

H = TypeVar("H")  # a platform's handle of a sent message

FIRST = 0  # a reply's first visible text
FINAL = 1  # the write that completes a message (its whole text, its button), or a continuation message
GREETING_GAP = "\n\n"  # between a greeting and the reply that rides in the same message


def first_shown(reply: "Reply", platform: str) -> None:
    """The person can now see the first text of ``reply``: measure the time since their message (once)."""
    if reply.shown:
        return
    reply.shown = True
    if reply.arrived_at is not None:
        observe.metrics.first_text(platform, max(0.0, time.time() - reply.arrived_at))


async def greeting_first(reply: "Reply") -> AsyncIterator[str]:
    """The reply's deltas; on first contact the character's greeting comes first, in the same text
    (it rides in the reply's first message and counts against the room's budget like any write)."""
    async for delta in reply:
        if reply.greeting is not None:
            greeting, reply.greeting = reply.greeting, None
            yield greeting.rstrip() + GREETING_GAP
        yield delta


class EditBudget:
    """One rate-limit bucket: at most ``count`` writes per ``per`` seconds (and per each of ``also``'s
    windows), granted in priority order (lower first, then first come).

    ``follow(unstarted)`` (optional) reads the platform's own account of the bucket: None while it
    has none, else ``(wait, free)``: how long until one more write fits, and how many fit now, given
    ``unstarted`` writes granted here whose requests have not started yet (a writer calls
    ``started()`` as its request goes out). The windows above stay as the conservative bound: the
    platform's account can hold writes back (a smaller or longer bucket, a reset still ahead), never
    let more through.
    """

    def __init__(
        self,
        count: int,
        per: float,
        *,
        also: tuple[tuple[int, float], ...] = (),
        follow: Callable[[int], tuple[float, int] | None] | None = None,
        margin: float = 0.0,
    ) -> None:
        self.count, self.per = count, per
        self.windows = [(count, per), *also]
        self.follow = follow
        self.margin = margin  # waited on top of a window: a request reaches the platform a little after it is counted here
        self._times: deque[float] = deque()
        self._longest = max(w for _, w in self.windows)
        self._waiters: list[tuple[int, int, asyncio.Future[float]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self.unstarted = 0  # granted, request not yet gone out (only counted with ``follow``)

    def _prune(self, now: float) -> None:
        while self._times and now - self._times[0] >= self._longest + self.margin:
            self._times.popleft()

    def _platform(self) -> tuple[float, int] | None:
        return self.follow(self.unstarted) if self.follow is not None else None

    def wait_time(self) -> float:
        """Seconds until one more write fits (0.0: now)."""
        platform = self._platform()
        now = time.monotonic()
        self._prune(now)
        wait = 0.0
        times = list(self._times)
        for count, per in self.windows:
            inside = [t for t in times if now - t < per + self.margin]
            if len(inside) >= count:
                wait = max(wait, per - (now - inside[-count]) + self.margin)
        # The platform's account can only hold writes back: right after a window resets, a library
        # that has not heard back from every request in flight counts more room than there is.
        return wait if platform is None else max(wait, platform[0])

    def free(self) -> int:
        """Writes the bucket still has room for now."""
        platform = self._platform()
        now = time.monotonic()
        own = self.count - sum(1 for t in self._times if now - t < self.per + self.margin)
        return own if platform is None else min(own, platform[1])

    def _count(self) -> float:
        stamp = time.monotonic()
        self._times.append(stamp)
        if self.follow is not None:
            self.unstarted += 1
        return stamp

    def restamp(self, stamp: float) -> None:
        """A write granted at ``stamp`` goes out only now (it waited for more text): count it from now."""
        with contextlib.suppress(ValueError):  # gone: it left every window while it waited (it still counts now)
            self._times.remove(stamp)
        self._times.append(time.monotonic())

    def started(self) -> None:
        """A write granted here has gone out (or will not): the platform's account now holds it."""
        if self.follow is not None and self.unstarted > 0:
            self.unstarted -= 1
            # Looked at once the request has reached the platform's account (it gets there before
            # this task next yields): granting now would count the same room twice.
            asyncio.get_running_loop().call_soon(self._pump)

    @property
    def waiting(self) -> int:
        return sum(1 for *_, f in self._waiters if not f.done())

    def period(self) -> float:
        """The steady spacing of writes this bucket allows (seconds per write)."""
        return max(per / count for count, per in self.windows)

    async def take(self, priority: int = FIRST) -> float:
        """Wait until a write may go out (by priority), and count it; returns when it was counted."""
        if not self._waiters and self.wait_time() <= 0:
            return self._count()
        granted: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), granted))
        self._pump()
        try:
            return await granted
        except asyncio.CancelledError:
            if not granted.done():
                granted.cancel()
            self._pump()
            raise

    def try_take(self, spare: int = 0) -> bool:
        """Count a write now if nobody waits and more than ``spare`` writes would be left; else False."""
        if self.waiting or self.wait_time() > 0 or self.free() <= spare:
            return False
        self._count()
        return True

    def _pump(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            granted = self._waiters[0][2]
            if granted.done():
                heapq.heappop(self._waiters)
                continue
            delay = self.wait_time()
            if delay > 0:
                self._timer = asyncio.get_running_loop().call_later(delay, self._pump)
                return
            heapq.heappop(self._waiters)
            granted.set_result(self._count())


class Room:
    """Where replies are written: its buckets, and the line of replies waiting for their first text.

    ``sends`` counts new messages, ``edits`` edits (the same bucket when the platform counts both
    alike). ``spare``: writes of a bucket kept free for first texts and completing writes (intermediate
    edits only go out above it). ``max_wait_s``: a reply that would wait longer than this for its first
    text is not started (``full``).
    """

    def __init__(self, sends: EditBudget, edits: EditBudget | None = None, *, spare: int = 1, max_wait_s: float = 30.0) -> None:
        self.sends = sends
        self.edits = edits if edits is not None else sends
        self.spare = spare
        self.max_wait_s = max_wait_s
        self.waiting = 0  # replies started here whose first text is not written yet

    def expected_wait(self) -> float:
        """About how long a new reply would wait for its first text, behind the ones already waiting."""
        return max(self.sends.wait_time(), self.waiting * self.sends.period())

    def full(self) -> bool:
        return self.expected_wait() > self.max_wait_s

    def tight(self, bucket: EditBudget) -> bool:
        """Others wait for ``bucket``, or it is below its spare writes: save writes."""
        return bucket.waiting > 0 or bucket.free() < self.spare

    def enter(self) -> Callable[[], None]:
        """A reply starts waiting for its first text; call the result (once or more) when it is written or given up."""
        self.waiting += 1
        left = False

        def leave() -> None:
            nonlocal left
            if not left:
                left = True
                self.waiting -= 1

        return leave


class Typing:
    """One "typing…" indicator for a place, shown while any reply there waits to be written.

    ``show()`` shows it once (the platform shows it for some seconds); it is repeated every
    ``every_s`` and, after a message was written there while others still wait, soon again
    (``nudge``: a platform hides the indicator when the bot writes).
    """

    def __init__(self, show: Callable[[], Awaitable[object]], every_s: float, *, nudge_after_s: float = 1.0) -> None:
        self._show = show
        self.every_s = every_s
        self.nudge_after_s = nudge_after_s
        self.holders = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def hold(self) -> Callable[[], None]:
        """Keep the indicator up until the returned function is called (idempotent)."""
        self.holders += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.holders -= 1
                if self.holders <= 0:
                    self._wake.set()

        return release

    def nudge(self) -> None:
        if self.holders > 0:
            self._wake.set()

    async def _run(self) -> None:
        while self.holders > 0:
            try:
                await self._show()
            except Exception as exc:  # noqa: BLE001 - a lost indicator is not worth a failed reply
                log.debug("typing indicator failed: %s", exc)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.every_s)
            except TimeoutError:
                continue
            if self.holders > 0:
                await asyncio.sleep(self.nudge_after_s)  # a write just hid it: show it again, not at once


class StreamedMessage(Generic[H]):
    """Renders text deltas as one or more messages: the first send, then edits the room can spare.

    ``send(text, final=...)`` posts a new message and returns its handle; ``edit(handle, text,
    final=...)`` replaces its text. ``final`` is True on the write that completes the reply's last
    message (the adapter adds its button there). Past ``limit`` characters the reply continues in a
    new message, cut at a paragraph or sentence end. ``needs_final()``: whether the complete reply
    needs a final write even when its text is already shown (a button to add).
    """

    def __init__(
        self,
        *,
        limit: int,
        send: Callable[..., Awaitable[H]],
        edit: Callable[..., Awaitable[None]],
        interval: float = 1.0,
        budget: EditBudget | None = None,
        room: Room | None = None,
        on_first: Callable[[], None] | None = None,
        halted: Callable[[], bool] | None = None,
        needs_final: Callable[[], bool] | None = None,
        hold_s: float = 3.0,
    ) -> None:
        self.limit = limit
        # True once nothing more may be shown (the reply's turn lost its lock: another replica answers).
        self._halted = halted
        self._on_first = on_first  # told once, when the first message is sent (its text is visible)
        self._send, self._edit = send, edit
        self.interval = interval
        self.room = room if room is not None else (Room(budget, spare=0) if budget is not None else None)
        self._needs_final = needs_final
        self.hold_s = hold_s  # in a tight room, how long a granted first write may wait for the whole reply
        self.handles: list[H] = []
        self.pieces: list[str] = []  # the text each message shows (or will show)
        self._shown: list[str] = []
        self._final_at: int | None = None  # the message whose last write was final
        self._text = ""
        self._changed = asyncio.Event()
        self._done = False
        self.writes = 0

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
        return [p for p in pieces if p.strip()]

    async def _wait_change(self, timeout: float | None) -> None:
        if timeout is not None and timeout <= 0:
            return
        try:
            await asyncio.wait_for(self._changed.wait(), timeout=timeout)
        except TimeoutError:
            pass

    async def _wait_done(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._done and (left := deadline - time.monotonic()) > 0:
            self._changed.clear()
            await self._wait_change(left)

    async def _paint(self) -> None:
        # The first text: as soon as there is some and the room gives this reply its turn.
        while not self._layout() and not self._done:
            self._changed.clear()
            await self._wait_change(None)
        if not self._layout():
            return
        await self._sync(blocking=True, priority=FIRST, once=True)
        last = time.monotonic()
        # While it streams: edits at most once per interval, and only writes the room can spare.
        while not self._done:
            wait = self.interval - (time.monotonic() - last)
            if wait > 0:
                self._changed.clear()
                await self._wait_change(wait)
                continue
            self._changed.clear()
            if self._pending() is None:
                await self._wait_change(None)
            elif await self._sync(blocking=False, priority=FINAL, once=True):
                last = time.monotonic()
            else:
                await self._wait_done(self.interval)  # the room has nothing to spare: try again later
        await self._sync(blocking=True, priority=FINAL)

    def _pending(self) -> int | None:
        """The first message that needs a write now, or None."""
        if self._halted is not None and self._halted():
            return None
        pieces = self._layout()
        for i, piece in enumerate(pieces):
            if i >= len(self.handles) or self._shown[i] != piece:
                return i
        last = len(pieces) - 1
        if self._done and pieces and self._final_at != last and self._needs_final is not None and self._needs_final():
            return last
        return None

    async def _sync(self, *, blocking: bool, priority: int, once: bool = False) -> bool:
        """Write every message that needs it (``once``: one write); the text of each write is taken
        once its slot is granted. Not ``blocking``: only writes the room can spare, stopping at the
        first it cannot. False if nothing was written."""
        wrote = False
        while (i := self._pending()) is not None:
            room = self.room
            bucket = None if room is None else (room.edits if i < len(self.handles) else room.sends)
            if room is not None and bucket is not None:
                if not blocking:
                    if not bucket.try_take(room.spare):
                        return wrote
                else:
                    first = not self.handles
                    stamp = await bucket.take(FIRST if first else priority)
                    if first and not self._done and room.tight(bucket):
                        # A busy room: spend this one write on as much of the reply as can come soon.
                        await self._wait_done(self.hold_s)
                        bucket.restamp(stamp)  # it goes out now, not when it was granted
            try:
                if self._halted is not None and self._halted():
                    return wrote
                pieces = self._layout()  # the newest text, now that it is this write's turn
                if i >= len(pieces):
                    continue
                piece = pieces[i]
                final = self._done and i == len(pieces) - 1
                if i < len(self.handles):
                    write: Awaitable[object] = self._edit(self.handles[i], piece, final=final)
                else:
                    write = self._send(piece, final=final)
            finally:
                if bucket is not None:
                    bucket.started()  # the request goes out now (the platform's account takes it from here)
            if i < len(self.handles):
                await write
                self._shown[i] = piece
            else:
                self.handles.append(await write)  # type: ignore[arg-type]
                self._shown.append(piece)
                if self._on_first is not None:
                    on_first, self._on_first = self._on_first, None
                    on_first()
            if final:
                self._final_at = i
            self.writes += 1
            wrote = True
            self.pieces = list(self._shown)
            if once:
                break
        self.pieces = list(self._shown)
        return wrote
