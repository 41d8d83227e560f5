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


CHAT = "/v1/chat/completions"


async def test_a_hung_server_is_probed_with_a_reply_and_stays_out_while_it_hangs(servers) -> None:
    hung, good = servers
    clients = [
        # The hang lasts an hour: bounds of a few seconds tell it apart on a loaded machine too
        # (0.3 s timed out a healthy server's first token under a full run with a busy loop beside it).
        ModelClient(s.base_url, timeout_s=5.0, concurrency=8, retries=2, connect_timeout_s=1.0, first_token_timeout_s=2.0)
        for s in servers
    ]
    pool = ModelPool(clients, probe_first_s=0.05, probe_longest_s=0.1, probe_reply_timeout_s=1.0)
    try:
        await reply(pool)
        await reply(pool)
        hung.fail("hang", times=10**5, hang_s=3600)
        for _ in range(4):
            try:
                await reply(pool)
            except ModelError:
                pass  # a turn sent to the hung server times out
        assert not pool.healthy(0)
        assert pool.sent[0] <= 1 + 2  # one warm-up turn, then at most two turns waited on it
        sent = pool.sent[0]
        generations = hung.count(CHAT)
        for _ in range(3):  # several probes: each one a one-token reply that times out
            await until(lambda: hung.count(CHAT) > generations, "probed")
            generations = hung.count(CHAT)
            for _ in range(3):
                assert await reply(pool)
            assert not pool.healthy(0)  # answering /v1/models does not bring a hung server back
        assert pool.sent[0] == sent  # no turn went to it while it hung
        assert pool.backoff_s(0) == 0.05
        hung.failures.clear()
        await until(lambda: pool.healthy(0), "probed back in by a reply")
        before = pool.sent[0]
        for _ in range(4):
            assert await reply(pool)
        assert pool.sent[0] > before
    finally:
        await pool.close()


async def test_the_backoff_grows_across_take_outs_until_the_server_has_served_a_while(servers) -> None:
    flaky, _ = servers
    clients = [
        ModelClient(s.base_url, timeout_s=5.0, concurrency=8, retries=0, connect_timeout_s=1.0, first_token_timeout_s=5.0)
        for s in servers
    ]
    # Generous reply deadlines: only the 500s take the server out, never a slow first token on a busy machine.
    pool = ModelPool(clients, probe_first_s=0.05, probe_longest_s=10.0, probe_reply_timeout_s=5.0, settle_turns=50)
    try:
        steps = []
        for _ in range(3):
            flaky.fail("500")
            # Until the 500 was served (not "while healthy": the probe may bring the server back
            # before the turn that met the 500 has finished on the other server).
            while flaky.failures:
                await reply(pool)
            steps.append(pool.backoff_s(0))
            await until(lambda: pool.healthy(0), "probed back in")
        assert steps == [0.05, 0.1, 0.2]  # a server flapping in and out waits longer each time
    finally:
        await pool.close()


async def test_a_server_busy_forever_gets_no_turn_after_its_first_429(servers) -> None:
    busy, good = servers
    clients = [ModelClient(s.base_url, timeout_s=5.0, concurrency=8, retries=2, connect_timeout_s=1.0) for s in servers]
    pool = ModelPool(clients, probe_first_s=0.05, probe_longest_s=60.0)
    try:
        busy.fail("429", times=10**5, retry_after=30)
        for _ in range(8):
            assert await reply(pool)
        # The first turn's 429 sent it to the other server at once (no retry ladder on the busy one),
        # and the busy one was left alone for its Retry-After.
        assert busy.count(CHAT) == 1
        assert good.count(CHAT) == 8
        assert pool.cooling(0) and pool.healthy(0)
        answer = await pool.complete(MESSAGES, max_tokens=8, temperature=0.1)
        assert answer
        assert busy.count(CHAT) + busy.count("/generate") + busy.count("/v1/completions") == 1  # nor the appraisals
    finally:
        await pool.close()


async def test_when_every_server_is_busy_the_last_one_still_waits_out_its_retry_after(servers) -> None:
    one, two = servers
    clients = [ModelClient(s.base_url, timeout_s=5.0, concurrency=8, retries=2, connect_timeout_s=1.0) for s in servers]
    pool = ModelPool(clients, probe_first_s=0.05, probe_longest_s=60.0)
    try:
        await reply(pool)
        await reply(pool)
        one.fail("429", retry_after=0)
        two.fail("429", retry_after=0)
        assert await reply(pool)  # the second server's 429 was resent to it (no server left to go to)
        assert one.count(CHAT) + two.count(CHAT) == 2 + 3
    finally:
        await pool.close()
