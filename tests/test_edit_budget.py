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

    async def send(text: str) -> int:
        writes.append(text)
        sent.set()
        return 1

    async def edit(handle: int, text: str) -> None:
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

    async def send(text: str) -> int:
        writes.append(text)
        return 1

    async def edit(handle: int, text: str) -> None:
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
