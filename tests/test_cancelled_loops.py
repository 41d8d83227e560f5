"""A loop that survives passing faults stops when cancelled, even if the cancellation comes out of a
library call as another error (as asyncpg's and redis-py's can under load)."""

from __future__ import annotations

import asyncio

from bots import recovering


async def test_the_recovery_loop_stops_when_its_cancellation_comes_back_as_another_error(monkeypatch) -> None:
    calls = 0
    inside = asyncio.Event()

    async def recover_once(*args, **kwargs) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            return  # the start-up pass
        inside.set()
        try:
            await asyncio.Event().wait()  # a query the cancellation meets mid-way
        except asyncio.CancelledError:
            raise RuntimeError("connection was closed in the middle of operation") from None

    class Engine:
        class config:
            turn_deadline_s = 1.0

        cache = None

    monkeypatch.setattr(recovering, "recover_once", recover_once)
    task = asyncio.create_task(recovering.keep_recovering(Engine(), "telegram", lambda turn: None, sweep_s=0))
    await inside.wait()
    task.cancel()
    await asyncio.wait({task}, timeout=10)  # a bound for the failing case, not a measure of speed
    assert task.done(), f"the loop went on after its cancellation ({calls} passes)"
    assert task.cancelled() and calls == 2  # it did not go round again


async def test_the_recovery_loop_stops_when_something_inside_swallowed_its_cancellation(monkeypatch) -> None:
    """The hang a loaded run showed: the sweep's cancellation met a delivery that ate it, the sweep
    returned normally, and the loop went back to sleep with its task still cancelling, for ever."""
    calls = 0
    inside = asyncio.Event()

    async def recover_once(*args, **kwargs) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            return  # the start-up pass
        inside.set()
        try:
            await asyncio.Event().wait()  # a delivery the cancellation meets mid-way
        except asyncio.CancelledError:
            return  # eaten: nothing comes out at all

    class Engine:
        class config:
            turn_deadline_s = 1.0

        cache = None

    monkeypatch.setattr(recovering, "recover_once", recover_once)
    task = asyncio.create_task(recovering.keep_recovering(Engine(), "telegram", lambda turn: None, sweep_s=0))
    await inside.wait()
    task.cancel()
    await asyncio.wait({task}, timeout=10)  # a bound for the failing case, not a measure of speed
    assert task.done(), "the loop went on with its task still cancelling"
    assert task.cancelled() and calls == 2
