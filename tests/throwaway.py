"""Servers a test may stop, kill or freeze: its own PostgreSQL and Redis, and ``personae run`` itself.

The shared PostgreSQL and Redis of the machine are never touched by these: each server here runs
from a temporary directory on a free port of 127.0.0.1 and is gone when its block ends. PostgreSQL
refuses to run as root, so as root it runs as ``nobody``.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import AsyncIterator, Mapping

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise FileNotFoundError(f"{name} (PostgreSQL's server tools) is not installed")
    return found


async def _run(*argv: str, user: str | None = None) -> None:
    if user is not None:
        argv = ("runuser", "-u", user, "--", *argv)
    proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {out.decode(errors='replace')[-2000:]}")


class ThrowawayPostgres:
    """A PostgreSQL cluster of the test's own (trust auth, user ``postgres``), stoppable and restartable."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="personae-pg-"))
        self.data = self.dir / "data"
        self.user = "nobody" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    async def init(self) -> None:
        if self.user is not None:
            shutil.chown(self.dir, self.user)
        await _run(_postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", user=self.user)

    async def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        await _run(
            _postgres_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start",
            user=self.user,
        )

    async def stop(self) -> None:
        """Stop the server at once (connections are cut, as in a crash of the database host)."""
        await _run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", user=self.user)

    async def remove(self) -> None:
        with contextlib.suppress(RuntimeError):
            await self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def throwaway_postgres() -> AsyncIterator[ThrowawayPostgres]:
    """A started, empty PostgreSQL of the test's own; removed afterwards."""
    server = ThrowawayPostgres()
    try:
        await server.init()
        await server.start()
        yield server
    finally:
        await server.remove()


class ThrowawayRedis:
    """A redis-server of the test's own, without persistence: kill, freeze (SIGSTOP) and thaw it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            await self.proc.wait()


@contextlib.asynccontextmanager
async def throwaway_redis() -> AsyncIterator[ThrowawayRedis]:
    server = ThrowawayRedis()
    try:
        await server.start()
        yield server
    finally:
        await server.kill()


class PersonaeProcess:
    """``personae run`` (or another command) in a subprocess, with its log kept for assertions."""

    def __init__(self, env: Mapping[str, str], *args: str) -> None:
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **env}
        self.args = args or ("run",)
        self.log_path = Path(tempfile.mkstemp(prefix="personae-run-", suffix=".log")[1])
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bots.cli", *self.args, "--verbose", cwd=REPO, env=self.env,
                stdout=log, stderr=subprocess.STDOUT,
            )
        finally:
            log.close()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self.log_path.unlink(missing_ok=True)
