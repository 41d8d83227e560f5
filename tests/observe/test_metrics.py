"""Turns through the engine against the TGI double move the Prometheus metrics served on /metrics."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bots.metrics import PrometheusMetrics
from bots.probes import checks, serve, web_app
from bots.streaming import StreamedMessage, first_shown
from core import observe
from core.reply import ReplyStatus
from tests.engine.conftest import build_world, tgi  # noqa: F401  (the TGI double fixture)
from tests.throwaway import free_port


def samples(page: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def total(found: dict, name: str, **labels: str) -> float:
    """The sum of ``name`` over every series whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and want <= set(ls))


@pytest.fixture
async def metrics():
    installed = PrometheusMetrics()
    previous = observe.use(installed)
    yield installed
    observe.use(previous)


async def test_turns_through_the_engine_move_the_metrics(store, cache, tgi, metrics) -> None:
    world = await build_world(store, cache, tgi, appraiser="model", rate_limit_messages=2, max_tokens=64)
    metrics.watch_engine(world.app.engine)
    tgi.script(reply="To be, or not to be: that is the question I ask tonight.", instant=True)
    port = free_port()
    async with serve(web_app(metrics, checks(world.app)), "127.0.0.1", port):
        # Two answered, shown through the adapters' streaming code (the first send is the first visible text).
        for text in ("Who is there?", "Stand and unfold yourself."):
            reply = world.app.engine.handle(world.event(text, sent_at=time.time()))
            sent: list[str] = []

            async def send(piece: str, **_: object) -> int:
                sent.append(piece)
                return len(sent)

            async def edit(_handle: int, _piece: str, **_: object) -> None:
                return None

            shown = StreamedMessage(limit=2000, send=send, edit=edit, interval=0.0, on_first=lambda r=reply: first_shown(r, "discord"))
            await shown.run(reply)
            assert reply.status is ReplyStatus.ANSWERED and sent
        await world.app.engine.drain()
        # The third message inside the window: the rate notice.
        reply, _ = await world.say("Long live the king!")
        assert reply.status is ReplyStatus.NOTICE
        # A model server failing before any text: a failed turn and a model error.
        tgi.fail("500", times=5)
        reply, _ = await world.say("Friends to this ground.", user="u2")
        assert reply.status is ReplyStatus.FAILED
        tgi.failures.clear()
        async with httpx.AsyncClient(trust_env=False) as client:
            page = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert page.status_code == 200
    found = samples(page.text)

    assert value(found, "personae_turns_total", outcome="answered") == 2
    assert value(found, "personae_turns_total", outcome="notice") == 1
    assert value(found, "personae_turns_total", outcome="failed") == 1
    assert value(found, "personae_turns_total", outcome="duplicate") == 0
    assert value(found, "personae_rate_limited_total", reason="arrival") == 1
    assert value(found, "personae_errors_total", where="model", kind="model") == 1
    assert value(found, "personae_first_text_seconds_count", platform="discord") == 2
    assert value(found, "personae_model_first_token_seconds_count") == 2
    assert value(found, "personae_model_tokens_per_second_count") == 2
    assert value(found, "personae_queue_wait_seconds_count") == 3  # the notice's turn never queued for an answer
    assert value(found, "personae_turns_waiting") == 0 and value(found, "personae_turns_running") == 0
    assert value(found, "personae_appraisal_seconds_count", appraiser="model") == 2
    assert value(found, "personae_appraisal_tokens_total", part="prompt") > 0
    assert value(found, "personae_appraisal_tokens_total", part="answer") > 0
    assert total(found, "personae_cache_lookups_total", result="miss") > 0
    assert total(found, "personae_cache_lookups_total", result="hit") > 0
    assert value(found, "personae_storage_seconds_count", part="database") > 0
    if world.app.settings.redis_url is not None or getattr(world.app.cache, "where", None):
        assert value(found, "personae_storage_seconds_count", part="redis") > 0
    # Bounded labels: nothing about the person or the channel became a label value.
    labels = {v for (_, ls) in found for _, v in ls}
    assert not any(world.channel in v or "u1" == v or "Elena" in v for v in labels)


async def test_healthz_answers_while_the_process_lives(store, cache, tgi, metrics) -> None:
    world = await build_world(store, cache, tgi)
    port = free_port()
    async with serve(web_app(metrics, checks(world.app)), "127.0.0.1", port):
        async with httpx.AsyncClient(trust_env=False) as client:
            assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200


HELD_S = 1.0


@pytest.mark.parametrize("database_backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("cache_backend", ["memory"], indirect=True)
async def test_waiting_for_a_model_slot_is_slot_wait_not_first_token_time(store, cache, tgi, metrics) -> None:
    import asyncio

    world = await build_world(store, cache, tgi, appraiser="none", llm_concurrency=1)
    tgi.script(reply="To be, or not to be: that is the question I ask tonight.", instant=True)
    model = world.app.model
    # Someone else holds the only slot: a stream read to its first text and left open.
    held = model.stream([{"role": "user", "content": "Hold"}], max_tokens=32, temperature=0.1)
    await held.__anext__()
    assert metrics.model_slots_held._value.get() == 1
    turn = asyncio.create_task(world.say("Who is there?"))
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(30):
        while metrics.model_slots_waiting._value.get() != 1:
            await asyncio.sleep(0.01)
    since = loop.time()
    while loop.time() - since < HELD_S:  # the turn waits this long for the slot
        await asyncio.sleep(0.05)
    await held.aclose()
    reply, _ = await asyncio.wait_for(turn, 30)
    assert reply.status is ReplyStatus.ANSWERED
    found = samples(metrics.render().decode())
    assert value(found, "personae_model_slot_wait_seconds_count") == 2  # the holder's and the turn's
    assert value(found, "personae_model_slot_wait_seconds_sum") >= HELD_S
    assert value(found, "personae_model_first_token_seconds_count") == 1
    assert value(found, "personae_model_first_token_seconds_sum") < HELD_S  # the wait is not counted as first-token time
    assert value(found, "personae_model_slots_waiting") == 0 and value(found, "personae_model_slots_held") == 0
    await world.app.engine.drain()
    await model.close()
