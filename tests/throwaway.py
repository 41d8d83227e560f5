"""Servers a test may stop, kill or freeze (its own Redis and PostgreSQL) and ``personae run`` itself.

The machine's shared servers (PostgreSQL on 5432, Redis on 6379) are never touched: each server here
has its own port, its own temporary directory (data, socket, log) and is gone when its ``with``
block ends, even after a failure. When the tests run as root, PostgreSQL (which refuses to run as
root) runs as an unprivileged user (``PERSONAE_TEST_PG_USER``, default ``nobody``) that owns the
temporary directory.

    with ThrowawayRedis() as redis, ThrowawayPostgres() as pg:
        url = pg.create_database("scenario")   # postgresql://postgres@127.0.0.1:PORT/scenario
        redis.freeze(); redis.thaw(); redis.kill(); redis.start()
        pg.stop(); pg.start()

Their methods block (process start and stop take tens of milliseconds to a few seconds); inside an
event loop use ``throwaway_postgres()`` and ``throwaway_redis()``, whose handles have async methods.
``PersonaeProcess`` runs ``python -m bots.cli run`` (or another command) as a child process.
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
import time
from pathlib import Path
from typing import AsyncIterator, Mapping

REPO = Path(__file__).resolve().parent.parent
SHARED_PORTS = {5432, 6379}  # the machine's own servers: never ours to start, stop or kill
_START_TIMEOUT_S = 30.0


class ThrowawayError(RuntimeError):
    """A throwaway server could not be started (binary missing, port taken, start timed out)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (never one of the shared servers' ports)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in SHARED_PORTS:
            return port


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(condition, what: str, timeout: float = _START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ThrowawayError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class ThrowawayRedis:
    """A ``redis-server`` child process with no persistence, on a free port, in its own directory."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="personae-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "ThrowawayRedis":
        """Start the server (again, on the same port after ``kill``); returns when it accepts connections."""
        if not os.path.exists(self.binary):
            raise ThrowawayError(f"redis-server not found at {self.binary}: install redis-server")
        if self.process is not None and self.process.poll() is None:
            return self
        log = open(self.dir / "redis.log", "ab")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--daemonize", "no", "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir,
        )
        log.close()
        process = self.process
        _wait(lambda: process.poll() is not None or _port_open(self.port), f"redis-server on port {self.port}")
        if process.poll() is not None:
            raise ThrowawayError(f"redis-server exited with status {process.returncode}: {self._log_tail()}")
        return self

    def kill(self) -> None:
        """SIGKILL the server: every key is gone (no persistence)."""
        if self.process is not None and self.process.poll() is None:
            if self.frozen:
                self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)
        self.frozen = False

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (what a stalled server looks like)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT after ``freeze``."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.frozen = False

    def close(self) -> None:
        """Kill the server and delete its directory."""
        try:
            self.kill()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            return (self.dir / "redis.log").read_text(errors="replace")[-500:]
        except OSError:
            return ""

    def __enter__(self) -> "ThrowawayRedis":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


def _postgres_bin() -> Path:
    """The newest PostgreSQL server binaries: PERSONAE_TEST_PG_BIN, /usr/lib/postgresql/*/bin, or the PATH."""
    configured = os.environ.get("PERSONAE_TEST_PG_BIN")
    if configured:
        return Path(configured)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise ThrowawayError("PostgreSQL's initdb was not found: install postgresql or set PERSONAE_TEST_PG_BIN")


class ThrowawayPostgres:
    """A PostgreSQL cluster (initdb + pg_ctl) in a temporary directory, on a free port, trust auth.

    Its unix socket lives in the same directory, so it never collides with the machine's server.
    """

    def __init__(self, *, run_as: str | None = None) -> None:
        self.bin = _postgres_bin()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="personae-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.run_as = run_as if run_as is not None else (os.environ.get("PERSONAE_TEST_PG_USER", "nobody") if os.geteuid() == 0 else "")
        self._initialised = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.dir, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise ThrowawayError(f"{args[0]} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-500:]} {self._log_tail()}")
        return done

    def start(self) -> "ThrowawayPostgres":
        """Create the cluster the first time, then start the server; returns when it accepts connections."""
        if not self._initialised:
            if self.run_as:
                import pwd

                entry = pwd.getpwnam(self.run_as)
                os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C")
            self._initialised = True
        # fsync=off only spares the disk: a killed server loses nothing the OS has. synchronous_commit
        # stays on: with it off, a commit acknowledged just before an immediate stop could vanish,
        # which no real server does.
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
            "-c fsync=off -c full_page_writes=off -c max_connections=60"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start", timeout=90)
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: clients are disconnected; ``immediate``: like a crash)."""
        if self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", timeout=90, check=False)

    def running(self) -> bool:
        return self._initialised and (self.data / "postmaster.pid").exists() and _port_open(self.port)

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = self._run("psql", "-h", str(self.dir), "-p", str(self.port), "-U", "postgres", "-d", database,
                         "-v", "ON_ERROR_STOP=1", "-At", "-c", sql)
        return done.stdout.strip()

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database, empty or a copy of ``template`` (which must have no connections); returns its URL."""
        self.psql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def close(self) -> None:
        """Stop the server (immediately) and delete the cluster."""
        try:
            if self._initialised:
                self.stop("immediate")
                self._kill_leftover()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_leftover(self) -> None:
        """If pg_ctl could not stop it, kill the postmaster named in its pid file."""
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-500:]
        except OSError:
            return ""

    def __enter__(self) -> "ThrowawayPostgres":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the same servers from async code -----------------------------------------------------------


class RunningPostgres:
    """A started ThrowawayPostgres as seen from an event loop: its URL and async stop and start."""

    def __init__(self, server: ThrowawayPostgres) -> None:
        self.server = server

    @property
    def url(self) -> str:
        """The ``postgres`` database, with the async driver."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.server.port}/postgres"

    async def create_database(self, name: str) -> str:
        return await asyncio.to_thread(self.server.create_database, name)

    async def stop(self, mode: str = "immediate") -> None:
        """Stop the server (default: at once, connections cut, as when the database host goes down)."""
        await asyncio.to_thread(self.server.stop, mode)

    async def start(self) -> None:
        await asyncio.to_thread(self.server.start)


@contextlib.asynccontextmanager
async def throwaway_postgres() -> AsyncIterator[RunningPostgres]:
    """A started, empty PostgreSQL of the test's own; removed afterwards."""
    server = ThrowawayPostgres()
    try:
        await asyncio.to_thread(server.start)
        yield RunningPostgres(server)
    finally:
        await asyncio.to_thread(server.close)


class RunningRedis:
    """A started ThrowawayRedis as seen from an event loop."""

    def __init__(self, server: ThrowawayRedis) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    def freeze(self) -> None:
        self.server.freeze()

    def thaw(self) -> None:
        self.server.thaw()

    async def kill(self) -> None:
        await asyncio.to_thread(self.server.kill)

    async def start(self) -> None:
        await asyncio.to_thread(self.server.start)


@contextlib.asynccontextmanager
async def throwaway_redis() -> AsyncIterator[RunningRedis]:
    """A started redis-server of the test's own, without persistence; killed and removed afterwards."""
    server = ThrowawayRedis()
    try:
        await asyncio.to_thread(server.start)
        yield RunningRedis(server)
    finally:
        await asyncio.to_thread(server.close)


# -- personae itself ----------------------------------------------------------------------------


class PersonaeProcess:
    """``python -m bots.cli run`` (or other arguments) as a child process in its own session.

    Its environment is this one without any ``PERSONAE_*`` variable, plus ``env``; it runs in a
    directory of its own (no ``.env`` file is read); its output goes to a log file that ``log``
    and ``tail`` read. It can be started again after it exited or was killed (the log goes on).
    """

    def __init__(self, env: Mapping[str, str], *args: str, verbose: bool = True) -> None:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("PERSONAE_")}
        self.env = {**inherited, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **env}
        self.args = (args or ("run",)) + (("--verbose",) if verbose and (args or ("run",))[0] == "run" else ())
        self.dir = Path(tempfile.mkdtemp(prefix="personae-process-"))
        self.log_path = self.dir / "personae.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        if self.alive:
            raise RuntimeError("personae is already running")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {self.starts}: {' '.join(self.args)} ---\n".encode())
            log.flush()
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bots.cli", *self.args, cwd=self.dir, env=self.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, chars: int = 3000) -> str:
        return self.log[-chars:]

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(sig)

    async def wait(self, timeout: float = 60.0) -> int:
        """The exit status; TimeoutError if it still runs after ``timeout`` seconds."""
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def kill(self) -> None:
        """SIGKILL the process (and reap it); the log stays."""
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            await self.proc.wait()

    async def close(self) -> None:
        """Kill the process if it runs and delete its directory and log."""
        try:
            await self.kill()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
