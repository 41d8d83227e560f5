"""A loop that survives passing faults stops when cancelled, even if the cancellation comes out of a
library call as another error (as asyncpg's and redis-py's can under load), or not at all."""

from __future__ import annotations

import asyncio
from typing import Callable

from bots import recovering


class _Engine:
    class config:
        turn_deadline_s = 1.0

    cache = None


async def _sweeps_after_cancelling(monkeypatch, on_cancel: Callable[[], None]) -> int:
    """Run the recovery loop (sweeping without pause), cancel it in its second sweep, where the
    cancellation goes through ``on_cancel``; returns how many sweeps ran once the loop ended (or
    gave up waiting for it: a bound for the failing case, not a measure of speed)."""
    calls = 0
    inside = asyncio.Event()

    async def recover_once(*args, **kwargs) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            return  # the start-up pass
        inside.set()
        try:
            await asyncio.Event().wait()  # a query or delivery the cancellation meets mid-way
        except asyncio.CancelledError:
            on_cancel()

    monkeypatch.setattr(recovering, "recover_once", recover_once)
    task = asyncio.create_task(recovering.keep_recovering(_Engine(), "telegram", lambda turn: None, sweep_s=0))
    await inside.wait()
    task.cancel()
    await asyncio.wait({task}, timeout=10)
    assert task.done(), f"the loop went on after its cancellation ({calls} passes)"
    assert task.cancelled()
    return calls


async def test_the_recovery_loop_stops_when_its_cancellation_comes_back_as_another_error(monkeypatch) -> None:
    def turned_into_an_error() -> None:
        raise RuntimeError("connection was closed in the middle of operation")

    assert await _sweeps_after_cancelling(monkeypatch, turned_into_an_error) == 2  # it did not go round again


async def test_the_recovery_loop_stops_when_something_inside_swallowed_its_cancellation(monkeypatch) -> None:
    """The hang a loaded run showed: the sweep's cancellation met a delivery that ate it, the sweep
    returned normally, and the loop went back to sleep with its task still cancelling, for ever."""
    assert await _sweeps_after_cancelling(monkeypatch, lambda: None) == 2
