"""``/metrics``, ``/healthz`` and ``/readyz``: what ``personae run`` tells an operator over HTTP.

Served on PERSONAE_METRICS_HOST:PERSONAE_METRICS_PORT (unset port: not served), apart from the
Telegram webhook's port: the webhook faces the internet, this one a private network.

``/healthz``: the process answers (200). ``/readyz``: 200 when the database and Redis answer, the
model server answers, and every adapter is connected (``bots.heartbeat`` knows which); else 503
with a JSON body naming each failing part.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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

Check = Callable[[], Awaitable[None]]  # raises when its part is not ready


def checks(app: "App") -> dict[str, Check]:
    """What /readyz asks, by part: the database, Redis (when configured), the model server, the adapters."""
    found: dict[str, Check] = {}
    store_check = getattr(app.store, "check", None)
    if store_check is not None:
        found["database"] = lambda: store_check(schema=False)
    cache_check = getattr(app.cache, "check", None)
    if cache_check is not None:  # the in-process cache has nothing to reach
        found["redis"] = cache_check
    base_url = getattr(app.model, "base_url", None)
    if base_url:
        from bots.llm.probe import served_model

        key = app.settings.llm_api_key.get_secret_value() if app.settings.llm_api_key else None

        async def model() -> None:
            await served_model(base_url, api_key=key, timeout_s=CHECK_TIMEOUT_S)

        found["model"] = model

    async def adapters() -> None:
        down = heartbeat.not_connected() if heartbeat.watched() else ["none started yet"]
        if down:
            raise ConnectionError(f"not connected: {', '.join(down)}")

    found["adapters"] = adapters
    return found


async def readiness(parts: dict[str, Check]) -> dict[str, str | None]:
    """Each part's problem in one line (None: ready), asked at once, each within CHECK_TIMEOUT_S."""

    async def ask(check: Check) -> str | None:
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT_S:g} s"
        except Exception as exc:  # noqa: BLE001 - every failure is a line of the answer
            return explain(exc).message.replace("\n", "; ")
        return None

    answers = await asyncio.gather(*(ask(check) for check in parts.values()))
    return dict(zip(parts, answers))


def web_app(metrics: PrometheusMetrics, parts: dict[str, Check]) -> Starlette:
    async def metrics_page(_: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("alive\n")

    async def readyz(_: Request) -> Response:
        found = await readiness(parts)
        failing = [part for part, problem in found.items() if problem is not None]
        body: dict[str, Any] = {"ready": not failing, "failing": failing, "parts": {p: problem or "ok" for p, problem in found.items()}}
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


@contextlib.asynccontextmanager
async def serve(web: Starlette, host: str, port: int) -> AsyncIterator[uvicorn.Server]:
    """Serve ``web`` on host:port until the block ends; the port is listening when the block starts."""
    server = _QuietServer(uvicorn.Config(web, host=host, port=port, log_level="warning", access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                with contextlib.suppress(BaseException):
                    task.result()  # uvicorn exits when it cannot bind (and logs why)
                raise ConfigurationError(
                    f"cannot serve metrics on {host}:{port}: the port is taken or the address is not this host's "
                    "(PERSONAE_METRICS_PORT, PERSONAE_METRICS_HOST)"
                )
            await asyncio.sleep(0.01)
        yield server
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
