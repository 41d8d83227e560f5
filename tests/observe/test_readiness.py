"""/readyz: 200 while the database, Redis, the model server and the adapters are all there; 503 naming what is not."""

from __future__ import annotations

import httpx

from bots import heartbeat
from bots.compose import open_cache, open_store, wire
from bots.llm.client import ModelClient
from bots.metrics import PrometheusMetrics
from bots.probes import checks, serve, web_app
from bots.settings import Settings
from storage import migrate
from tests.tgi_server import TGIServer
from tests.throwaway import free_port, throwaway_postgres, throwaway_redis


async def ready(client: httpx.AsyncClient, port: int) -> tuple[int, dict]:
    answer = await client.get(f"http://127.0.0.1:{port}/readyz")
    return answer.status_code, answer.json()


async def test_readyz_names_the_part_that_is_down(tmp_path) -> None:
    connected = {"Discord": True}
    async with TGIServer() as tgi, throwaway_postgres() as pg, throwaway_redis() as redis:
        await migrate.upgrade(pg.url)
        settings = Settings(database_url=pg.url, redis_url=redis.url, llm_url=tgi.base_url, heartbeat_file=tmp_path / "beat")
        store = await open_store(settings)
        cache = await open_cache(settings)
        model = ModelClient(tgi.base_url, timeout_s=5.0, concurrency=4, retries=0)
        app = wire(settings, store, cache, model, appraiser=None)
        port = free_port()
        heartbeat.watch("Discord", lambda: connected["Discord"], tmp_path / "beat")
        try:
            async with serve(web_app(PrometheusMetrics(), checks(app)), "127.0.0.1", port), httpx.AsyncClient(trust_env=False, timeout=30) as client:
                status, body = await ready(client, port)
                assert (status, body["failing"]) == (200, []), body
                assert set(body["parts"]) == {"database", "redis", "model", "adapters"}

                await redis.kill()
                status, body = await ready(client, port)
                assert (status, body["failing"]) == (503, ["redis"]), body
                await redis.start()
                status, body = await ready(client, port)
                assert (status, body["failing"]) == (200, []), body

                await pg.stop()
                status, body = await ready(client, port)
                assert (status, body["failing"]) == (503, ["database"]), body
                assert "PERSONAE_DATABASE_URL" in body["parts"]["database"]
                await pg.start()
                status, body = await ready(client, port)
                assert (status, body["failing"]) == (200, []), body

                connected["Discord"] = False
                status, body = await ready(client, port)
                assert (status, body["failing"]) == (503, ["adapters"]), body
                assert "Discord" in body["parts"]["adapters"]
                connected["Discord"] = True

                await tgi.stop()
                status, body = await ready(client, port)
                assert (status, body["failing"]) == (503, ["model"]), body
                assert "PERSONAE_LLM_URL" in body["parts"]["model"]
                assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        finally:
            heartbeat.unwatch("Discord")
            await model.close()
            await cache.close()
            await store.close()


async def test_readyz_stays_ready_while_one_server_of_the_pool_answers() -> None:
    """A pool with a dead server is ready (the dead one is named in the body); with none answering it is not."""
    from types import SimpleNamespace

    from bots.llm.pool import ModelPool

    dead = f"http://127.0.0.1:{free_port()}"
    async with TGIServer() as tgi:
        clients = [ModelClient(url, timeout_s=5.0, concurrency=4, retries=0, connect_timeout_s=1.0) for url in (dead, tgi.base_url)]
        pool = ModelPool(clients)
        app = SimpleNamespace(store=None, cache=None, model=pool, settings=Settings(llm_url=f"{dead},{tgi.base_url}"))
        port = free_port()
        try:
            async with serve(web_app(PrometheusMetrics(), {"model": checks(app)["model"]}), "127.0.0.1", port), httpx.AsyncClient(trust_env=False, timeout=30) as client:
                status, body = await ready(client, port)
                assert (status, body["failing"]) == (200, []), body
                assert dead in body["parts"]["model"] and "1 of 2" in body["parts"]["model"], body
        finally:
            await pool.close()
    lone = ModelPool([ModelClient(dead, timeout_s=5.0, concurrency=4, retries=0, connect_timeout_s=1.0)])
    app = SimpleNamespace(store=None, cache=None, model=lone, settings=Settings(llm_url=dead))
    port = free_port()
    try:
        async with serve(web_app(PrometheusMetrics(), {"model": checks(app)["model"]}), "127.0.0.1", port), httpx.AsyncClient(trust_env=False, timeout=30) as client:
            status, body = await ready(client, port)
            assert (status, body["failing"]) == (503, ["model"]), body
    finally:
        await lone.close()


async def test_a_taken_metrics_port_or_a_foreign_host_is_one_line_naming_the_setting(caplog) -> None:
    import socket

    import pytest

    from core.errors import ConfigurationError

    web = web_app(PrometheusMetrics(), {})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match="PERSONAE_METRICS_PORT") as caught:
            async with serve(web, "127.0.0.1", port):
                pass
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="PERSONAE_METRICS_HOST"):
        async with serve(web, "192.0.2.1", free_port()):  # TEST-NET-1: no host's address
            pass
    assert not [r for r in caplog.records if r.name.startswith("uvicorn")]  # no second, uvicorn's own, error
