"""Pacing in bots/streaming.py on a clock the test moves: ``EditBudget``, the sliding window over sends
and edits, and ``StreamedMessage``'s wait between edits. The mutation run (docs/testing.md) found that
waiting too long (from the newest send instead of the oldest, or a whole interval more) went unnoticed,
since the adapters' pacing tests only see that writes are never too close."""

from __future__ import annotations

import asyncio
import types

import pytest

from bots import streaming
from bots.streaming import EditBudget


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(streaming, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    return now


async def test_the_wait_runs_until_the_oldest_send_leaves_the_window(clock: list[float]) -> None:
    budget = EditBudget(2, 5.0)
    await budget.take()  # at 100
    clock[0] = 101.0
    await budget.take()
    clock[0] = 102.0
    assert budget.wait_time() == pytest.approx(3.0)  # the one at 100 leaves at 105
    clock[0] = 105.0
    assert budget.wait_time() == 0.0
    await budget.take()  # at 105: the window now holds 101 and 105
    clock[0] = 105.5
    assert budget.wait_time() == pytest.approx(0.5)


async def test_under_the_count_there_is_no_wait(clock: list[float]) -> None:
    budget = EditBudget(3, 5.0)
    await budget.take()
    await budget.take()
    assert budget.wait_time() == 0.0
    await budget.take()
    assert budget.wait_time() == pytest.approx(5.0)


async def test_an_edit_goes_out_at_once_when_the_interval_has_passed(clock: list[float]) -> None:
    """``StreamedMessage`` waits only for what is left of the interval since its last write (a mutant
    that always waited a whole interval more survived the adapters' tests, which check only that
    writes are never too close)."""
    import asyncio

    from bots.streaming import StreamedMessage

    sent, edited = asyncio.Event(), asyncio.Event()
    writes: list[str] = []

    async def send(text: str, **_: object) -> int:
        writes.append(text)
        sent.set()
        return 1

    async def edit(handle: int, text: str, **_: object) -> None:
        writes.append(text)
        edited.set()

    async def deltas():
        yield "Hello"
        await sent.wait()
        clock[0] += 1000.0  # the whole interval has passed since the send
        yield " there"
        await asyncio.wait_for(edited.wait(), 10)  # bounded: a reply still waiting out an interval fails here

    shown = StreamedMessage(limit=2000, send=send, edit=edit, interval=1000.0)
    await shown.run(deltas())
    assert writes == ["Hello", "Hello there"]


async def test_a_halted_reply_is_edited_no_further() -> None:
    """Once its turn lost the conversation's lock (another replica answers), a reply shows nothing more."""
    from bots.streaming import StreamedMessage

    writes: list[str] = []
    halted = False

    async def send(text: str, **_: object) -> int:
        writes.append(text)
        return 1

    async def edit(handle: int, text: str, **_: object) -> None:
        writes.append(text)

    async def deltas():
        nonlocal halted
        yield "Hello"
        while not writes:
            await asyncio.sleep(0)
        yield " there, never stored"
        halted = True

    shown = StreamedMessage(limit=2000, send=send, edit=edit, interval=0.0, halted=lambda: halted)
    await shown.run(deltas())
    assert writes == ["Hello"]


class Held(EditBudget):
    """A bucket the test opens: closed, every write waits (as in a room whose budget is spent)."""

    def __init__(self) -> None:
        super().__init__(100, 5.0, follow=lambda unstarted: None if self.open else (3600.0, 0))
        self.open = False
        self.queued = 0
        self.queued_event = asyncio.Event()

    async def take(self, priority: int = streaming.FIRST) -> None:
        if not self.open:
            self.queued += 1
            self.queued_event.set()
        await super().take(priority)

    def release(self) -> None:
        self.open = True
        self._pump()


async def test_a_first_text_is_written_before_other_replies_completing_edits() -> None:
    budget = Held()
    order: list[str] = []

    async def write(name: str, priority: int) -> None:
        await budget.take(priority)
        order.append(name)

    tasks = [asyncio.create_task(write("final-1", streaming.FINAL)), asyncio.create_task(write("final-2", streaming.FINAL))]
    tasks.append(asyncio.create_task(write("first", streaming.FIRST)))
    while budget.queued < 3:
        budget.queued_event.clear()
        await asyncio.wait_for(budget.queued_event.wait(), 10)
    budget.release()
    await asyncio.gather(*tasks)
    assert order == ["first", "final-1", "final-2"]


async def test_edits_that_may_be_skipped_go_out_only_above_the_spare_writes(clock: list[float]) -> None:
    budget = EditBudget(3, 5.0)
    assert budget.try_take(spare=1)  # 3 free
    assert budget.try_take(spare=1)  # 2 free
    assert not budget.try_take(spare=1)  # 1 free: kept for a first text or a completing write
    await budget.take()  # which still gets it
    assert budget.wait_time() > 0


async def test_a_reply_that_waited_for_its_turn_writes_the_newest_text_once() -> None:
    """The room's budget is spent when the reply's first text arrives: by the time its turn comes the
    reply is complete, and it goes out in one write with its whole text, marked final (the button
    rides on it). Before, the text chosen before the wait was written, then a second write followed."""
    from bots.streaming import Room, StreamedMessage

    budget = Held()
    writes: list[tuple[str, str, bool]] = []

    async def send(text: str, *, final: bool = False) -> int:
        writes.append(("send", text, final))
        return 1

    async def edit(handle: int, text: str, *, final: bool = False) -> None:
        writes.append(("edit", text, final))

    async def deltas():
        yield "Hello"
        await asyncio.wait_for(budget.queued_event.wait(), 10)  # the first write waits for its turn
        yield " there,"
        yield " friend."
        asyncio.get_running_loop().call_soon(budget.release)  # its turn comes once the reply is complete

    shown = StreamedMessage(limit=2000, send=send, edit=edit, interval=0.0, room=Room(budget), needs_final=lambda: True)
    await shown.run(deltas())
    assert writes == [("send", "Hello there, friend.", True)]


async def test_the_write_that_completes_a_reply_carries_its_button() -> None:
    """The last text edit is the final one (no edit of its own for the button)."""
    from bots.streaming import StreamedMessage

    writes: list[tuple[str, str, bool]] = []
    sent = asyncio.Event()

    async def send(text: str, *, final: bool = False) -> int:
        writes.append(("send", text, final))
        sent.set()
        return 1

    async def edit(handle: int, text: str, *, final: bool = False) -> None:
        writes.append(("edit", text, final))

    async def deltas():
        yield "Hello"
        await asyncio.wait_for(sent.wait(), 10)
        yield " there"

    shown = StreamedMessage(limit=2000, send=send, edit=edit, interval=1000.0, needs_final=lambda: True)
    await shown.run(deltas())
    assert writes == [("send", "Hello", False), ("edit", "Hello there", True)]


async def test_a_complete_reply_whose_text_is_shown_still_gets_its_final_write() -> None:
    from bots.streaming import StreamedMessage

    writes: list[tuple[str, str, bool]] = []
    sent = asyncio.Event()

    async def send(text: str, *, final: bool = False) -> int:
        writes.append(("send", text, final))
        sent.set()
        return 1

    async def edit(handle: int, text: str, *, final: bool = False) -> None:
        writes.append(("edit", text, final))

    async def deltas():
        yield "Hello"
        await asyncio.wait_for(sent.wait(), 10)

    shown = StreamedMessage(limit=2000, send=send, edit=edit, interval=1000.0, needs_final=lambda: True)
    await shown.run(deltas())
    assert writes == [("send", "Hello", False), ("edit", "Hello", True)]


async def test_the_platforms_account_of_a_bucket_can_hold_writes_back(clock: list[float]) -> None:
    """Discord's bucket (as discord.py read it) is followed once known, counting the writes granted
    but not yet sent; the conservative window stays the upper bound."""
    platform: dict[str, int] = {}

    def follow(unstarted: int) -> tuple[float, int] | None:
        if "remaining" not in platform:
            return None
        free = platform["remaining"] - unstarted
        return (0.0, free) if free > 0 else (2.0, 0)

    budget = EditBudget(5, 5.0, follow=follow)
    platform["remaining"] = 2  # Discord said: 2 more in this window
    await budget.take()
    budget.started()
    platform["remaining"] = 1  # it reached discord.py, which counted it
    await budget.take()  # granted, not yet sent
    assert budget.free() == 0 and budget.wait_time() == 2.0  # the window would allow 3 more: the platform says no
    platform["remaining"] = 10
    assert budget.free() == 3  # and never more than the window


async def test_a_write_that_waited_past_the_window_still_counts_when_it_goes_out(clock: list[float]) -> None:
    budget = EditBudget(1, 5.0)
    stamp = await budget.take()  # granted at 100, then it waits for more text
    clock[0] = 106.0
    assert budget.wait_time() == 0.0  # another writer looks: the grant has left the window
    budget.restamp(stamp)
    assert budget.wait_time() == pytest.approx(5.0)  # it went out at 106: the next one waits until 111
