"""The bots' heartbeat: a file ``personae run`` rewrites while every adapter is connected.

A container health check cannot ask a Discord or Telegram connection how it is; it can read a file.
``Heartbeat.run`` writes the current time to ``PERSONAE_HEARTBEAT_FILE`` every ``interval_s`` as long
as every adapter that registered a probe (``watch``) says it is connected, and stops writing when one
does not; ``personae health`` then finds the file stale and exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

INTERVAL_S = 5.0
MAX_AGE_S = 30.0  # personae health: older than this is unhealthy (several missed beats)

_probes: dict[str, Callable[[], bool]] = {}


def watch(name: str, probe: Callable[[], bool]) -> None:
    """Count adapter ``name`` as connected only while ``probe()`` is true (replaces an earlier probe)."""
    _probes[name] = probe


def unwatch(name: str) -> None:
    """Forget adapter ``name`` (it stopped)."""
    _probes.pop(name, None)


def not_connected() -> list[str]:
    """The names of watched adapters that are not connected now (empty: all are)."""
    down = []
    for name, probe in list(_probes.items()):
        try:
            ok = bool(probe())
        except Exception:  # noqa: BLE001 - a probe that fails counts as down
            ok = False
        if not ok:
            down.append(name)
    return down


def _forget(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _write(path: Path) -> None:
    # Write and rename, so a reader never sees half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{time.time():.3f}\n")
    os.replace(tmp, path)


async def beat(path: Path, *, adapters: int) -> list[str]:
    """Write one beat if ``adapters`` probes are registered and all say connected; return what is down."""
    down = not_connected()
    if len(_probes) < adapters:
        down = down or ["starting"]
    if not down:
        try:
            await asyncio.to_thread(_write, path)
        except OSError as exc:
            log.warning("cannot write the heartbeat file %s (PERSONAE_HEARTBEAT_FILE): %s", path, exc)
    return down


async def run(path: Path, *, interval_s: float = INTERVAL_S, adapters: int) -> None:
    """Beat every ``interval_s`` until cancelled."""
    await asyncio.to_thread(_forget, path)  # a beat from an earlier run must not count for this one
    was_down: list[str] | None = None
    while True:
        down = await beat(path, adapters=adapters)
        if was_down is not None and down != was_down:
            log.info("heartbeat: %s", "all adapters connected" if not down else f"not connected: {', '.join(down)}")
        was_down = down
        await asyncio.sleep(interval_s)


def age(path: Path) -> float | None:
    """Seconds since the last beat written to ``path``, None if there is none."""
    try:
        written = float(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return max(0.0, time.time() - written)
