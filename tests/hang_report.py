"""A pytest plugin: a test still running a minute before its timeout (pytest-timeout's ``timeout``)
writes the stack of every asyncio task to stderr, so the failure report shows where it waits. The
timeout's own report shows only threads, and a hung asyncio test waits in the loop's select."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading

import pytest


def _write_tasks(nodeid: str) -> None:
    for loop in [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)]:
        if loop.is_running():
            loop.call_soon_threadsafe(_print_tasks, loop, nodeid)


def _print_tasks(loop: asyncio.AbstractEventLoop, nodeid: str) -> None:
    out = sys.__stderr__ or sys.stderr
    out.write(f"\n=== {nodeid} still runs: its asyncio tasks ===\n")
    for task in asyncio.all_tasks(loop):
        out.write(f"\n--- {task!r}\n")
        task.print_stack(limit=40, file=out)
    out.flush()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    try:
        timeout = float(item.config.getini("timeout") or 0)
    except ValueError:  # pytest-timeout not installed
        timeout = 0.0
    timer = None
    if timeout > 120:
        timer = threading.Timer(timeout - 60, _write_tasks, args=(item.nodeid,))
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
