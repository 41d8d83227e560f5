"""Several model servers (``bots.llm.pool.ModelPool``): fewest in flight first, a failing server
taken out and probed back in."""

from __future__ import annotations

import asyncio

import pytest

from bots.llm.client import ModelClient
from bots.llm.pool import ModelPool
from bots.settings import Settings
from core.errors import ModelError
from tests.tgi_server import TGIServer

MESSAGES = [{"role": "user", "content": "Hello"}]


@pytest.fixture
async def servers():
    async with TGIServer() as one, TGIServer() as two:
        yield one, two


@pytest.fixture
async def pool(servers):
    clients = [ModelClient(s.base_url, timeout_s=5.0, concurrency=8, retries=0, connect_timeout_s=1.0) for s in servers]
    made = ModelPool(clients, probe_first_s=0.05, probe_longest_s=0.2)
    yield made
    await made.close()


async def reply(pool: ModelPool) -> str:
    return "".join([d async for d in pool.stream(MESSAGES, max_tokens=8, temperature=0.1)])


async def until(condition, what: str) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


async def test_requests_go_to_the_server_with_the_fewest_in_flight(servers, pool: ModelPool) -> None:
    one, two = servers
    await reply(pool)  # learns the server (and warms both paths up)
    await reply(pool)
    gate = asyncio.Event()
    one.gate = two.gate = gate
    before = one.count("/v1/chat/completions"), two.count("/v1/chat/completions")
    first = asyncio.create_task(reply(pool))
    await until(lambda: sum(pool.busy) == 1, "first request sent")
    held = pool.busy.index(1)
    second = asyncio.create_task(reply(pool))
    await until(lambda: sum(pool.busy) == 2, "second request sent")
    # The second went to the other server: the first one had a request in flight.
    assert pool.busy == [1, 1]
    third = asyncio.create_task(reply(pool))
    fourth = asyncio.create_task(reply(pool))
    await until(lambda: sum(pool.busy) == 4, "all sent")
    assert pool.busy == [2, 2]
    gate.set()
    await asyncio.gather(first, second, third, fourth)
    after = one.count("/v1/chat/completions"), two.count("/v1/chat/completions")
    assert (after[0] - before[0], after[1] - before[1]) == (2, 2)
    assert held in (0, 1)


async def test_a_dead_server_is_taken_out_and_probed_back_in(servers, pool: ModelPool, caplog) -> None:
    one, two = servers
    await reply(pool)
    await reply(pool)
    await two.stop()
    for _ in range(4):
        assert await reply(pool)  # every turn is answered: the one sent to the dead server goes to the other
    assert not pool.healthy(1)
    answered = one.count("/v1/chat/completions")
    for _ in range(3):
        await reply(pool)
    assert one.count("/v1/chat/completions") == answered + 3  # the dead one is not tried while out
    await two.start()  # the same port
    await until(lambda: pool.healthy(1), "probed back in")
    served = two.count("/v1/chat/completions")
    await reply(pool)
    await reply(pool)
    assert two.count("/v1/chat/completions") > served
    assert any("taken out" in r.getMessage() for r in caplog.records)
    assert any("back in" in r.getMessage() for r in caplog.records)


async def test_a_server_error_takes_the_server_out_and_the_turn_goes_to_the_other(servers, pool: ModelPool) -> None:
    one, two = servers
    await reply(pool)
    await reply(pool)
    one.fail("500")
    two.fail("500")
    with pytest.raises(ModelError) as failed:
        await reply(pool)  # each server answered 500 once: the turn was tried on both
    assert "500" in str(failed.value)
    assert not pool.healthy(0) and not pool.healthy(1)
    await until(lambda: pool.healthy(0) and pool.healthy(1), "both probed back in (they answer /v1/models)")
    one.fail("500")
    assert await reply(pool)  # the first server's 500 sent the turn to the other
    assert not pool.healthy(0) and pool.healthy(1)


def test_settings_take_a_list_of_model_servers() -> None:
    settings = Settings(_env_file=None, llm_url="http://a:8080, http://b:8080", appraiser_url="http://c:1")
    assert settings.llm_urls == ["http://a:8080", "http://b:8080"]
    assert settings.appraiser_urls == ["http://c:1"]
    with pytest.raises(ValueError) as refused:
        Settings(_env_file=None, llm_url="http://a:8080,gpu-host:8080")
    assert "must be a URL starting with http://" in str(refused.value)


async def test_open_model_builds_a_pool_that_starts_when_one_server_answers(servers) -> None:
    from bots.compose import open_model

    one, _ = servers
    settings = Settings(_env_file=None, llm_url=f"http://127.0.0.1:1,{one.base_url}", llm_retries=0)
    async with open_model(settings) as model:
        assert isinstance(model, ModelPool)
        assert await reply(model)
        assert not model.healthy(0) and model.healthy(1)  # the dead one was taken out by the first turn


async def test_open_model_says_in_one_line_which_setting_when_no_server_answers() -> None:
    from bots.compose import open_model

    settings = Settings(_env_file=None, llm_url="http://127.0.0.1:1,http://127.0.0.1:2")
    with pytest.raises(ModelError) as failed:
        async with open_model(settings):
            pass
    assert "PERSONAE_LLM_URL" in str(failed.value) and "\n" not in str(failed.value)


async def test_a_refused_connection_moves_to_the_next_server_at_once(servers, caplog) -> None:
    """PERSONAE_LLM_RETRIES is not spent on a server that refuses connections while another is healthy."""
    import logging

    from tests.throwaway import free_port

    caplog.set_level(logging.INFO, logger="bots.llm.client")
    dead = f"http://127.0.0.1:{free_port()}"
    clients = [ModelClient(url, timeout_s=5.0, concurrency=8, retries=3, retry_base_s=0.01, connect_timeout_s=1.0) for url in (dead, servers[0].base_url)]
    made = ModelPool(clients, probe_first_s=30.0)
    try:
        assert made._choose(set()) == 0  # the first request goes to the dead server
        assert await reply(made)
        assert not made.healthy(0)
        assert not [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    finally:
        await made.close()
    lone = ModelPool([ModelClient(dead, timeout_s=5.0, concurrency=8, retries=2, retry_base_s=0.01, connect_timeout_s=1.0)])
    try:  # the last (only) server: retried as before
        with pytest.raises(ModelError, match="gave up after 3 attempts"):
            await reply(lone)
    finally:
        await lone.close()
