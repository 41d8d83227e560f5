"""The embedded defaults end to end: the bundled model's server started by ``open_app``, watched, and
nothing but 127.0.0.1 reached during a chat. Real llama.cpp, real storage (a migrated SQLite file)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from bots.compose import App, open_app
from bots.console.chat import ConsoleChat
from bots.llm.supervised import SupervisedModel
from bots.samples import ensure_samples
from bots.settings import Settings
from core.engine import NOTICE_UNAVAILABLE, ReplyStatus
from core.prompt import estimate_tokens
from storage import migrate
from tests.llama_fixture import require_llama

pytestmark = pytest.mark.llama

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@pytest.fixture
async def embedded_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[App]:
    """``open_app`` on the embedded defaults: no model URL, no Redis, a SQLite file; logs in tmp_path."""
    require_llama()
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # platformdirs' user log dir
    url = f"sqlite+aiosqlite:///{tmp_path / 'personae.db'}"
    await migrate.upgrade(url)
    settings = Settings(_env_file=None, database_url=url, redis_url=None, llm_url=None, max_tokens=48, llm_retries=1)
    async with open_app(settings) as app:
        await ensure_samples(app.store)
        yield app


def model_of(app: App) -> SupervisedModel:
    assert isinstance(app.model, SupervisedModel)
    return app.model


async def turn(chat: ConsoleChat, text: str) -> str:
    out: list[str] = []
    chat.write = out.append
    await chat.say(text)
    return "".join(out)


def failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the engine reported about failed turns (the sentence the person reads), oldest first."""
    return [r.getMessage().partition(": ")[2] for r in caplog.records if r.getMessage().startswith("model failure for ")]


async def test_a_killed_model_server_is_reported_in_one_sentence_and_restarted_once(
    embedded_app: App, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="core.engine")
    model = model_of(embedded_app)
    log_path = model.server.log_path
    assert log_path == tmp_path / "state" / "personae" / "log" / "llama-server.log"
    chat = ConsoleChat(embedded_app, "Elena", lambda text: None)
    await chat.use("Hamlet")

    await turn(chat, "Good evening, my lord.")
    assert chat.last is not None and chat.last.status is ReplyStatus.ANSWERED
    first_pid = model.server.pid

    # Killed between two turns: the next turn says so, in one sentence, and the server comes back.
    os.kill(first_pid, signal.SIGKILL)
    assert await model.count_tokens("To be.") == estimate_tokens("To be.")  # never raises, tells nobody
    shown = await turn(chat, "Are you there?")
    assert chat.last.status is ReplyStatus.FAILED and NOTICE_UNAVAILABLE in shown
    (sentence,) = failures(caplog)
    assert sentence == f"the bundled model stopped (killed by SIGKILL) and is being restarted; its log is {log_path}"

    await turn(chat, "Tell me of Denmark.")
    assert chat.last.status is ReplyStatus.ANSWERED and chat.last.text.strip()
    assert model.server.pid not in (None, first_pid)
    assert len(failures(caplog)) == 1

    # Killed again, this time while a turn waits for it: that turn says it will not be restarted.
    second_pid = model.server.pid
    os.kill(second_pid, signal.SIGSTOP)  # frozen: the turn's request cannot be answered before the kill
    asked = asyncio.Event()
    real_stream = model.stream

    def stream(*args: Any, **kwargs: Any):
        asked.set()
        return real_stream(*args, **kwargs)

    model.stream = stream  # type: ignore[method-assign]
    pending = asyncio.create_task(turn(chat, "Speak!"))
    await asked.wait()
    os.kill(second_pid, signal.SIGKILL)
    shown = await pending
    assert chat.last.status is ReplyStatus.FAILED and NOTICE_UNAVAILABLE in shown
    final = (
        "the bundled model stopped again (killed by SIGKILL) and will not be restarted: restart personae to try "
        f"once more, or set PERSONAE_LLM_URL to use another server; its log is {log_path}"
    )
    assert failures(caplog)[1:] == [final]

    # And it stays down, saying the same.
    await turn(chat, "Hello?")
    assert chat.last.status is ReplyStatus.FAILED
    assert failures(caplog)[1:] == [final, final]
    assert model.deaths == 2 and model.server.pid is not None and model.server.returncode is not None

    for message in failures(caplog):
        assert "(PERSONAE_LLM_URL)" not in message and "refused the connection" not in message
    assert log_path.read_text().count("starting: ") == 2  # the first start and the one restart


async def test_a_model_server_killed_mid_reply_is_reported_and_the_next_turn_is_answered(
    embedded_app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="core.engine")
    model = model_of(embedded_app)
    chat = ConsoleChat(embedded_app, "Elena", lambda text: None)
    await chat.use("Hamlet")
    pid = model.server.pid
    os.kill(pid, signal.SIGSTOP)
    asked = asyncio.Event()
    real_stream = model.stream

    def stream(*args: Any, **kwargs: Any):
        asked.set()
        return real_stream(*args, **kwargs)

    model.stream = stream  # type: ignore[method-assign]
    pending = asyncio.create_task(turn(chat, "Good evening."))
    await asked.wait()
    os.kill(pid, signal.SIGKILL)
    await pending
    assert chat.last.status is ReplyStatus.FAILED
    assert failures(caplog) == [
        f"the bundled model stopped (killed by SIGKILL) and is being restarted; its log is {model.server.log_path}"
    ]
    await turn(chat, "Good evening, again.")
    assert chat.last.status is ReplyStatus.ANSWERED and model.server.pid != pid


async def test_a_restart_that_fails_is_said_once_and_for_good(embedded_app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="core.engine")
    model = model_of(embedded_app)
    chat = ConsoleChat(embedded_app, "Elena", lambda text: None)
    await chat.use("Hamlet")
    model.server.extra_args = ["--n_ctx", "not-a-number"]  # the next start fails
    os.kill(model.server.pid, signal.SIGKILL)
    await turn(chat, "Are you there?")
    await turn(chat, "Hello?")
    await turn(chat, "Anyone?")
    log_path = model.server.log_path
    gone = (
        "the bundled model stopped and could not be restarted: restart personae, or set PERSONAE_LLM_URL "
        f"to use another server; its log is {log_path}"
    )
    assert failures(caplog) == [
        f"the bundled model stopped (killed by SIGKILL) and is being restarted; its log is {log_path}", gone, gone
    ]
    assert "n_ctx" in log_path.read_text()  # why it could not start: the server said so in its log


@contextlib.contextmanager
def only_loopback(monkeypatch: pytest.MonkeyPatch):
    """Refuse, and record, every name lookup and connection to anything but 127.0.0.1/::1/localhost.
    Recorded, because libraries that try the network often swallow the error."""
    attempts: list[str] = []
    real_getaddrinfo, real_connect, real_connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex

    def host_of(address: Any) -> str | None:
        if isinstance(address, tuple) and address:
            host = address[0]
            return host.decode() if isinstance(host, bytes) else str(host)
        return None  # a Unix socket path

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in LOOPBACK:
            attempts.append(f"getaddrinfo {name}")
            raise socket.gaierror(socket.EAI_NONAME, f"blocked by the test: {name}")
        return real_getaddrinfo(host, *args, **kwargs)

    def guarded(real):
        def connect(self, address):
            host = host_of(address)
            if host is not None and host not in LOOPBACK:
                attempts.append(f"connect {address!r}")
                raise ConnectionRefusedError(f"blocked by the test: {address!r}")
            return real(self, address)

        return connect

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", guarded(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guarded(real_connect_ex))
    yield attempts


async def test_a_console_chat_on_the_embedded_defaults_reaches_no_host_but_this_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_llama()
    from huggingface_hub import constants as hub_constants
    from huggingface_hub.utils import _detect_agent

    # Whatever this process or an earlier run already learned from the Hub must not hide a lookup.
    monkeypatch.setattr(_detect_agent, "_registry", None)
    monkeypatch.setattr(hub_constants, "AGENT_HARNESSES_PATH", str(tmp_path / "hf" / "agent_harnesses.json"))
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")  # a person logged in to the Hub
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    url = f"sqlite+aiosqlite:///{tmp_path / 'personae.db'}"
    await migrate.upgrade(url)
    settings = Settings(_env_file=None, database_url=url, redis_url=None, llm_url=None, max_tokens=32)
    out: list[str] = []
    with only_loopback(monkeypatch) as attempts:
        async with open_app(settings) as app:
            await ensure_samples(app.store)
            chat = ConsoleChat(app, "Elena", out.append)
            await chat.use("Hamlet")
            await chat.say("Good evening, my lord.")
            await chat.say("What news from Wittenberg?")
            await app.engine.drain()  # the appraisal after each turn runs too
    assert chat.last is not None and chat.last.status is ReplyStatus.ANSWERED
    assert attempts == []
