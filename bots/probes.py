"""``/metrics``, ``/healthz`` and ``/readyz``: what ``personae run`` tells an operator over HTTP.

Served on PERSONAE_METRICS_HOST:PERSONAE_METRICS_PORT (unset port: not served), apart from the
Telegram webhook's port: the webhook faces the internet, this one a private network.

``/healthz``: the process answers (200). ``/readyz``: 200 when the database and Redis answer, at
least one model server of the pool answers (the dead ones are named in the body without failing),
and every adapter is connected (``bots.heartbeat`` knows which); else 503 with a JSON body naming
each failing part.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bots import heartbeat
from bots.failures import explain
from bots.metrics import CONTENT_TYPE, PrometheusMetrics
from core.errors import ConfigurationError

if TYPE_CHECKING:
    from bots.compose import App

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 3.0

Check = Callable[[], Awaitable[str | None]]  # raises when its part is not ready; may return a note when it is


def checks(app: "App") -> dict[str, Check]:
    """What /readyz asks, by part: the database, Redis (when configured), the model server, the adapters."""
    found: dict[str, Check] = {}
    store_check = getattr(app.store, "check", None)
    if store_check is not None:
        found["database"] = lambda: store_check(schema=False)
    cache_check = getattr(app.cache, "check", None)
    if cache_check is not None:  # the in-process cache has nothing to reach
        found["redis"] = cache_check
    servers = [c for c in getattr(app.model, "clients", None) or [app.model] if getattr(c, "base_url", None)]
    if servers:
        key = app.settings.llm_api_key.get_secret_value() if app.settings.llm_api_key else None
        found["model"] = pool_check([c.base_url for c in servers], key)

    async def adapters() -> None:
        down = heartbeat.not_connected() if heartbeat.watched() else ["none started yet"]
        if down:
            raise ConnectionError(f"not connected: {', '.join(down)}")

    found["adapters"] = adapters
    return found


def pool_check(urls: list[str], api_key: str | None) -> Check:
    """Ready while at least one of the pool's servers answers ``/v1/models``; the others are named
    in the note (a pool has taken them out; they do not make the process unready)."""
    from bots.llm.probe import served_model

    async def model() -> str | None:
        async def one(url: str) -> str | None:
            try:
                await served_model(url, api_key=api_key, timeout_s=CHECK_TIMEOUT_S * 0.8)
            except Exception as exc:  # noqa: BLE001 - each failure is a line of the answer
                return explain(exc).message.replace("\n", "; ")
            return None

        problems = await asyncio.gather(*(one(url) for url in urls))
        dead = [problem for problem in problems if problem is not None]
        if len(dead) == len(urls):
            raise ConnectionError("; ".join(dead))
        return f"{len(dead)} of {len(urls)} servers down: " + "; ".join(dead) if dead else None

    return model


async def readiness(parts: dict[str, Check]) -> dict[str, tuple[str | None, str | None]]:
    """Each part's (problem, note) in one line each (problem None: ready), asked at once, each within
    CHECK_TIMEOUT_S."""

    async def ask(check: Check) -> tuple[str | None, str | None]:
        try:
            note = await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT_S:g} s", None
        except Exception as exc:  # noqa: BLE001 - every failure is a line of the answer
            return explain(exc).message.replace("\n", "; "), None
        return None, note

    answers = await asyncio.gather(*(ask(check) for check in parts.values()))
    return dict(zip(parts, answers))


def web_app(metrics: PrometheusMetrics, parts: dict[str, Check]) -> Starlette:
    async def metrics_page(_: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("alive\n")

    async def readyz(_: Request) -> Response:
        found = await readiness(parts)
        failing = [part for part, (problem, _) in found.items() if problem is not None]
        shown = {p: problem or (f"ok ({note})" if note else "ok") for p, (problem, note) in found.items()}
        body: dict[str, Any] = {"ready": not failing, "failing": failing, "parts": shown}
        return JSONResponse(body, status_code=503 if failing else 200)

    return Starlette(routes=[Route("/metrics", metrics_page), Route("/healthz", healthz), Route("/readyz", readyz)])


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: ``personae run`` handles SIGTERM and SIGINT itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def watched_app(app: "App") -> AsyncIterator[PrometheusMetrics | None]:
    """With PERSONAE_METRICS_PORT set: core's measurements go to Prometheus and the routes are served
    for as long as the block runs; else nothing is measured (None)."""
    from core import observe

    settings = app.settings
    if settings.metrics_port is None:
        yield None
        return
    metrics = PrometheusMetrics()
    metrics.watch_engine(app.engine)
    previous = observe.use(metrics)
    try:
        async with serve(web_app(metrics, checks(app)), settings.metrics_host, settings.metrics_port):
            log.info("metrics and health on http://%s:%d (/metrics, /healthz, /readyz)", settings.metrics_host, settings.metrics_port)
            yield metrics
    finally:
        observe.use(previous)


def bound_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, or ConfigurationError in one line naming the setting to change."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (OSError, UnicodeError) as exc:
        raise ConfigurationError(f"cannot serve metrics on {host}:{port}: {host!r} is not an address of this host ({exc}); check PERSONAE_METRICS_HOST") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"cannot serve metrics on {host}:{port}: the port is taken; set PERSONAE_METRICS_PORT to a free port"
            ) from None
        raise ConfigurationError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; set PERSONAE_METRICS_HOST to an address of this host "
            "(e.g. 0.0.0.0), or PERSONAE_METRICS_PORT"
        ) from None
    return sock


async def _serving(server: uvicorn.Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def serve(web: Starlette, host: str, port: int) -> AsyncIterator[uvicorn.Server]:
    """Serve ``web`` on host:port until the block ends; the port is listening when the block starts."""
    sock = bound_socket(host, port)  # bound here: uvicorn would log its own error and exit the process
    server = _QuietServer(uvicorn.Config(web, host=host, port=port, log_level="warning", access_log=False, lifespan="off"))
    task = asyncio.create_task(_serving(server, sock))
    try:
        while not server.started:
            if task.done():
                with contextlib.suppress(BaseException):
                    task.result()
                raise ConfigurationError(f"cannot serve metrics on {host}:{port} (PERSONAE_METRICS_PORT, PERSONAE_METRICS_HOST)")
            await asyncio.sleep(0.01)
        yield server
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
