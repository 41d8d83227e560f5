"""The model-server client: one code path for TGI, vLLM, SGLang and llama.cpp's server.

``ModelClient`` implements ``core.ports.ChatModel``. Chat requests go through
``huggingface_hub.AsyncInferenceClient.chat_completion`` (the OpenAI-style Messages API); the
``mistral-raw`` layout renders the prompt itself and streams it from ``/v1/completions`` with httpx.
Everything a server or the network can do wrong ends up as ``core.errors.ModelError`` with a message
that says what failed and where; retryable failures are retried before the first text delta.

Facts about huggingface_hub 2.x this module works around (checked against its source):
- it sends the person's own Hugging Face token (``HF_TOKEN`` or the saved login) to *any* base URL
  when no ``api_key`` is given; the client blanks the Authorization header instead;
- every streamed call is entered into the AsyncInferenceClient's exit stack and stays referenced
  (about 34 KB with a long system prompt) until the client is closed; the client therefore retires
  its AsyncInferenceClient every ``ROTATE_AFTER_STREAMS`` streams;
- its HTTP library is ``httpx2`` (not ``httpx``): transport errors are ``httpx2`` exceptions, and
  only errors raised before the first byte become ``InferenceTimeoutError``;
- with telemetry on, building a request's user-agent fetches a registry from huggingface.co (once
  per process, blocking); telemetry is therefore switched off when this module is imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import random
import time
from typing import Any, AsyncIterator, Callable, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx
from huggingface_hub import AsyncInferenceClient
from huggingface_hub import constants as hub_constants
from huggingface_hub import errors as hub_errors

from core.errors import ModelError
from core.prompt import estimate_tokens

try:  # The HTTP library huggingface_hub itself uses (httpx2 since 2.0), exported for this purpose.
    from huggingface_hub.utils import httpx as hub_httpx
except ImportError:  # pragma: no cover - older huggingface_hub
    hub_httpx = httpx

log = logging.getLogger(__name__)

# huggingface_hub builds a user-agent for every request, and unless telemetry is off that asks the
# Hub (huggingface.co/api/agent-harnesses, synchronously, on the event loop) which AI agents exist.
# personae talks to its own model server only: no request may leave for the Hub.
hub_constants.HF_HUB_DISABLE_TELEMETRY = True

LAYOUTS = ("chat", "mistral-raw")
MAX_STOP_SEQUENCES = 4  # TGI's default --max-stop-sequences; more is a 422
RETRY_BASE_S = 0.25
RETRY_CAP_S = 4.0
INFO_TIMEOUT_S = 3.0
TOKENIZE_TIMEOUT_S = 2.0
INFO_RETRY_AFTER_S = 30.0  # when /info could not be reached, ask again after this long
ROTATE_AFTER_STREAMS = 512
HUB_POOL_CONNECTIONS = 100  # httpx2's default pool size, used by huggingface_hub
RAW_STOP = "[INST]"  # in the raw layout, the model must not write the next user turn
_DETAIL_CHARS = 300
URL_SETTING = "PERSONAE_LLM_URL"  # what points personae at a model server it did not start

_TIMEOUTS = (hub_errors.InferenceTimeoutError, httpx.TimeoutException, hub_httpx.TimeoutException, TimeoutError)
_CONNECT_ERRORS = (httpx.ConnectError, hub_httpx.ConnectError)
_TRANSPORT_ERRORS = (httpx.TransportError, hub_httpx.TransportError)
_HTTP_ERRORS = (httpx.HTTPError, hub_httpx.HTTPError)


# ---- the raw prompt layout ----------------------------------------------------------------------


def render_mistral_raw(messages: Sequence[Mapping[str, str]], *, bos: str = "<s>", eos: str = "</s>") -> str:
    """Render a conversation in LLaMA-Factory's ``mistral`` template (the layout BD-RP was most likely
    trained in): ``<s>{system}[INST] {user1} [/INST]{assistant1}</s>[INST] {user2} [/INST]``.

    The system text appears once, before the first ``[INST]``; every finished assistant turn ends
    with ``</s>``; a conversation that ends with an assistant turn is left open (a prefill).
    Servers add the BOS token themselves when they tokenize a raw prompt (TGI, vLLM and llama.cpp
    all do), so the client sends this with ``bos=""``.
    """
    out = [bos]
    for index, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role == "system":
            if index != 0:
                raise ValueError("the mistral layout takes one system message, first")
            out.append(content)
        elif role == "user":
            out.append(f"[INST] {content} [/INST]")
        elif role == "assistant":
            out.append(content)
            if index != len(messages) - 1:
                out.append(eos)
        else:
            raise ValueError(f"the mistral layout has no role {role!r}")
    return "".join(out)


# ---- error mapping ------------------------------------------------------------------------------


def _safe_url(url: str) -> str:
    """``url`` without user info, query or fragment, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 1] + "…"


def _detail_from_body(body: bytes | str | None) -> str | None:
    """The error message inside a server's error body (TGI, OpenAI/vLLM, llama.cpp shapes)."""
    if not body:
        return None
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        obj = json.loads(text)
    except ValueError:
        return _clip(text) or None
    if isinstance(obj, dict):
        err = obj.get("error", obj.get("detail", obj.get("message")))
        if isinstance(err, dict):
            err = err.get("message") or json.dumps(err)
        if err:
            return _clip(str(err))
    return _clip(text)


def status_error(where: str, status: int, detail: str | None = None, *, url_setting: str | None = URL_SETTING) -> ModelError:
    """The ModelError for an HTTP status (or a stream error event carrying one). ``url_setting`` names
    the setting that points personae at the server (None: personae started the server itself)."""
    tail = f": {detail}" if detail else ""
    if status == 429:
        return ModelError(f"the model server at {where} is overloaded (429){tail}", retryable=True, status=status)
    if status in (401, 403):
        return ModelError(
            f"the model server at {where} refused the credentials ({status}); "
            "check PERSONAE_LLM_API_KEY (it must match the server's --api-key)",
            retryable=False,
            status=status,
        )
    if status == 404:
        if url_setting is None:
            return ModelError(f"the model server at {where} answered 404{tail}", retryable=False, status=status)
        return ModelError(
            f"the model server at {where} answered 404{tail}; check that {url_setting} is the server's "
            "base URL and, for vLLM, that PERSONAE_LLM_MODEL is the served model name",
            retryable=False,
            status=status,
        )
    if status == 422:
        return ModelError(f"the model server at {where} rejected the request (422){tail}", retryable=False, status=status)
    if status == 424:
        return ModelError(f"the model server at {where} failed during generation (424){tail}", retryable=True, status=status)
    if status == 408 or status >= 500:
        return ModelError(f"the model server at {where} failed ({status}){tail}", retryable=True, status=status)
    return ModelError(f"the model server at {where} rejected the request ({status}){tail}", retryable=False, status=status)


def _refused(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError) or getattr(current, "errno", None) == errno.ECONNREFUSED:
            return True
        if "connection refused" in str(current).lower():
            return True
        current = current.__cause__ or current.__context__
    return False


def transport_error(where: str, exc: BaseException, timeout_s: float, *, url_setting: str | None = URL_SETTING) -> ModelError:
    """The ModelError for a network failure (refused, timed out, cut off)."""
    if isinstance(exc, _TIMEOUTS):
        return ModelError(f"the model server at {where} did not answer within {timeout_s:g} s", retryable=True)
    if isinstance(exc, _CONNECT_ERRORS):
        if _refused(exc):
            running = f"is it running ({url_setting})?" if url_setting else "is it still running?"
            return ModelError(f"the model server at {where} refused the connection; {running}", retryable=True)
        return ModelError(f"the model server at {where} could not be reached ({_clip(str(exc)) or type(exc).__name__})", retryable=True)
    if isinstance(exc, _TRANSPORT_ERRORS):
        return ModelError(
            f"the model server at {where} closed the connection before the reply was complete "
            f"({type(exc).__name__}{': ' + _clip(str(exc)) if str(exc) else ''})",
            retryable=True,
        )
    return ModelError(f"the request to the model server at {where} failed ({type(exc).__name__}: {_clip(str(exc))})", retryable=True)


_EVENT_STATUS = {
    hub_errors.OverloadedError: 429,
    hub_errors.ValidationError: 422,
    hub_errors.GenerationError: 424,
    hub_errors.IncompleteGenerationError: 500,
}
_ERROR_TYPE_STATUS = {"overloaded": 429, "validation": 422, "generation": 424, "incomplete_generation": 500}


def event_error(where: str, payload: Any, error_type: str | None = None, *, url_setting: str | None = URL_SETTING) -> ModelError:
    """The ModelError for an ``error`` event inside a 200 stream.

    Shapes: TGI chat ``{"error": {"message", "http_status_code"}}``; TGI generate/completions
    ``{"error": "...", "error_type": "..."}``; OpenAI/vLLM ``{"error": {"message", "code"}}``.
    """
    status: int | None = None
    if isinstance(payload, dict):
        message = payload.get("message") or json.dumps(payload)
        for key in ("http_status_code", "code", "status"):
            value = payload.get(key)
            if isinstance(value, int) and 100 <= value < 600:
                status = value
                break
        error_type = error_type or payload.get("type")
    else:
        message = str(payload)
    if status is None and error_type:
        status = _ERROR_TYPE_STATUS.get(str(error_type))
    detail = _clip(str(message))
    if status is not None:
        error = status_error(where, status, detail, url_setting=url_setting)
        return ModelError(f"{error} (reported inside the stream)", retryable=error.retryable, status=status)
    return ModelError(f"the model server at {where} reported an error inside the stream: {detail}", retryable=True)


def _hub_error(where: str, exc: BaseException, timeout_s: float, *, url_setting: str | None = URL_SETTING) -> ModelError:
    """Map whatever huggingface_hub raised to a ModelError."""
    if isinstance(exc, ModelError):
        return exc
    if isinstance(exc, hub_errors.TextGenerationError):  # an error event inside the stream
        payload = exc.args[0] if exc.args else None
        status = _EVENT_STATUS.get(type(exc))
        if isinstance(payload, dict) or status is None:
            return event_error(where, payload, None if status is None else _status_type(status), url_setting=url_setting)
        error = status_error(where, status, _clip(str(payload)) if payload else None, url_setting=url_setting)
        return ModelError(f"{error} (reported inside the stream)", retryable=error.retryable, status=status)
    if isinstance(exc, hub_errors.HfHubHTTPError):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        detail = None
        if response is not None:
            try:
                detail = _detail_from_body(response.content)
            except Exception:  # noqa: BLE001 - a streamed body that was not read
                detail = getattr(exc, "server_message", None)
        if isinstance(status, int):
            return status_error(where, status, detail, url_setting=url_setting)
    if isinstance(exc, hub_errors.OfflineModeIsEnabled):
        return ModelError(
            f"HF_HUB_OFFLINE is set, and huggingface_hub refuses to reach the model server at {where}; "
            "unset HF_HUB_OFFLINE for personae",
            retryable=False,
        )
    if isinstance(exc, (*_HTTP_ERRORS, TimeoutError, OSError)):
        return transport_error(where, exc, timeout_s, url_setting=url_setting)
    return ModelError(
        f"unexpected error from the model server at {where}: {type(exc).__name__}: {_clip(str(exc))}",
        retryable=False,
    )


def _status_type(status: int) -> str:
    return {v: k for k, v in _ERROR_TYPE_STATUS.items()}.get(status, "")


def _sse_data(line: str) -> str | None:
    """The data of one SSE line (``data: x`` or ``data:x``), None for other lines."""
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


# ---- huggingface_hub clients, retired before they hold too much ---------------------------------


class _HubClients:
    """Hands out an AsyncInferenceClient; retires it after ``rotate_after`` streams and closes it
    once its last request is done (huggingface_hub keeps every streamed response until close)."""

    def __init__(self, make: Callable[[], AsyncInferenceClient], rotate_after: int) -> None:
        self._make = make
        self._rotate_after = rotate_after
        self._current: AsyncInferenceClient | None = None
        self._streams = 0
        self._users: dict[int, list[Any]] = {}  # id -> [client, users, retired]
        self._closing: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def lease(self, *, stream: bool) -> AsyncIterator[AsyncInferenceClient]:
        if self._current is None:
            self._current = self._make()
            self._users[id(self._current)] = [self._current, 0, False]
        client = self._current
        entry = self._users[id(client)]
        entry[1] += 1
        if stream:
            self._streams += 1
            if self._streams >= self._rotate_after:
                entry[2] = True
                self._current = None
                self._streams = 0
        try:
            yield client
        finally:
            entry[1] -= 1
            if entry[2] and entry[1] == 0:
                self._users.pop(id(client), None)
                task = asyncio.get_running_loop().create_task(_close_quietly(client))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        clients = [entry[0] for entry in self._users.values()]
        self._users.clear()
        self._current = None
        for client in clients:
            await _close_quietly(client)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


async def _close_quietly(client: Any) -> None:
    try:
        await client.close()
    except Exception as exc:  # noqa: BLE001 - closing must not raise
        log.debug("closing a model-server client failed: %r", exc)


# ---- the client ---------------------------------------------------------------------------------


class ModelClient:
    """A model server with the OpenAI-style chat API; implements ``core.ports.ChatModel``.

    ``concurrency`` caps the requests in flight (keep it below TGI's ``--max-concurrent-requests``,
    128 by default: past it TGI refuses instead of queueing). ``timeout_s`` applies to each network
    operation (connect, each read), not to a whole reply. ``retries`` is how many times a retryable
    failure is retried before the first text delta. ``url_setting`` is the setting errors name as the
    way to point personae at the server; None for a server personae started itself (the embedded one).
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float,
        concurrency: int,
        retries: int,
        layout: str = "chat",
        retry_base_s: float = RETRY_BASE_S,
        url_setting: str | None = URL_SETTING,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the model server URL must start with http:// or https://, got {_safe_url(base_url)!r}")
        if model is not None and model.startswith(("http://", "https://")):
            raise ValueError("the model name (PERSONAE_LLM_MODEL) must be a served model name, not a URL")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown prompt layout {layout!r}; use one of: {', '.join(LAYOUTS)}")
        if concurrency < 1:
            raise ValueError("the model concurrency must be at least 1")
        if timeout_s <= 0:
            raise ValueError("the model timeout must be positive")
        root = base_url.rstrip("/")
        if root.endswith("/v1"):
            root = root[: -len("/v1")]
        self.base_url = root
        self.where = _safe_url(root)
        self.url_setting = url_setting
        self.model = model or "tgi"
        self.layout = layout
        self.timeout_s = float(timeout_s)
        self.concurrency = concurrency
        self.retries = max(0, int(retries))
        self.retry_base_s = retry_base_s
        self._api_key = api_key or None
        self._sem = asyncio.Semaphore(concurrency)
        self._in_flight = 0
        self._hub = _HubClients(self._make_hub, ROTATE_AFTER_STREAMS)
        self._http: httpx.AsyncClient | None = None
        self._http_lock = asyncio.Lock()
        self._info: dict[str, Any] | None = None
        self._info_known = False
        self._info_retry_at = 0.0
        self._info_lock = asyncio.Lock()
        self._tokenize_warned = False
        self._closed = False
        is_offline = getattr(hub_constants, "is_offline_mode", None)
        if callable(is_offline) and is_offline():
            log.warning(
                "HF_HUB_OFFLINE is set: huggingface_hub will refuse to reach the model server at %s; "
                "unset it for personae",
                self.where,
            )
        if concurrency > HUB_POOL_CONNECTIONS:
            log.warning(
                "model concurrency %d is above huggingface_hub's pool of %d connections; "
                "requests past it wait for a connection",
                concurrency,
                HUB_POOL_CONNECTIONS,
            )

    def __repr__(self) -> str:  # never shows the API key
        return f"ModelClient({self.where!r}, model={self.model!r}, layout={self.layout!r})"

    # ---- ChatModel ------------------------------------------------------------------------

    async def stream(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] = (),
    ) -> AsyncIterator[str]:
        """Yield the reply's text deltas. Raises ModelError.

        Retryable failures before the first delta are retried with jittered exponential backoff;
        a failure after a delta is raised at once (the caller ends the reply with a notice).
        """
        stops = self._stops(stop)
        if self.layout == "mistral-raw":
            prompt = render_mistral_raw(messages, bos="")
            if RAW_STOP not in stops and len(stops) < MAX_STOP_SEQUENCES:
                stops.append(RAW_STOP)

            def attempt() -> AsyncIterator[str]:
                return self._raw_stream(prompt, max_tokens, temperature, stops)

        else:
            payload = [dict(m) for m in messages]

            def attempt() -> AsyncIterator[str]:
                return self._chat_stream(payload, max_tokens, temperature, stops)

        async with contextlib.aclosing(self._retrying(attempt)) as deltas:  # type: ignore[type-var]
            async for delta in deltas:
                yield delta

    async def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        json_schema: Mapping[str, Any] | None = None,
    ) -> str:
        """A whole answer through the chat API (in every layout: the appraisal prompts are one
        system and one user message, and the chat API is where TGI constrains output to a schema).

        On TGI ``json_schema`` goes out as ``response_format={"type": "json", "value": schema}``;
        other servers get no response_format and the caller parses the last JSON object.
        """
        extra: dict[str, Any] = {}
        if json_schema is not None and await self.info() is not None:
            extra["response_format"] = {"type": "json", "value": dict(json_schema)}
        payload = [dict(m) for m in messages]

        async def attempt() -> AsyncIterator[str]:
            async with self._hub.lease(stream=False) as hub:
                try:
                    out = await hub.chat_completion(
                        payload, model=self.model, stream=False, max_tokens=max_tokens, temperature=temperature, **extra
                    )
                except Exception as exc:  # noqa: BLE001 - every failure becomes a ModelError
                    raise _hub_error(self.where, exc, self.timeout_s, url_setting=self.url_setting) from exc
            choices = out.choices or []
            yield (choices[0].message.content or "") if choices else ""

        parts = [part async for part in self._retrying(attempt)]
        return "".join(parts)

    async def count_tokens(self, text: str) -> int:
        """The server's token count on TGI (``POST /tokenize``), else ``estimate_tokens``."""
        if not text:
            return 0
        if await self.info() is None:
            return estimate_tokens(text)
        try:
            client = await self._http_client()
            response = await client.post("/tokenize", json={"inputs": text}, timeout=TOKENIZE_TIMEOUT_S)
            if response.status_code == 200:
                tokens = response.json()
                if isinstance(tokens, list):
                    return len(tokens)
            problem = f"answered {response.status_code}"
        except (httpx.HTTPError, ValueError) as exc:
            problem = f"failed ({type(exc).__name__})"
        if not self._tokenize_warned:
            self._tokenize_warned = True
            log.warning("the model server at %s: /tokenize %s; estimating token counts", self.where, problem)
        return estimate_tokens(text)

    async def close(self) -> None:
        """Close every connection this client opened. Safe to call twice."""
        self._closed = True
        await self._hub.close()
        if self._http is not None:
            client, self._http = self._http, None
            await client.aclose()

    # ---- server facts ---------------------------------------------------------------------

    async def info(self) -> dict[str, Any] | None:
        """TGI's ``/info`` (cached) when the server is TGI, else None.

        A server is TGI when ``GET /info`` answers a JSON object with ``model_id`` and
        ``max_input_tokens``. Any HTTP answer settles the question for good; an unreachable server is
        asked again after ``INFO_RETRY_AFTER_S``.
        """
        if self._info_known:
            return self._info
        async with self._info_lock:
            if self._info_known or time.monotonic() < self._info_retry_at:
                return self._info
            try:
                client = await self._http_client()
                response = await client.get("/info", timeout=INFO_TIMEOUT_S)
            except httpx.HTTPError as exc:
                self._info_retry_at = time.monotonic() + INFO_RETRY_AFTER_S
                log.info("the model server at %s: /info failed (%s); will ask again later", self.where, type(exc).__name__)
                return None
            if response.status_code >= 500:
                self._info_retry_at = time.monotonic() + INFO_RETRY_AFTER_S
                return None
            data: Any = None
            if response.status_code == 200:
                try:
                    data = response.json()
                except ValueError:
                    data = None
            if isinstance(data, dict) and "model_id" in data and "max_input_tokens" in data:
                self._info = data
                log.info(
                    "the model server at %s is TGI %s serving %s (max_input_tokens=%s)",
                    self.where,
                    data.get("version", "?"),
                    data.get("model_id"),
                    data.get("max_input_tokens"),
                )
            self._info_known = True
            return self._info

    @property
    def is_tgi(self) -> bool | None:
        """True/False once known, None before the first ``info()``."""
        return (self._info is not None) if self._info_known else None

    @property
    def max_input_tokens(self) -> int | None:
        """TGI's ``max_input_tokens`` when known."""
        value = (self._info or {}).get("max_input_tokens")
        return value if isinstance(value, int) else None

    @property
    def in_flight(self) -> int:
        """Requests holding one of the ``concurrency`` slots right now."""
        return self._in_flight

    # ---- internals ------------------------------------------------------------------------

    def _make_hub(self) -> AsyncInferenceClient:
        if self._api_key:
            return AsyncInferenceClient(base_url=self.base_url, api_key=self._api_key, timeout=self.timeout_s)
        # Without a key, huggingface_hub would send the person's own HF token to this server:
        # give it a placeholder (so it never looks one up) and blank the header it builds from it.
        return AsyncInferenceClient(
            base_url=self.base_url, api_key="none", timeout=self.timeout_s, headers={"authorization": ""}
        )

    async def _http_client(self) -> httpx.AsyncClient:
        if self._closed:
            raise ModelError("the model client is closed", retryable=False)
        if self._http is None:
            async with self._http_lock:
                if self._http is None:
                    headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
                    limits = httpx.Limits(max_connections=self.concurrency + 8, max_keepalive_connections=self.concurrency + 8)
                    # Building a client loads TLS certificates (tens of ms): not on the event loop.
                    self._http = await asyncio.to_thread(
                        httpx.AsyncClient,
                        base_url=self.base_url,
                        headers=headers,
                        timeout=httpx.Timeout(self.timeout_s),
                        limits=limits,
                    )
        return self._http

    def _stops(self, stop: Sequence[str]) -> list[str]:
        stops: list[str] = []
        for s in stop:
            if s and s not in stops:
                stops.append(s)
        if len(stops) > MAX_STOP_SEQUENCES:
            log.warning(
                "sending only the first %d of %d stop sequences (TGI refuses more)", MAX_STOP_SEQUENCES, len(stops)
            )
            stops = stops[:MAX_STOP_SEQUENCES]
        return stops

    def _backoff(self, attempt: int) -> float:
        delay = min(RETRY_CAP_S, self.retry_base_s * (2**attempt))
        return delay / 2 + random.uniform(0, delay / 2)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        async with self._sem:
            self._in_flight += 1
            try:
                yield
            finally:
                self._in_flight -= 1

    async def _retrying(self, attempt: Callable[[], AsyncIterator[str]]) -> AsyncIterator[str]:
        if self._closed:
            raise ModelError("the model client is closed", retryable=False)
        tries = 0
        while True:
            yielded = 0
            try:
                async with self._slot():
                    async with contextlib.aclosing(attempt()) as deltas:  # type: ignore[type-var]
                        async for delta in deltas:
                            yielded += len(delta)
                            yield delta
                return
            except ModelError as exc:
                if yielded:
                    raise ModelError(
                        f"{exc}; the reply broke off after {yielded} characters", retryable=exc.retryable, status=exc.status
                    ) from exc
                if not exc.retryable or tries >= self.retries:
                    if tries:
                        raise ModelError(
                            f"{exc} (gave up after {tries + 1} attempts)", retryable=exc.retryable, status=exc.status
                        ) from exc
                    raise
                delay = self._backoff(tries)
                tries += 1
                log.info("%s; retry %d of %d in %.2f s", exc, tries, self.retries, delay)
                await asyncio.sleep(delay)

    def _unfinished(self) -> ModelError:
        return ModelError(
            f"the model server at {self.where} ended the stream before the reply was finished "
            "(no finish_reason); its log says why (one cause: a prompt longer than its context window)",
            retryable=True,
        )

    async def _chat_stream(
        self, messages: list[dict[str, str]], max_tokens: int, temperature: float, stops: list[str]
    ) -> AsyncIterator[str]:
        async with self._hub.lease(stream=True) as hub:
            finished = False
            try:
                chunks = await hub.chat_completion(
                    messages,
                    model=self.model,
                    stream=True,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    stop=stops or None,
                )
                async with contextlib.aclosing(chunks):  # type: ignore[type-var]
                    async for chunk in chunks:
                        for choice in chunk.choices or ():
                            finished = finished or bool(choice.finish_reason)
                            content = choice.delta.content if choice.delta is not None else None
                            if content:
                                yield content
                if not finished:
                    raise self._unfinished()
            except json.JSONDecodeError as exc:
                # huggingface_hub only knows "data: [DONE]"; the SSE spec allows "data:[DONE]".
                if exc.doc.strip() == "[DONE]" and finished:
                    return
                raise ModelError(
                    f"the model server at {self.where} sent a malformed stream ({_clip(exc.doc)})", retryable=False
                ) from exc
            except ModelError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure becomes a ModelError
                raise _hub_error(self.where, exc, self.timeout_s, url_setting=self.url_setting) from exc

    async def _raw_stream(self, prompt: str, max_tokens: int, temperature: float, stops: list[str]) -> AsyncIterator[str]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
        }
        if stops:
            body["stop"] = stops
        client = await self._http_client()
        try:
            async with client.stream("POST", "/v1/completions", json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise status_error(
                        self.where, response.status_code, _detail_from_body(response.content), url_setting=self.url_setting
                    )
                finished = False
                async for line in response.aiter_lines():
                    data = _sse_data(line)
                    if not data:
                        continue
                    if data == "[DONE]":
                        if not finished:
                            raise self._unfinished()
                        return
                    try:
                        event = json.loads(data)
                    except ValueError as exc:
                        raise ModelError(
                            f"the model server at {self.where} sent a malformed stream ({_clip(data)})", retryable=False
                        ) from exc
                    if not isinstance(event, dict):
                        continue
                    if event.get("error") is not None:
                        raise event_error(self.where, event["error"], event.get("error_type"), url_setting=self.url_setting)
                    for choice in event.get("choices") or ():
                        if not isinstance(choice, dict):
                            continue
                        finished = finished or bool(choice.get("finish_reason"))
                        text = choice.get("text")
                        if text:
                            yield text
                if not finished:
                    raise self._unfinished()
        except ModelError:
            raise
        except httpx.HTTPError as exc:
            raise transport_error(self.where, exc, self.timeout_s, url_setting=self.url_setting) from exc
