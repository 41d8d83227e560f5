"""A small server that speaks text-generation-inference's (TGI) wire protocol on 127.0.0.1.

It shows what the real llama.cpp server cannot: 429s, errors inside a 200 stream, slow tokens,
dropped connections. Tests, benchmarks and other test folders import it as ``tests.tgi_server`` (or ``bots.llm.tgi_double``);
it does not import pytest.

Inside an event loop (a test)::

    async with TGIServer() as server:           # starts in a few milliseconds, free port
        server.reply = "Hello there."           # or a callable(body) -> str
        server.fail("429", times=2)             # the next two generation requests get 429
        ... AsyncInferenceClient(base_url=server.base_url) ...
        assert server.count("/v1/chat/completions") == 3
        assert server.requests[-1].body["max_tokens"] == 64

From synchronous code (a benchmark script)::

    server = TGIServer(token_delay=0.02).start_in_thread()
    ...
    server.stop_thread()

Standalone: ``python -m bots.llm.tgi_double --port 8080 --token-delay 0.02``.

Wire format, as TGI 3.x sends it (see reference/tgi_protocol.md): SSE events ``data: {json}``
separated by a blank line, ``data: [DONE]`` at the end; errors before the stream as HTTP status
with ``{"error", "error_type"}``; errors after the stream started as an event inside the 200 stream:
``{"error": {"message", "http_status_code"}}`` on ``/v1/chat/completions`` and
``{"error", "error_type"}`` on ``/v1/completions`` and ``/generate_stream``. The native
``/generate`` (``{"inputs", "parameters": {max_new_tokens, temperature, stop, grammar, ...}}`` ->
``{"generated_text"}``) is recorded like the others; with ``grammar_support=False`` a grammar is a 422.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator, Mapping

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bots.llm.alignment_answers import AlignmentAnswers
from bots.llm.token_ledger import Ledger, Tokenizer, prompt_text

DEFAULT_REPLY = "(smiles) The rain has stopped, and the road home is clear at last."
MODEL_ID = "yuyouyu/Mistral-Nemo-BD-RP"

# What each fail kind looks like, as TGI sends it.
_HTTP_FAILS: dict[str, tuple[int, str, str]] = {
    "429": (429, "Model is overloaded", "overloaded"),
    "422": (422, "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096", "validation"),
    "424": (424, "Request failed during generation: CUDA out of memory", "generation"),
    "500": (500, "Incomplete generation", "incomplete_generation"),
    "503": (503, "unhealthy", "healthcheck"),
}
FAIL_KINDS = (*_HTTP_FAILS, "overloaded", "error_event", "drop", "truncate", "hang")

_TOKEN_RE = re.compile(r"\s*\S+|\s+")


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers (Ctrl-C must still reach the test runner) and without its
    tenth-of-a-second ticks: ``stop`` returns as soon as the open connections are cut, not up to
    0.3 s later (uvicorn polls ``should_exit``, then sleeps 0.1 s before and between its close
    checks), which every test that starts a double paid at its end."""

    _exit: asyncio.Event | None = None

    @property  # type: ignore[override]
    def should_exit(self) -> bool:
        return self._exit is not None and self._exit.is_set()

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        if self._exit is None:
            self._exit = asyncio.Event()
        if value:
            self._exit.set()
        else:
            self._exit.clear()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        await self.on_tick(0)  # the default headers
        assert self._exit is not None
        await self._exit.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        for task in list(self.server_state.tasks):
            task.cancel()
        for server in self.servers:
            await server.wait_closed()


class _Dropped(Exception):
    """Raised inside a response to make uvicorn cut the connection (fail kind ``drop``)."""


@dataclass(slots=True)
class Failure:
    """One scripted failure for one generation request.

    kind:
      ``"429"``, ``"422"``, ``"424"``, ``"500"``, ``"503"``: that HTTP status with TGI's error body,
        before any byte of a stream.
      ``"overloaded"``: what real TGI does when ``--max-concurrent-requests`` is full: a 429 status
        for a non-streamed request, an error event with ``http_status_code: 429`` as the first event
        of a 200 stream otherwise.
      ``"error_event"``: a 200 stream whose ``after``-th event is an error (``status``,
        ``message``); non-streamed requests get ``status`` as an HTTP error.
      ``"drop"``: the connection is cut after ``after`` chunks (0: after the headers).
      ``"truncate"``: the 200 stream ends cleanly after ``after`` chunks, with no finish_reason and
        no ``[DONE]`` (what llama-cpp-python's server does when generation fails mid-stream).
      ``"hang"``: headers, ``after`` chunks, then nothing for ``hang_s`` seconds (timeouts).
    ``retry_after``: sent as the ``Retry-After`` header (seconds) with an HTTP failure.
    """

    kind: str
    after: int = 0
    status: int = 500
    message: str | None = None
    hang_s: float = 3600.0
    retry_after: str | None = None


@dataclass(slots=True)
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)


def split_tokens(text: str, chunks: int | None) -> list[str]:
    """Split ``text`` into pseudo-tokens (a word with its leading space), or into ``chunks`` parts."""
    words = _TOKEN_RE.findall(text) or [text]
    if chunks is None or chunks <= 0 or chunks >= len(words):
        if chunks and chunks > len(words):
            # More chunks than words: split by characters.
            size = max(1, -(-len(text) // chunks))
            return [text[i : i + size] for i in range(0, len(text), size)] or [text]
        return words
    per = -(-len(words) // chunks)
    return ["".join(words[i : i + per]) for i in range(0, len(words), per)]


class TGIServer:
    """A fake TGI on 127.0.0.1. Behaviour is set through attributes, :meth:`script` and :meth:`fail`.

    Attributes (change them at any time; they apply to the next request):
      reply: the text of every answer, or a callable taking the request body and returning it.
      chunks: split the reply into this many stream events (None: one event per word).
      token_delay: seconds to wait before each stream event (0: instant).
      first_token_delay: extra seconds before the first event.
      tgi: False makes the server look like a plain OpenAI-style server (no /info, /tokenize).
      max_concurrent_requests: like TGI's flag: requests past it are refused ("overloaded").
      api_key: when set, generation routes need ``Authorization: Bearer <key>`` (bare 401).
      grammar_support: False makes it act like TGI run with ``--disable-grammar-support``: any
        request with a grammar (``response_format`` on the chat route, ``parameters.grammar`` on
        ``/generate``) gets a 422 ("grammar is not supported").
      alignment: an ``AlignmentAnswers`` (``alignment=True`` makes one): appraisal requests (the
        BeyondDialogue alignment tasks) get its answers (analysis then JSON, fractions, code fences,
        no JSON, JSON cut short) and ``alignment.said`` logs them; other requests get ``reply``.
      gate: an ``asyncio.Event``; while set to one that is not set, streams wait before their first
        event (tests order things with it instead of with delays).
    Records: ``requests`` (every request, in order), ``count(path)``, ``max_in_flight``, and
    ``ledger``: per generation request, on every route, the prompt and completion tokens a server
    would count (``bots.llm.token_ledger``; also sent as ``usage`` like TGI does, and served at
    ``GET /ledger`` for a double in another process); ``GET /stats`` serves the requests in flight
    now and at most, and the generation requests so far, for the same.
    """

    def __init__(
        self,
        *,
        reply: str | Callable[[Mapping[str, Any]], str] = DEFAULT_REPLY,
        chunks: int | None = None,
        token_delay: float = 0.0,
        first_token_delay: float = 0.0,
        tgi: bool = True,
        model_id: str = MODEL_ID,
        max_input_tokens: int = 4096,
        max_total_tokens: int = 4608,
        max_concurrent_requests: int = 128,
        max_stop_sequences: int = 4,
        api_key: str | None = None,
        alignment: bool | AlignmentAnswers = False,
        grammar_support: bool = True,
        tokenizer: Tokenizer | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._defaults = dict(
            reply=reply,
            chunks=chunks,
            token_delay=token_delay,
            first_token_delay=first_token_delay,
            tgi=tgi,
            max_concurrent_requests=max_concurrent_requests,
            api_key=api_key,
            grammar_support=grammar_support,
        )
        self.reply = reply
        self.chunks = chunks
        self.token_delay = token_delay
        self.first_token_delay = first_token_delay
        self.tgi = tgi
        self.max_concurrent_requests = max_concurrent_requests
        self.api_key = api_key
        self.grammar_support = grammar_support
        self.model_id = model_id
        if alignment is True:
            alignment = AlignmentAnswers()
        self.alignment: AlignmentAnswers | None = alignment or None
        self.max_input_tokens = max_input_tokens
        self.max_total_tokens = max_total_tokens
        self.max_stop_sequences = max_stop_sequences
        self.host = host
        self.port = port
        self.requests: list[Recorded] = []
        # Counted with the project's estimate unless a tokenizer is given (loading SmolLM2's costs time).
        self.ledger = Ledger(tokenizer or Tokenizer(use_model=False))
        self.gate: asyncio.Event | None = None
        self.failures: deque[Failure] = deque()
        self.in_flight = 0
        self.max_in_flight = 0
        self.healthy = True
        self._counts: Counter[str] = Counter()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._completions, methods=["POST"]),
                Route("/generate", self._generate, methods=["POST"]),
                Route("/generate_stream", self._generate_stream, methods=["POST"]),
                Route("/tokenize", self._tokenize, methods=["POST"]),
                Route("/info", self._info, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
                Route("/ledger", self._ledger, methods=["GET"]),
                Route("/stats", self._stats, methods=["GET"]),
            ]
        )

    # ---- control -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def script(
        self,
        *,
        reply: str | Callable[[Mapping[str, Any]], str] | None = None,
        chunks: int | None = None,
        token_delay: float | None = None,
        first_token_delay: float | None = None,
        instant: bool = False,
        fails: list[Failure] | None = None,
    ) -> "TGIServer":
        """Set several behaviours at once; ``instant=True`` removes every delay."""
        if reply is not None:
            self.reply = reply
        if chunks is not None:
            self.chunks = chunks
        if token_delay is not None:
            self.token_delay = token_delay
        if first_token_delay is not None:
            self.first_token_delay = first_token_delay
        if instant:
            self.token_delay = self.first_token_delay = 0.0
        for failure in fails or ():
            self.failures.append(failure)
        return self

    def fail(
        self,
        kind: str,
        *,
        times: int = 1,
        after: int = 0,
        status: int | None = None,
        message: str | None = None,
        hang_s: float = 3600.0,
        retry_after: float | str | None = None,
    ) -> "TGIServer":
        """Make the next ``times`` generation requests fail as ``kind`` (see :class:`Failure`)."""
        if kind not in FAIL_KINDS:
            raise ValueError(f"unknown fail kind {kind!r}; one of {', '.join(FAIL_KINDS)}")
        if status is None:
            status = 429 if kind == "overloaded" else 500
        for _ in range(times):
            wait = None if retry_after is None else (retry_after if isinstance(retry_after, str) else f"{retry_after:g}")
            self.failures.append(Failure(kind, after=after, status=status, message=message, hang_s=hang_s, retry_after=wait))
        return self

    def reset(self) -> None:
        """Forget recorded requests and pending failures; restore the constructor's behaviour."""
        for name, value in self._defaults.items():
            setattr(self, name, value)
        self.requests.clear()
        self.ledger.entries.clear()
        self.failures.clear()
        self._counts.clear()
        self.max_in_flight = 0
        self.healthy = True

    def count(self, path: str | None = None) -> int:
        """Requests received on ``path`` (all paths when None)."""
        return self._counts[path] if path is not None else sum(self._counts.values())

    def bodies(self, path: str = "/v1/chat/completions") -> list[Any]:
        return [r.body for r in self.requests if r.path == path]

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> "TGIServer":
        """Start serving in the running event loop; returns once the socket accepts connections."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(1024)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="critical",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            backlog=1024,
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="tgi-fake")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what went wrong
                raise RuntimeError("the fake TGI server stopped during startup")
            await asyncio.sleep(0.001)
        return self

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        self._server.force_exit = True
        try:
            await asyncio.wait_for(self._task, timeout=5)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self._task.cancel()
        self._server = self._task = None

    async def __aenter__(self) -> "TGIServer":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self, timeout: float = 10.0) -> "TGIServer":
        """Serve from a daemon thread with its own event loop (for synchronous callers)."""
        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._thread_loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # noqa: BLE001 - reported to the caller
                errors.append(exc)
                started.set()
                return
            started.set()
            loop.run_until_complete(self._task)  # type: ignore[arg-type]
            loop.close()

        self._thread = threading.Thread(target=run, name="tgi-fake", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise RuntimeError(f"the fake TGI server did not start within {timeout} s")
        if errors:
            raise errors[0]
        return self

    def stop_thread(self, timeout: float = 10.0) -> None:
        server, loop = self._server, self._thread_loop
        if self._thread is None or server is None or loop is None:
            return
        loop.call_soon_threadsafe(setattr, server, "should_exit", True)
        self._thread.join(timeout)
        self._thread = None
        self._server = self._task = None

    # ---- helpers -------------------------------------------------------------------------

    async def _record(self, request: Request) -> Any:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.requests.append(Recorded(request.method, request.url.path, dict(request.headers), body))
        self._counts[request.url.path] += 1
        return body

    def _unauthorised(self, request: Request) -> Response | None:
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return Response(status_code=401)
        return None

    def _reply_text(self, body: Mapping[str, Any]) -> str:
        """The answer to a generation request (every route asks here), entered in the ledger."""
        text = None
        if self.alignment is not None:
            text = self.alignment(body)
        if text is None:
            text = self.reply(body) if callable(self.reply) else self.reply
        self.ledger.add(body, text)
        return text

    def _usage(self, body: Mapping[str, Any], text: str) -> dict[str, int]:
        return _usage(body, text, self.ledger.tokenizer)

    def _enter(self) -> bool:
        """Count one generation request in flight; False if over ``max_concurrent_requests``."""
        if self.in_flight >= self.max_concurrent_requests:
            return False
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return True

    def _leave(self) -> None:
        self.in_flight -= 1

    @staticmethod
    def _error(status: int, message: str, error_type: str, retry_after: str | None = None) -> JSONResponse:
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        return JSONResponse({"error": message, "error_type": error_type}, status_code=status, headers=headers)

    def _validate(self, body: Any, *, chat: bool) -> JSONResponse | None:
        """The checks TGI does before it starts (a subset): a 422 like TGI's, or None."""
        if not isinstance(body, dict):
            return self._error(422, "Failed to deserialize the JSON body into the target type", "validation")
        if chat and not body.get("messages"):
            return self._error(422, "Failed to deserialize the JSON body: missing field `messages`", "validation")
        if not chat and not isinstance(body.get("prompt"), (str, list)):
            return self._error(422, "Failed to deserialize the JSON body: missing field `prompt`", "validation")
        stop = body.get("stop") or []
        if len(stop) > self.max_stop_sequences:
            return self._error(
                422,
                f"Input validation error: `stop` supports up to {self.max_stop_sequences} stop sequences. "
                f"Given: {len(stop)}",
                "validation",
            )
        max_tokens = body.get("max_tokens")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            return self._error(422, "Input validation error: `max_new_tokens` must be strictly positive", "validation")
        temperature = body.get("temperature")
        if temperature is not None and temperature < 0:
            return self._error(422, "Input validation error: `temperature` must be >= 0", "validation")
        if chat and body.get("response_format") and not self.grammar_support:
            return self._error(422, GRAMMAR_REFUSED, "validation")
        if chat and body.get("response_format") and body.get("tools"):
            return self._error(422, "Grammar and tools are mutually exclusive", "grammar and tools")
        return None

    def _stream(
        self,
        events: list[dict[str, Any]],
        failure: Failure | None,
        error_event: Callable[[int, str], dict[str, Any]],
        *,
        done: bool = True,
    ) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            try:
                if failure is not None and failure.kind == "overloaded":
                    yield _sse(error_event(429, failure.message or "Model is overloaded"))
                    if done:
                        yield b"data: [DONE]\n\n"
                    return
                if self.gate is not None:
                    await self.gate.wait()
                if self.first_token_delay:
                    await asyncio.sleep(self.first_token_delay)
                for index, event in enumerate(events):
                    if failure is not None and index == failure.after:
                        if failure.kind == "error_event":
                            yield _sse(error_event(failure.status, failure.message or "Request failed during generation"))
                            if done:
                                yield b"data: [DONE]\n\n"
                            return
                        if failure.kind == "drop":
                            raise _Dropped()
                        if failure.kind == "truncate":
                            return
                        if failure.kind == "hang":
                            await asyncio.sleep(failure.hang_s)
                    if self.token_delay:
                        await asyncio.sleep(self.token_delay)
                    yield _sse(event)
                if failure is not None and failure.after >= len(events):
                    if failure.kind == "error_event":
                        yield _sse(error_event(failure.status, failure.message or "Incomplete generation"))
                    elif failure.kind == "drop":
                        raise _Dropped()
                    elif failure.kind == "truncate":
                        return
                if done:
                    yield b"data: [DONE]\n\n"
            finally:
                self._leave()

        headers = {"X-Accel-Buffering": "no", "x-compute-type": "fake", "Cache-Control": "no-cache"}
        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    def _http_failure(self, failure: Failure, *, stream: bool) -> Response | None:
        """The HTTP error response for ``failure`` if it is one that precedes any stream."""
        if failure.kind in _HTTP_FAILS:
            status, message, error_type = _HTTP_FAILS[failure.kind]
            return self._error(status, failure.message or message, error_type, failure.retry_after)
        if failure.kind == "overloaded" and not stream:
            return self._error(429, failure.message or "Model is overloaded", "overloaded", failure.retry_after)
        if failure.kind == "error_event" and not stream:
            return self._error(failure.status, failure.message or "Request failed during generation", "generation")
        return None

    def _next_failure(self) -> Failure | None:
        return self.failures.popleft() if self.failures else None

    # ---- routes --------------------------------------------------------------------------

    async def _open(
        self,
        request: Request,
        validate: Callable[[Any], Response | None],
        *,
        always_stream: bool = False,
    ) -> Response | tuple[Any, bool, Failure | None]:
        """What every generation route does first: record, authorise, validate, and pick this
        request's failure (a scripted one, or "overloaded" past ``max_concurrent_requests``).

        Returns the response to send at once, or (body, stream, failure) with the request counted in flight.
        """
        body = await self._record(request)
        if (denied := self._unauthorised(request)) is not None:
            return denied
        if (invalid := validate(body)) is not None:
            return invalid
        stream = always_stream or bool(body.get("stream"))
        failure = self._next_failure()
        if failure is None and not self._enter():
            failure = Failure("overloaded")
            if not stream:
                return self._http_failure(failure, stream=False)  # type: ignore[return-value]
            self.in_flight += 1  # balanced by _leave() in the stream
        elif failure is not None:
            if (response := self._http_failure(failure, stream=stream)) is not None:
                return response
            self._enter_forced()
        return body, stream, failure

    async def _chat(self, request: Request) -> Response:
        opened = await self._open(request, lambda body: self._validate(body, chat=True))
        if isinstance(opened, Response):
            return opened
        body, stream, failure = opened
        text = self._reply_text(body)
        created = int(time.time())
        fingerprint = "3.3.6-fake"
        if not stream:
            try:
                if failure is not None and failure.kind == "drop":
                    return _DropResponse()
                if failure is not None and failure.kind == "hang":
                    await asyncio.sleep(failure.hang_s)
                if self.first_token_delay or self.token_delay:
                    await asyncio.sleep(self.first_token_delay + self.token_delay * len(split_tokens(text, self.chunks)))
            finally:
                self._leave()
            return JSONResponse(
                {
                    "object": "chat.completion",
                    "id": "",
                    "created": created,
                    "model": self.model_id,
                    "system_fingerprint": fingerprint,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": self._usage(body, text),
                }
            )
        parts = split_tokens(text, self.chunks)
        events = []
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            events.append(
                {
                    "object": "chat.completion.chunk",
                    "id": "",
                    "created": created,
                    "model": self.model_id,
                    "system_fingerprint": fingerprint,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": part},
                            "logprobs": None,
                            "finish_reason": "stop" if last else None,
                        }
                    ],
                    "usage": None,
                }
            )
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(
                {
                    "object": "chat.completion.chunk",
                    "id": "",
                    "created": created,
                    "model": self.model_id,
                    "system_fingerprint": fingerprint,
                    "choices": [],
                    "usage": self._usage(body, text),
                }
            )

        def error_event(status: int, message: str) -> dict[str, Any]:
            return {"error": {"message": message, "http_status_code": status}}

        return self._stream(events, failure, error_event)

    async def _completions(self, request: Request) -> Response:
        opened = await self._open(request, lambda body: self._validate(body, chat=False))
        if isinstance(opened, Response):
            return opened
        body, stream, failure = opened
        text = self._reply_text(body)
        created = int(time.time())
        if not stream:
            try:
                if failure is not None and failure.kind == "drop":
                    return _DropResponse()
                if failure is not None and failure.kind == "hang":
                    await asyncio.sleep(failure.hang_s)
            finally:
                self._leave()
            return JSONResponse(
                {
                    "object": "text_completion",
                    "id": "",
                    "created": created,
                    "model": self.model_id,
                    "system_fingerprint": "3.3.6-fake",
                    "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
                    "usage": self._usage(body, text),
                }
            )
        parts = split_tokens(text, self.chunks)
        events = []
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            choice = {"index": 0, "text": part, "logprobs": None, "finish_reason": "stop" if last else ""}
            event: dict[str, Any] = {
                "id": "",
                "created": created,
                "model": self.model_id,
                "system_fingerprint": "3.3.6-fake",
                "choices": [choice],
            }
            if last:
                event["usage"] = self._usage(body, text)
            events.append(event)

        def error_event(status: int, message: str) -> dict[str, Any]:
            return {"error": message, "error_type": _ERROR_TYPES.get(status, "generation")}

        return self._stream(events, failure, error_event)

    def _validate_generate(self, body: Any) -> Response | None:
        """TGI's checks on ``/generate`` (a subset): ``inputs``, ``parameters``, grammar support."""
        if (invalid := _validate_inputs(body)) is not None:
            return invalid
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            return self._error(422, "Failed to deserialize the JSON body: parameters", "validation")
        max_new = parameters.get("max_new_tokens")
        if max_new is not None and (not isinstance(max_new, int) or max_new < 1):
            return self._error(422, "Input validation error: `max_new_tokens` must be strictly positive", "validation")
        temperature = parameters.get("temperature")
        if temperature is not None and temperature <= 0:
            return self._error(422, "Input validation error: `temperature` must be strictly positive", "validation")
        if len(parameters.get("stop") or []) > self.max_stop_sequences:
            return self._error(422, f"Input validation error: `stop` supports up to {self.max_stop_sequences} stop sequences", "validation")
        grammar = parameters.get("grammar")
        if grammar is not None:
            if not self.grammar_support:
                return self._error(422, GRAMMAR_REFUSED, "validation")
            if not isinstance(grammar, dict) or grammar.get("type") not in ("json", "json_object", "regex") or "value" not in grammar:
                return self._error(422, "Failed to deserialize the JSON body: parameters.grammar", "validation")
        return None

    async def _generate(self, request: Request) -> Response:
        """TGI's native ``/generate``: ``{"inputs", "parameters"}`` -> ``{"generated_text"}`` (not streamed)."""
        opened = await self._open(request, self._validate_generate)
        if isinstance(opened, Response):
            return opened
        body, _, failure = opened
        text = self._reply_text(body)
        try:
            if failure is not None and failure.kind == "drop":
                return _DropResponse()
            if failure is not None and failure.kind == "hang":
                await asyncio.sleep(failure.hang_s)
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self._leave()
        return JSONResponse({"generated_text": text})

    async def _generate_stream(self, request: Request) -> Response:
        opened = await self._open(request, _validate_inputs, always_stream=True)
        if isinstance(opened, Response):
            return opened
        body, _, failure = opened
        text = self._reply_text(body)
        parts = split_tokens(text, self.chunks)
        details = None
        if (body.get("parameters") or {}).get("details"):
            usage = self._usage(body, text)
            details = {
                "finish_reason": "eos_token",
                "generated_tokens": usage["completion_tokens"],
                "input_length": usage["prompt_tokens"],
                "seed": None,
            }
        events = []
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            events.append(
                {
                    "index": i + 1,
                    "token": {"id": 1000 + i, "text": part, "logprob": -0.1, "special": False},
                    "top_tokens": None,
                    "generated_text": text if last else None,
                    "details": details if last else None,
                }
            )

        def error_event(status: int, message: str) -> dict[str, Any]:
            return {"error": message, "error_type": _ERROR_TYPES.get(status, "generation")}

        return self._stream(events, failure, error_event, done=False)

    def _enter_forced(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    async def _tokenize(self, request: Request) -> Response:
        body = await self._record(request)
        if not self.tgi:
            return Response("Not Found", status_code=404)
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), str):
            return self._error(422, "Failed to deserialize the JSON body: missing field `inputs`", "validation")
        text = body["inputs"]
        tokens, pos = [], 0
        for i, piece in enumerate(split_tokens(text, None) if text else []):
            tokens.append({"id": 1000 + i, "text": piece, "start": pos, "stop": pos + len(piece)})
            pos += len(piece)
        return JSONResponse(tokens)

    async def _info(self, request: Request) -> Response:
        await self._record(request)
        if not self.tgi:
            return Response("Not Found", status_code=404)
        return JSONResponse(
            {
                "model_id": self.model_id,
                "model_sha": None,
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": self.max_concurrent_requests,
                "max_best_of": 2,
                "max_stop_sequences": self.max_stop_sequences,
                "max_input_tokens": self.max_input_tokens,
                "max_total_tokens": self.max_total_tokens,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": "3.3.6",
                "sha": None,
                "docker_label": None,
            }
        )

    async def _health(self, request: Request) -> Response:
        await self._record(request)
        if not self.healthy:
            return self._error(503, "unhealthy", "healthcheck")
        return Response(status_code=200)

    async def _models(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse(
            {"object": "list", "data": [{"id": self.model_id, "object": "model", "created": 0, "owned_by": self.model_id}]}
        )

    async def _ledger(self, request: Request) -> Response:
        """The ledger from entry ``?since=N`` on (not recorded: reading it is no request to the model)."""
        since = int(request.query_params.get("since", "0") or 0)
        return JSONResponse(
            {
                "tokenizer": self.ledger.tokenizer.name,
                "size": len(self.ledger.entries),
                "entries": [e.to_json() for e in self.ledger.entries[since:]],
            }
        )

    async def _stats(self, request: Request) -> Response:
        """Requests in flight now and at most, generation requests so far, CPU time (not recorded either)."""
        return JSONResponse(
            {
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "max_concurrent_requests": self.max_concurrent_requests,
                "generations": len(self.ledger.entries),
                "cpu_s": time.process_time(),  # this process's CPU time so far (a bench on one machine)
            }
        )

    async def _metrics(self, request: Request) -> Response:
        await self._record(request)
        return Response(f"tgi_request_count {self.count()}\n", media_type="text/plain")


GRAMMAR_REFUSED = "Input validation error: grammar is not supported"  # TGI with --disable-grammar-support
_ERROR_TYPES = {429: "overloaded", 422: "validation", 424: "generation", 500: "incomplete_generation"}


def _validate_inputs(body: Any) -> Response | None:
    """TGI's native API wants ``{"inputs": str, ...}``."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), str):
        return TGIServer._error(422, "Failed to deserialize the JSON body: missing field `inputs`", "validation")
    return None


class _DropResponse(Response):
    """Send the headers of a 200 with a body length, then cut the connection."""

    def __init__(self) -> None:
        super().__init__(status_code=200, media_type="application/json")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
            }
        )
        raise _Dropped()


def _sse(payload: Mapping[str, Any]) -> bytes:
    try:
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate in a scripted reply goes out as a JSON escape
        data = json.dumps(payload, separators=(",", ":")).encode()
    return b"data: " + data + b"\n\n"


_ESTIMATE = Tokenizer(use_model=False)


def _usage(body: Mapping[str, Any], text: str, tokenizer: Tokenizer = _ESTIMATE) -> dict[str, int]:
    """TGI's ``usage``: the prompt as the server would tokenize it (any route) and the answer."""
    found = prompt_text(body)
    prompt_tokens = tokenizer.count(found[1]) if found else 0
    completion = tokenizer.count(text)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake TGI server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--chunks", type=int, default=None)
    parser.add_argument("--max-concurrent-requests", type=int, default=128)
    parser.add_argument("--reply", default=DEFAULT_REPLY)
    parser.add_argument("--no-grammar", action="store_true", help="act like TGI with --disable-grammar-support (a grammar is a 422)")
    parser.add_argument(
        "--bench-answers", action="store_true",
        help="answer with replies and appraisals of realistic length (bots.llm.bench_answers)",
    )
    parser.add_argument(
        "--tokenizer", choices=("estimate", "smollm2"), default="estimate",
        help="count tokens with the bundled SmolLM2 tokenizer (falls back to the estimate if it cannot load)",
    )
    args = parser.parse_args(argv)
    reply: str | Callable[[Mapping[str, Any]], str] = args.reply
    alignment: bool | AlignmentAnswers = False
    if args.bench_answers:
        from bots.llm import bench_answers

        reply, alignment = bench_answers.replies(), bench_answers.alignment()
    server = TGIServer(
        port=args.port,
        reply=reply,
        alignment=alignment,
        tokenizer=Tokenizer(use_model=args.tokenizer == "smollm2"),
        token_delay=args.token_delay,
        chunks=args.chunks,
        max_concurrent_requests=args.max_concurrent_requests,
        grammar_support=not args.no_grammar,
    )

    async def run() -> None:
        await server.start()
        print(f"fake TGI listening on {server.base_url}", flush=True)
        assert server._task is not None
        await server._task

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
