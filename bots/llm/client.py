"""The model-server client: one code path for TGI, vLLM, SGLang and llama.cpp's server.

``ModelClient`` implements ``core.ports.ChatModel``. Chat requests go through
``huggingface_hub.AsyncInferenceClient.chat_completion`` (the OpenAI-style Messages API); the
``training`` layout (BD-RP's own, chosen by ``auto`` for a BD-RP model: ``dialects.choose_layout``)
renders the prompt itself and streams it from ``/v1/completions`` with httpx. Whole answers
(``complete``: the appraisals, derive) go in the same layout as the replies: in the training layout
the same raw string, to TGI's native ``/generate`` (which takes a grammar; its ``/v1/completions``
does not) or to a non-streamed ``/v1/completions`` elsewhere.
Everything a server or the network can do wrong ends up as ``core.errors.ModelError`` with a message
that says what failed and where. A request is sent again only when the server never worked on it
(not reached, or 429/503 after its ``Retry-After``), never after a timeout once it was sent: that
would only multiply the load on a slow server.

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
import email.utils
import errno
import functools
import json
import logging
import math
import random
import ssl
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx
from huggingface_hub import AsyncInferenceClient
from huggingface_hub import constants as hub_constants
from huggingface_hub import errors as hub_errors

from bots.llm import dialects
from bots.llm.dialects import Dialect
from core import observe
from core.errors import ModelError
from core.model_input import chat_payload, render_mistral_raw
from core.ports import ModelSlots
from core.slots import MODEL_CHANNEL, SLOT_CLOCK
from core.prompt import estimate_tokens

try:  # The HTTP library huggingface_hub itself uses (httpx2 since 2.0), exported for this purpose.
    from huggingface_hub.utils import httpx as hub_httpx
except ImportError:  # pragma: no cover - older huggingface_hub
    hub_httpx = httpx

log = logging.getLogger(__name__)


@functools.cache
def tls_context(library: Any) -> ssl.SSLContext:
    """``library``'s default TLS context (httpx or httpx2), built once per process: loading the
    certificates costs tens of milliseconds of CPU, which every new client paid again (and a hub
    client built on the event loop, at every rotation, paid there)."""
    return library.create_ssl_context()


def _hub_session() -> Any:
    """huggingface_hub's own async client, with the shared TLS context."""
    from huggingface_hub.utils import _http as hub_http

    return hub_httpx.AsyncClient(
        event_hooks={"request": [hub_http.async_hf_request_event_hook], "response": [hub_http.async_hf_response_event_hook]},
        follow_redirects=True,
        timeout=None,
        verify=tls_context(hub_httpx),
    )


try:  # the hooks are huggingface_hub's internals: a release without them keeps its own factory
    from huggingface_hub.utils import _http as _hub_http_internals
    from huggingface_hub.utils import set_async_client_factory

    if callable(getattr(_hub_http_internals, "async_hf_request_event_hook", None)) and callable(
        getattr(_hub_http_internals, "async_hf_response_event_hook", None)
    ):
        set_async_client_factory(_hub_session)
except ImportError:  # pragma: no cover
    pass

# huggingface_hub builds a user-agent for every request, and unless telemetry is off that asks the
# Hub (huggingface.co/api/agent-harnesses, synchronously, on the event loop) which AI agents exist.
# personae talks to its own model server only: no request may leave for the Hub.
hub_constants.HF_HUB_DISABLE_TELEMETRY = True

LAYOUTS = ("auto", "training", "chat")
LAYOUT_ALIASES = {"mistral-raw": "training"}  # the training layout's earlier name
MAX_STOP_SEQUENCES = 4  # TGI's default --max-stop-sequences; more is a 422
RETRY_BASE_S = 0.25
RETRY_CAP_S = 4.0
RETRY_AFTER_MAX_S = 30.0  # a server asking for a longer wait is not retried: the person is told at once
CONNECT_TIMEOUT_S = 5.0
FIRST_TOKEN_TIMEOUT_S = 60.0  # a busy GPU can queue a request this long before its first token
INFO_TIMEOUT_S = 3.0
TOKENIZE_TIMEOUT_S = 2.0
INFO_RETRY_AFTER_S = 30.0  # when /info could not be reached, ask again after this long
ROTATE_AFTER_STREAMS = 512
HUB_POOL_CONNECTIONS = 100  # httpx2's default pool size, used by huggingface_hub
RAW_STOP = "[INST]"  # in the raw layout, the model must not write the next user turn
_DETAIL_CHARS = 300
# The most of a whole (non-streamed) answer read from the server: 64 KB, plus 64 bytes a token of the
# request's budget (a token is a few UTF-8 bytes; JSON escapes it to at most six per character).
# An answer past it is not a model's answer to a short task, and is not read to the end.
ANSWER_BYTES_BASE = 65_536
ANSWER_BYTES_PER_TOKEN = 64
# TGI's refusal when it runs with --disable-grammar-support (router/src/validation.rs,
# ValidationError::Grammar: "grammar is not supported", sent as "Input validation error: ...").
# Other 422s that name the grammar ("grammar is not valid: ...") are about this grammar, not support.
GRAMMAR_UNSUPPORTED = "grammar is not supported"
URL_SETTING = "PERSONAE_LLM_URL"  # what points personae at a model server it did not start

_TIMEOUTS = (hub_errors.InferenceTimeoutError, httpx.TimeoutException, hub_httpx.TimeoutException, TimeoutError)
_CONNECT_ERRORS = (httpx.ConnectError, hub_httpx.ConnectError)
# Failures before the request left this process: sending it again cannot make the server do the work twice.
_UNSENT = (*_CONNECT_ERRORS, httpx.ConnectTimeout, hub_httpx.ConnectTimeout, httpx.PoolTimeout, hub_httpx.PoolTimeout)


class ServerNotReached(ModelError):
    """No request reached the model server (connection refused, connect timeout): safe to send again."""


class GrammarRefused(ModelError):
    """TGI refused a grammar (422; it runs with ``--disable-grammar-support``)."""


def answer_limit(max_tokens: int) -> int:
    """How many bytes of a whole answer to ``max_tokens`` are read before it is refused as too large."""
    return ANSWER_BYTES_BASE + ANSWER_BYTES_PER_TOKEN * max(0, int(max_tokens))


class ServerBusy(ModelError):
    """The model server refused the request unworked (429, 503); ``retry_after_s`` is its ``Retry-After``."""

    def __init__(self, message: str, *, status: int, retry_after_s: float | None = None) -> None:
        super().__init__(message, retryable=True, status=status)
        self.retry_after_s = retry_after_s


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), None when absent or unreadable."""
    value = (headers or {}).get("retry-after") if headers is not None else None
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def may_resend(error: ModelError) -> bool:
    """Whether a failed request may be sent again: only when the server never worked on it."""
    return isinstance(error, (ServerNotReached, ServerBusy))
_TRANSPORT_ERRORS = (httpx.TransportError, hub_httpx.TransportError)
_HTTP_ERRORS = (httpx.HTTPError, hub_httpx.HTTPError)


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


def status_error(
    where: str, status: int, detail: str | None = None, retry_after_s: float | None = None, *, url_setting: str | None = URL_SETTING
) -> ModelError:
    """The ModelError for an HTTP status (or a stream error event carrying one). ``url_setting`` names
    the setting that points personae at the server (None: personae started the server itself)."""
    tail = f": {detail}" if detail else ""
    if status == 429:
        return ServerBusy(f"the model server at {where} is overloaded (429){tail}", status=status, retry_after_s=retry_after_s)
    if status == 503:
        return ServerBusy(f"the model server at {where} is unavailable (503){tail}", status=status, retry_after_s=retry_after_s)
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


def _unsent(exc: BaseException) -> BaseException | None:
    """The connect-phase failure behind ``exc`` (huggingface_hub wraps it), None if the request went out."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _UNSENT):
            return current
        current = current.__cause__ or current.__context__
    return None


def transport_error(where: str, exc: BaseException, timeout_s: float, *, url_setting: str | None = URL_SETTING) -> ModelError:
    """The ModelError for a network failure (refused, timed out, cut off).

    Only failures before the request went out (refused, connect timeout, no pooled connection)
    become ``ServerNotReached``; a timeout after it went out is the server working slowly.
    """
    unsent = _unsent(exc)
    if isinstance(unsent, (httpx.PoolTimeout, hub_httpx.PoolTimeout)):
        return ServerNotReached(f"no connection to the model server at {where} came free in time", retryable=True)
    if isinstance(unsent, (httpx.ConnectTimeout, hub_httpx.ConnectTimeout)):
        return ServerNotReached(
            f"the model server at {where} could not be reached (connect timeout; PERSONAE_LLM_CONNECT_TIMEOUT_S)",
            retryable=True,
        )
    if unsent is not None:
        if _refused(exc):
            running = f"is it running ({url_setting})?" if url_setting else "is it still running?"
            return ServerNotReached(f"the model server at {where} refused the connection; {running}", retryable=True)
        return ServerNotReached(
            f"the model server at {where} could not be reached ({_clip(str(unsent)) or type(unsent).__name__})",
            retryable=True,
        )
    if isinstance(exc, _TIMEOUTS):
        return ModelError(f"the model server at {where} did not answer within {timeout_s:g} s", retryable=True)
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
        return _inside_stream(status_error(where, status, detail, url_setting=url_setting))
    return ModelError(f"the model server at {where} reported an error inside the stream: {detail}", retryable=True)


def _inside_stream(error: ModelError) -> ModelError:
    """``error`` said to have come inside a 200 stream, of the same kind (busy stays busy)."""
    if isinstance(error, ServerBusy):
        return ServerBusy(f"{error} (reported inside the stream)", status=error.status or 429, retry_after_s=error.retry_after_s)
    return ModelError(f"{error} (reported inside the stream)", retryable=error.retryable, status=error.status)


def _hub_error(where: str, exc: BaseException, timeout_s: float, *, url_setting: str | None = URL_SETTING) -> ModelError:
    """Map whatever huggingface_hub raised to a ModelError."""
    if isinstance(exc, ModelError):
        return exc
    if isinstance(exc, hub_errors.TextGenerationError):  # an error event inside the stream
        payload = exc.args[0] if exc.args else None
        status = _EVENT_STATUS.get(type(exc))
        if isinstance(payload, dict) or status is None:
            return event_error(where, payload, None if status is None else _status_type(status), url_setting=url_setting)
        return _inside_stream(status_error(where, status, _clip(str(payload)) if payload else None, url_setting=url_setting))
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
            return status_error(where, status, detail, retry_after(getattr(response, "headers", None)), url_setting=url_setting)
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
    128 by default: past it TGI refuses instead of queueing). Three timeouts, none for a whole reply:
    ``connect_timeout_s`` to open a connection, ``first_token_timeout_s`` from sending the request to
    its first text (a busy GPU queues requests), then ``timeout_s`` between one text delta and the
    next. ``retries`` is how many times a request is sent again, and only when the server never
    worked on it: it was not reached, or it answered 429 or 503 (after its ``Retry-After``, if any).
    ``sleep`` waits between attempts (tests pass one that records the delays).
    ``url_setting`` is the setting errors name as the way to point personae at the server; None for
    a server personae started itself (the embedded one). ``slots``: the deployment's model budget
    (``core.ports.ModelSlots``), taken per request after the process's own cap, for the channel in
    ``core.slots.MODEL_CHANNEL``; ``low_priority`` requests (appraisals) give way to waiting replies.
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
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        first_token_timeout_s: float = FIRST_TOKEN_TIMEOUT_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        url_setting: str | None = URL_SETTING,
        slots: ModelSlots | None = None,
        low_priority: bool = False,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the model server URL must start with http:// or https://, got {_safe_url(base_url)!r}")
        if model is not None and model.startswith(("http://", "https://")):
            raise ValueError("the model name (PERSONAE_LLM_MODEL) must be a served model name, not a URL")
        layout = LAYOUT_ALIASES.get(layout, layout)
        if layout not in LAYOUTS:
            raise ValueError(f"unknown prompt layout {layout!r}; use one of: {', '.join(LAYOUTS)}")
        if concurrency < 1:
            raise ValueError("the model concurrency must be at least 1")
        if min(timeout_s, connect_timeout_s, first_token_timeout_s) <= 0:
            raise ValueError("the model timeouts must be positive")
        root = base_url.rstrip("/")
        if root.endswith("/v1"):
            root = root[: -len("/v1")]
        self.base_url = root
        self.where = _safe_url(root)
        self.url_setting = url_setting
        self.model = model or "tgi"
        self.layout_setting = layout  # what PERSONAE_PROMPT_LAYOUT asked for ("auto" included)
        # The layout in use and why; "auto" settles it when the server says what it serves (_settle).
        self.layout, self.layout_reason = dialects.choose_layout(layout, None, model)
        self._layout_told = False
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.first_token_timeout_s = float(first_token_timeout_s)
        self._sleep = sleep
        self.concurrency = concurrency
        self.retries = max(0, int(retries))
        self.retry_base_s = retry_base_s
        self._api_key = api_key or None
        self._sem = asyncio.Semaphore(concurrency)
        self._in_flight = 0
        # The deployment's budget for this server (every replica's requests), past the process's own cap.
        self._slots = slots
        # Set by a pool: whether another healthy server could take a request that did not reach
        # this one (then a refused connection is not retried here: the pool moves on at once).
        self.elsewhere: Callable[[], bool] | None = None
        self._low_priority = low_priority
        self._hub = _HubClients(self._make_hub, ROTATE_AFTER_STREAMS)
        self._http: httpx.AsyncClient | None = None
        self._http_lock = asyncio.Lock()
        self._info: dict[str, Any] | None = None
        self._dialect: Dialect | None = None  # which server this is, once asked
        self._configured_model = model  # None: self.model follows what the server serves (dialect())
        self._info_known = False
        self._info_retry_at = 0.0
        self._info_lock = asyncio.Lock()
        self._tokenize_warned = False
        self._grammar_refused = False  # TGI said 422 to a grammar: send none again
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
        busy_resends: bool = True,
    ) -> AsyncIterator[str]:
        """Yield the reply's text deltas. Raises ModelError.

        A request the server never worked on is sent again (jittered exponential backoff, at least
        its ``Retry-After``); a failure after a delta is raised at once (the caller ends the reply
        with a notice). ``busy_resends=False``: a busy answer (429/503) is raised at once instead
        (a pool sends the request to another server).
        """
        stops = self._stops(stop)
        await self._learn_model_name()
        self._tell_layout()
        if self.layout == "training":
            prompt = render_mistral_raw(messages, bos="")
            if RAW_STOP not in stops and len(stops) < MAX_STOP_SEQUENCES:
                stops.append(RAW_STOP)

            def attempt() -> AsyncIterator[str]:
                return self._raw_stream(prompt, max_tokens, temperature, stops)

        else:
            payload = chat_payload(messages)

            def attempt() -> AsyncIterator[str]:
                return self._chat_stream(payload, max_tokens, temperature, stops)

        async with contextlib.aclosing(self._retrying(attempt, busy_resends=busy_resends)) as deltas:  # type: ignore[type-var]
            async for delta in deltas:
                yield delta

    async def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        json_schema: Mapping[str, Any] | None = None,
        analysis_first: bool = False,
        busy_resends: bool = True,
    ) -> str:
        """A whole answer, in the same layout as the replies (``stream``).

        In the ``training`` layout the messages go as the raw string the model was trained on
        (``render_mistral_raw``, as the replies): to TGI's native ``/generate``, whose ``grammar``
        takes ``json_schema`` in the shape ``dialects`` gives (with ``analysis_first``, a regex that
        lets the analysis come first); elsewhere to ``/v1/completions`` unconstrained (the caller
        parses the last JSON object). A TGI that refuses grammars (``--disable-grammar-support``:
        422) is asked once more without one, and is not sent one again.
        In the ``chat`` layout the chat API: ``json_schema`` goes out in the server's own
        ``response_format`` shape (see ``dialects``); servers without guided JSON get none.
        ``busy_resends`` as in ``stream``.
        """
        dialect = await self.dialect()
        self._tell_layout()
        if self.layout == "training":
            try:
                prompt = render_mistral_raw(messages, bos="")
            except ValueError:
                prompt = None  # not a conversation the training layout can express: the chat API takes it
            if prompt is not None:
                if dialect is not None and dialect.kind == "tgi":
                    grammar = None
                    if json_schema is not None and not self._grammar_refused:
                        grammar = dialect.response_format(json_schema, analysis_first=analysis_first)
                    return await self._generate(prompt, max_tokens, temperature, grammar, busy_resends)
                body = {
                    "model": self.model,
                    "prompt": prompt,
                    "max_tokens": max_tokens,
                    "temperature": temperature,
                    "stop": [RAW_STOP],
                    "stream": False,
                }
                return "".join(
                    [part async for part in self._retrying(lambda: self._completion_json(body), busy_resends=busy_resends)]
                )
        return await self._chat_complete(messages, dialect, max_tokens, temperature, json_schema, analysis_first, busy_resends)

    async def _chat_complete(
        self,
        messages: Sequence[Mapping[str, str]],
        dialect: Dialect | None,
        max_tokens: int,
        temperature: float,
        json_schema: Mapping[str, Any] | None,
        analysis_first: bool,
        busy_resends: bool = True,
    ) -> str:
        extra: dict[str, Any] = {}
        if json_schema is not None and dialect is not None:
            response_format = dialect.response_format(json_schema, analysis_first=analysis_first)
            if response_format is not None:
                extra["response_format"] = response_format
        payload = chat_payload(messages)
        if extra.get("response_format", {}).get("type") == "json_schema":
            # huggingface_hub rewrites OpenAI's json_schema shape into TGI's, which vLLM and SGLang
            # would take as "any JSON": send this one request without it.
            body = {"model": self.model, "messages": payload, "max_tokens": max_tokens, "temperature": temperature, **extra}
            return "".join([part async for part in self._retrying(lambda: self._chat_json(body), busy_resends=busy_resends)])

        async def attempt() -> AsyncIterator[str]:
            async with self._hub.lease(stream=False) as hub:
                try:
                    out = await hub.chat_completion(
                        payload, model=self.model, stream=False, max_tokens=max_tokens, temperature=temperature, **extra
                    )
                except Exception as exc:  # noqa: BLE001 - every failure becomes a ModelError
                    raise _hub_error(self.where, exc, self.first_token_timeout_s, url_setting=self.url_setting) from exc
            choices = out.choices or []
            yield (choices[0].message.content or "") if choices else ""

        parts = [part async for part in self._retrying(attempt, busy_resends=busy_resends)]
        return "".join(parts)

    async def _generate(
        self, prompt: str, max_tokens: int, temperature: float, grammar: Mapping[str, Any] | None, busy_resends: bool = True
    ) -> str:
        """One answer from TGI's native ``/generate`` (``{"inputs", "parameters"}`` -> ``{"generated_text"}``)."""
        parameters: dict[str, Any] = {"max_new_tokens": max_tokens, "stop": [RAW_STOP], "details": False}
        if temperature > 0:
            parameters.update(do_sample=True, temperature=temperature)
        else:  # TGI's native API refuses temperature 0: greedy is do_sample false
            parameters["do_sample"] = False
        if grammar is not None:
            parameters["grammar"] = dict(grammar)
        body = {"inputs": prompt, "parameters": parameters}
        try:
            return "".join([part async for part in self._retrying(lambda: self._generate_json(body), busy_resends=busy_resends)])
        except GrammarRefused as exc:
            if not self._grammar_refused:
                self._grammar_refused = True
                log.warning("%s; appraisals go without a grammar from now on (the last JSON object of the answer is read)", exc)
            parameters.pop("grammar", None)
            return "".join([part async for part in self._retrying(lambda: self._generate_json(body), busy_resends=busy_resends)])

    async def _generate_json(self, body: dict[str, Any]) -> AsyncIterator[str]:
        """One ``/generate`` request posted as is (yields the answer once).

        Runs inside the concurrency slot: a grammar is left out when an earlier request (perhaps one
        that held the slot just now) learnt that this TGI refuses grammars.
        """
        if self._grammar_refused and "grammar" in body.get("parameters", {}):
            body = {**body, "parameters": {k: v for k, v in body["parameters"].items() if k != "grammar"}}
        response = await self._post_capped("/generate", body, body.get("parameters", {}).get("max_new_tokens", 0), self.first_token_timeout_s)
        if response.status_code >= 400:
            detail = _detail_from_body(response.content)
            error = status_error(self.where, response.status_code, detail, retry_after(response.headers), url_setting=self.url_setting)
            if response.status_code == 422 and "grammar" in body.get("parameters", {}) and GRAMMAR_UNSUPPORTED in (detail or "").lower():
                raise GrammarRefused(str(error), retryable=False, status=422)
            raise error
        try:
            answer = response.json()
            if isinstance(answer, list):  # TGI's compat route answers a list of one
                answer = answer[0]
            text = answer["generated_text"]
            if not isinstance(text, str):
                raise TypeError("generated_text is not text")
        except (ValueError, LookupError, TypeError) as exc:
            raise ModelError(
                f"the model server at {self.where} sent a malformed answer ({observe.quoted(_clip(response.text))})", retryable=False
            ) from exc
        yield text

    async def _completion_json(self, body: dict[str, Any]) -> AsyncIterator[str]:
        """One non-streamed ``/v1/completions`` request posted as is (yields the answer once)."""
        response = await self._post_capped("/v1/completions", body, body.get("max_tokens", 0), self.first_token_timeout_s)
        if response.status_code >= 400:
            raise status_error(
                self.where, response.status_code, _detail_from_body(response.content), retry_after(response.headers), url_setting=self.url_setting
            )
        try:
            choices = response.json().get("choices") or []
            text = (choices[0].get("text") or "") if choices else ""
        except (ValueError, AttributeError, TypeError) as exc:
            raise ModelError(
                f"the model server at {self.where} sent a malformed answer ({observe.quoted(_clip(response.text))})", retryable=False
            ) from exc
        yield text

    async def _post_capped(self, route: str, body: dict[str, Any], max_tokens: Any, timeout_s: float) -> httpx.Response:
        """POST ``body``; the response, its body read only up to ``answer_limit(max_tokens)`` bytes.

        A longer body is a ModelError (not retried): no model answers a short task with megabytes,
        and reading and parsing them would hold the event loop.
        """
        limit = answer_limit(max_tokens if isinstance(max_tokens, int) else 0)
        client = await self._http_client()
        try:
            async with client.stream("POST", route, json=body) as response:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise ModelError(
                            f"the model server at {self.where} sent an answer of over {limit // 1024} KB to {route}; not read",
                            retryable=False,
                        )
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise transport_error(self.where, exc, timeout_s, url_setting=self.url_setting) from exc
        # The bytes are decoded already: the new response must not decode them again.
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")]
        return httpx.Response(response.status_code, headers=headers, content=b"".join(chunks), request=response.request)

    async def count_tokens(self, text: str) -> int:
        """The server's own token count where it has a tokenize route (see ``dialects``), else ``estimate_tokens``."""
        if not text:
            return 0
        dialect = await self.dialect()
        request = dialect.tokenize_request(text, self.model) if dialect is not None else None
        if request is None:
            return estimate_tokens(text)
        route, body = request
        try:
            client = await self._http_client()
            response = await client.post(route, json=body, timeout=TOKENIZE_TIMEOUT_S)
            if response.status_code == 200:
                count = dialects.token_count(response.json())
                if count is not None:
                    return count
            problem = f"answered {response.status_code}"
        except (httpx.HTTPError, ValueError) as exc:
            problem = f"failed ({type(exc).__name__})"
        if not self._tokenize_warned:
            self._tokenize_warned = True
            log.warning("the model server at %s: %s %s; estimating token counts", self.where, route, problem)
        return estimate_tokens(text)

    async def close(self) -> None:
        """Close every connection this client opened. Safe to call twice."""
        self._closed = True
        await self._hub.close()
        if self._http is not None:
            client, self._http = self._http, None
            await client.aclose()

    # ---- server facts ---------------------------------------------------------------------

    async def reachable(self) -> bool:
        """Whether the server answers ``/v1/models`` below 500 now (the pool's probe of a server taken out)."""
        try:
            client = await self._http_client()
            response = await client.get("/v1/models", timeout=self.connect_timeout_s + 1)
        except (httpx.HTTPError, ModelError, OSError):
            return False
        return response.status_code < 500

    async def generates(self, timeout_s: float) -> bool:
        """Whether the server writes one token of a tiny reply within ``timeout_s`` now (the pool's
        probe of a server taken out for timeouts: it may answer ``/v1/models`` and still hang)."""
        try:
            async with asyncio.timeout(timeout_s):
                stream = self.stream([{"role": "user", "content": "Hi"}], max_tokens=1, temperature=0.0, busy_resends=False)
                async with contextlib.aclosing(stream):  # type: ignore[type-var]
                    async for _ in stream:
                        return True
            return True  # ended without text (e.g. an immediate stop): it answered
        except (TimeoutError, ModelError, httpx.HTTPError, OSError):
            return False

    async def info(self) -> dict[str, Any] | None:
        """TGI's ``/info`` when the server is TGI, else None."""
        await self.dialect()
        return self._info

    async def dialect(self) -> Dialect | None:
        """Which server this is (see ``dialects``), asked once; None while it cannot be reached.

        Any HTTP answer settles the question for good; an unreachable server is asked again after
        ``INFO_RETRY_AFTER_S``. Learning the server also settles the model name when
        PERSONAE_LLM_MODEL is unset (vLLM and SGLang refuse any name but the served one).
        """
        if self._info_known:
            return self._dialect
        async with self._info_lock:
            if self._info_known or time.monotonic() < self._info_retry_at:
                return self._dialect
            try:
                client = await self._http_client()
                dialect = await dialects.detect(client, timeout_s=INFO_TIMEOUT_S)
            except dialects.Unreachable as exc:
                self._info_retry_at = time.monotonic() + INFO_RETRY_AFTER_S
                log.info("the model server at %s: %s; will ask again later", self.where, exc)
                return None
            except dialects.NotAModelServer as exc:
                # `personae doctor` fails on this; a turn still goes out as to a plain OpenAI-style server.
                log.warning("the server at %s does not look like a model server: %s; check PERSONAE_LLM_URL", self.where, exc)
                dialect = dialects.Dialect("openai")
            self._settle(dialect)
            return dialect

    def _tell_layout(self) -> None:
        """Log the layout and why, once, when it is settled (the first reply says it)."""
        if self._layout_told or (self.layout_setting == "auto" and not self._info_known):
            return
        self._layout_told = True
        log.info("prompt layout for %s: %s (%s)", self.where, self.layout, self.layout_reason)

    def _settle(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._info = dict(dialect.info) if dialect.info is not None else None
        self.model = dialect.model_name(self._configured_model)
        self._info_known = True
        self.layout, self.layout_reason = dialects.choose_layout(self.layout_setting, dialect, self._configured_model)
        served = ", ".join(dialect.served_models) or "?"
        if self._info is not None:
            log.info(
                "the model server at %s is TGI %s serving %s (max_input_tokens=%s)",
                self.where,
                self._info.get("version", "?"),
                self._info.get("model_id"),
                self._info.get("max_input_tokens"),
            )
        else:
            log.info("the model server at %s is %s serving %s; sending model=%r", self.where, dialect.kind, served, self.model)
        if dialect.kind in ("vllm", "sglang") and dialect.served_models and self.model not in dialect.served_models:
            log.warning(
                "PERSONAE_LLM_MODEL=%s, but the model server at %s serves %s: it will answer 404; "
                "unset PERSONAE_LLM_MODEL or set it to the served name",
                self.model,
                self.where,
                served,
            )

    async def _learn_model_name(self) -> None:
        # The name to send depends on the server (and a wrong configured one is worth a warning): ask it first.
        if not self._info_known:
            await self.dialect()

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

    def _network_timeout(self, library: Any) -> Any:
        """The HTTP library's timeouts: connecting is short; reads wait as long as a first token may
        take (``_retrying`` holds later deltas to ``timeout_s`` itself)."""
        return library.Timeout(
            connect=self.connect_timeout_s,
            read=self.first_token_timeout_s,
            write=self.timeout_s,
            pool=self.first_token_timeout_s,
        )

    def _make_hub(self) -> AsyncInferenceClient:
        # huggingface_hub hands ``timeout`` to httpx2 as is, so a Timeout with its four parts works.
        timeout: Any = self._network_timeout(hub_httpx)
        if self._api_key:
            return AsyncInferenceClient(base_url=self.base_url, api_key=self._api_key, timeout=timeout)
        # Without a key, huggingface_hub would send the person's own HF token to this server:
        # give it a placeholder (so it never looks one up) and blank the header it builds from it.
        return AsyncInferenceClient(
            base_url=self.base_url, api_key="none", timeout=timeout, headers={"authorization": ""}
        )

    async def _http_client(self) -> httpx.AsyncClient:
        if self._closed:
            raise ModelError("the model client is closed", retryable=False)
        if self._http is None:
            async with self._http_lock:
                if self._http is None:
                    headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
                    limits = httpx.Limits(max_connections=self.concurrency + 8, max_keepalive_connections=self.concurrency + 8)
                    # The TLS certificates are loaded once per process (tens of ms): not on the event loop.
                    verify = await asyncio.to_thread(tls_context, httpx)
                    self._http = httpx.AsyncClient(
                        base_url=self.base_url,
                        headers=headers,
                        timeout=self._network_timeout(httpx),
                        limits=limits,
                        verify=verify,
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
        """Hold one of this client's ``concurrency`` slots and one of the global budget's; the wait
        for them is measured on its own (personae_model_slot_wait_seconds), and the turn's
        first-token clock starts once they are held (``core.slots.SLOT_CLOCK``)."""
        metrics = observe.metrics
        started = time.monotonic()
        metrics.model_slots(1, 0)
        waiting = True
        try:
            async with self._sem:
                self._in_flight += 1
                try:
                    async with self._slots.slot(self.where, MODEL_CHANNEL.get(), low=self._low_priority) if self._slots is not None else contextlib.nullcontext():
                        taken = time.monotonic()
                        waiting = False
                        metrics.model_slots(-1, 1)
                        metrics.model_slot_wait(taken - started)
                        clock = SLOT_CLOCK.get()
                        if clock is not None:
                            clock.taken = taken
                        try:
                            yield
                        finally:
                            metrics.model_slots(0, -1)
                finally:
                    self._in_flight -= 1
        finally:
            if waiting:
                metrics.model_slots(-1, 0)

    async def _retrying(self, attempt: Callable[[], AsyncIterator[str]], *, busy_resends: bool = True) -> AsyncIterator[str]:
        if self._closed:
            raise ModelError("the model client is closed", retryable=False)
        tries = 0
        while True:
            yielded = 0
            try:
                async with self._slot():
                    async with contextlib.aclosing(attempt()) as deltas:  # type: ignore[type-var]
                        while True:
                            delta = await self._next_delta(deltas, first=not yielded)
                            if delta is None:
                                break
                            yielded += len(delta)
                            yield delta
                return
            except ModelError as exc:
                if yielded:
                    raise ModelError(
                        f"{exc}; the reply broke off after {yielded} characters", retryable=exc.retryable, status=exc.status
                    ) from exc
                delay = self._resend_delay(exc, tries)
                if delay is not None and not busy_resends and isinstance(exc, ServerBusy):
                    delay = None  # the caller has another server to send it to
                if delay is None:
                    if tries:
                        raise ModelError(
                            f"{exc} (gave up after {tries + 1} attempts)", retryable=exc.retryable, status=exc.status
                        ) from exc
                    raise
                tries += 1
                log.info("%s; retry %d of %d in %.2f s", exc, tries, self.retries, delay)
                await self._sleep(delay)

    async def _next_delta(self, deltas: AsyncIterator[str], *, first: bool) -> str | None:
        """The next non-empty delta (None at the end) within the first-token or the per-token timeout."""
        limit, setting = (
            (self.first_token_timeout_s, "PERSONAE_LLM_FIRST_TOKEN_TIMEOUT_S") if first else (self.timeout_s, "PERSONAE_LLM_TIMEOUT_S")
        )
        try:
            async with asyncio.timeout(limit):
                async for delta in deltas:
                    if delta:
                        return delta
                return None
        except TimeoutError:
            what = "sent no text" if first else "stopped sending text"
            # The request was accepted and may still be generating: sending it again would double the load.
            raise ModelError(f"the model server at {self.where} {what} for {limit:g} s ({setting})", retryable=True) from None

    def _resend_delay(self, error: ModelError, tries: int) -> float | None:
        """How long to wait before sending a failed request again; None: do not send it again."""
        if not may_resend(error) or tries >= self.retries:
            return None
        if isinstance(error, ServerNotReached) and self.elsewhere is not None and self.elsewhere():
            return None
        delay = self._backoff(tries)
        wanted = error.retry_after_s if isinstance(error, ServerBusy) else None
        if wanted is not None:
            if wanted > RETRY_AFTER_MAX_S:
                return None
            delay = max(delay, wanted)
        return delay

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
                    f"the model server at {self.where} sent a malformed stream ({observe.quoted(_clip(exc.doc))})", retryable=False
                ) from exc
            except ModelError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure becomes a ModelError
                raise _hub_error(self.where, exc, self.first_token_timeout_s, url_setting=self.url_setting) from exc

    async def _chat_json(self, body: dict[str, Any]) -> AsyncIterator[str]:
        """One non-streamed chat completion posted as is (yields the answer once)."""
        response = await self._post_capped("/v1/chat/completions", body, body.get("max_tokens", 0), self.timeout_s)
        if response.status_code >= 400:
            raise status_error(self.where, response.status_code, _detail_from_body(response.content), url_setting=self.url_setting)
        try:
            choices = response.json().get("choices") or []
            yield (choices[0].get("message") or {}).get("content") or "" if choices else ""
        except (ValueError, AttributeError, TypeError) as exc:
            raise ModelError(
                f"the model server at {self.where} sent a malformed answer ({observe.quoted(_clip(response.text))})", retryable=False
            ) from exc

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
                        self.where, response.status_code, _detail_from_body(response.content), retry_after(response.headers), url_setting=self.url_setting
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
                            f"the model server at {self.where} sent a malformed stream ({observe.quoted(_clip(data))})", retryable=False
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
            raise transport_error(self.where, exc, self.first_token_timeout_s, url_setting=self.url_setting) from exc
