"""A loop that survives passing faults must still stop when its task is cancelled."""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` when the running task has been asked to stop.

    Under load, a cancellation that meets a database or cache call mid-way can come out of the
    library as another error (or not at all); a loop's ``except Exception`` would take it for a
    passing fault and go on for ever, and whoever waits for the task to end would wait with it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def pause(seconds: float) -> None:
    """``asyncio.sleep`` for a loop that runs until cancelled: a cancellation something inside the
    loop swallowed (the task still cancelling) ends the loop here instead of sleeping through it."""
    raise_if_cancelled()
    await asyncio.sleep(seconds)
