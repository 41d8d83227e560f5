"""The bots' heartbeat: a file ``personae run`` rewrites while every adapter is connected.

A container health check cannot ask a Discord or Telegram connection how it is; it can read a file.
Each adapter calls ``watch`` when it starts, with a probe that says whether it is connected now, and
``unwatch`` when it stops. While any adapter is watched, a task writes the current time to
``PERSONAE_HEARTBEAT_FILE`` every ``INTERVAL_S``, but only when every probe says connected;
``personae health`` then finds the file fresh, or stale when one adapter lost its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Callable
from core.cancelled import pause

log = logging.getLogger(__name__)

INTERVAL_S = 5.0
MAX_AGE_S = 30.0  # personae health: older than this is unhealthy (several missed beats)

_probes: dict[str, Callable[[], bool | str]] = {}
_writer: asyncio.Task[None] | None = None


def watch(name: str, probe: Callable[[], bool | str], path: Path, *, interval_s: float = INTERVAL_S) -> None:
    """Count adapter ``name`` as connected only while ``probe()`` is true; beat into ``path``. A
    probe may answer a string instead of False: why it is down (named next to it).

    Adapters register before they connect, so a beat is never written while one is still starting.
    """
    global _writer
    _probes[name] = probe
    if _writer is None or _writer.done():
        # A beat left by an earlier run must not count for this one. One unlink, once per start:
        # done here rather than in the task so that no beat of this run can race it.
        _forget(path)
        _writer = asyncio.get_running_loop().create_task(_beat_forever(path, interval_s))


def unwatch(name: str) -> None:
    """Forget adapter ``name`` (it stopped); the last one stops the beating."""
    global _writer
    _probes.pop(name, None)
    if not _probes and _writer is not None:
        _writer.cancel()
        _writer = None


def watched() -> list[str]:
    """The names of the adapters watched now (started and not stopped)."""
    return list(_probes)


def not_connected() -> list[str]:
    """The names of watched adapters that are not connected now (empty: all are), each with why when
    its probe says."""
    down = []
    for name, probe in list(_probes.items()):
        try:
            ok = probe()
        except Exception:  # noqa: BLE001 - a probe that fails counts as down
            ok = False
        if isinstance(ok, str):
            down.append(f"{name} ({ok})")
        elif not ok:
            down.append(name)
    return down


async def beat(path: Path) -> list[str]:
    """Write one beat if adapters are watched and all say connected; return the ones that are down."""
    down = not_connected() if _probes else ["none watched"]
    if not down:
        try:
            await asyncio.to_thread(_write, path)
        except OSError as exc:
            log.warning("cannot write the heartbeat file %s (PERSONAE_HEARTBEAT_FILE): %s", path, exc)
    return down


async def _beat_forever(path: Path, interval_s: float) -> None:
    was_down: list[str] | None = None
    while True:
        down = await beat(path)
        if was_down is not None and down != was_down:
            log.info("heartbeat: %s", "all adapters connected" if not down else f"not connected: {', '.join(down)}")
        was_down = down
        await pause(interval_s)


def _forget(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _write(path: Path) -> None:
    # Write and rename, so a reader never sees half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{time.time():.3f}\n")
    os.replace(tmp, path)


def age(path: Path) -> float | None:
    """Seconds since the last beat written to ``path``, None if there is none."""
    try:
        written = float(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return max(0.0, time.time() - written)
