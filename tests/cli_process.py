"""Run the real ``personae`` command line in a child process, with a clean PERSONAE_ environment."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUARD_S = 180  # only so that a hung child fails the test instead of hanging the run
_INFO = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ INFO ")


@dataclass
class Finished:
    code: int
    output: str  # stdout and stderr, interleaved as written

    @property
    def lines(self) -> list[str]:
        """What the person has to read: every line but the INFO progress lines `personae run` logs."""
        return [line for line in self.output.splitlines() if line.strip() and not _INFO.match(line)]


def cli_env(home: Path, **settings: str) -> dict[str, str]:
    """The parent's environment without PERSONAE_ variables, a private data folder (where the default
    SQLite file goes), and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONAE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        HOME=str(home),
        XDG_DATA_HOME=str(home / "data"),
    )
    env.update(settings)
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bots.cli", *args]


async def personae(*args: str, home: Path, **settings: str) -> Finished:
    """Run ``personae ARGS`` to the end (stdin closed, working folder ``home``: no .env file is read)."""
    home.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        *command(*args),
        env=cli_env(home, **settings),
        cwd=home,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), GUARD_S)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"personae {' '.join(args)} did not finish")
    return Finished(proc.returncode if proc.returncode is not None else -1, out.decode("utf-8", "replace"))
