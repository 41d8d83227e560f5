"""ModelClient against the fake TGI server: wire format, error mapping, retries, the concurrency cap."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from bots.llm.client import ModelClient, render_mistral_raw
from core.errors import ModelError
from core.prompt import estimate_tokens
from tests.tgi_server import DEFAULT_REPLY, TGIServer

MESSAGES = [
    {"role": "system", "content": "I want you to answer questions as if you are Hamlet."},
    {"role": "user", "content": "Who goes there?"},
]


async def collect(client: ModelClient, **kwargs) -> list[str]:
    options = dict(max_tokens=64, temperature=0.7)
    options.update(kwargs)
    return [delta async for delta in client.stream(MESSAGES, **options)]


def recording(sleeps: list[float]):
    """A sleep that records the delay asked for and does not wait (no test waits on the clock)."""

    async def sleep(delay: float) -> None:
        sleeps.append(delay)

    return sleep


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- the request --------------------------------------------------------------------------------


async def test_streamed_reply_arrives_as_several_deltas(client: ModelClient, tgi: TGIServer) -> None:
    tgi.chunks = 5
    deltas = await collect(client)
    assert len(deltas) == 5
    assert "".join(deltas) == DEFAULT_REPLY


async def test_request_carries_max_tokens_and_model_tgi_and_no_presence_penalty(
    client: ModelClient, tgi: TGIServer
) -> None:
    await collect(client, max_tokens=77, temperature=0.3)
    (body,) = tgi.bodies()
    assert body["model"] == "tgi"
    assert body["max_tokens"] == 77
    assert body["temperature"] == 0.3
    assert body["stream"] is True
    assert body["messages"] == MESSAGES
    assert "presence_penalty" not in body
    assert "response_format" not in body


async def test_served_model_name_is_sent(make_client, tgi: TGIServer) -> None:
    client = make_client(tgi.base_url, model="BeyondDialogue/Mistral-Nemo-BD-RP")
    await collect(client)
    assert tgi.bodies()[0]["model"] == "BeyondDialogue/Mistral-Nemo-BD-RP"


def test_a_url_is_never_the_model() -> None:
    with pytest.raises(ValueError, match="not a URL"):
        ModelClient("http://127.0.0.1:1", model="http://tgi:80", timeout_s=1, concurrency=1, retries=0)


async def test_base_url_with_v1_suffix_works(make_client, tgi: TGIServer) -> None:
    client = make_client(tgi.base_url + "/v1/")
    assert "".join(await collect(client)) == DEFAULT_REPLY
    assert await client.info() is not None


async def test_at_most_four_stop_sequences(client: ModelClient, tgi: TGIServer, caplog) -> None:
    stops = ["\n\n", "User:", "###", "</s>", "[INST]", "Hamlet:"]
    with caplog.at_level(logging.WARNING, logger="bots.llm.client"):
        await collect(client, stop=stops)
    assert tgi.bodies()[0]["stop"] == stops[:4]
    assert "first 4 of 6 stop sequences" in caplog.text


async def test_no_stop_sequences_sends_none(client: ModelClient, tgi: TGIServer) -> None:
    await collect(client)
    assert not tgi.bodies()[0].get("stop")


async def test_api_key_is_sent_as_bearer(make_client, tgi: TGIServer) -> None:
    tgi.api_key = "s3cret"
    client = make_client(tgi.base_url, api_key="s3cret")
    assert "".join(await collect(client)) == DEFAULT_REPLY
    assert tgi.requests[-1].headers["authorization"] == "Bearer s3cret"
    assert "s3cret" not in repr(client)


async def test_no_key_never_sends_the_persons_hf_token(client: ModelClient, tgi: TGIServer, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_must_not_leave_this_machine")
    await collect(client)
    await client.complete(MESSAGES, max_tokens=8, temperature=0)
    for request in tgi.requests:
        assert "hf_must_not_leave_this_machine" not in str(request.headers)


async def test_wrong_api_key_is_not_retried(make_client, tgi: TGIServer) -> None:
    tgi.api_key = "right"
    client = make_client(tgi.base_url, api_key="wrong")
    with pytest.raises(ModelError) as caught:
        await collect(client)
    assert caught.value.status == 401 and not caught.value.retryable
    assert "PERSONAE_LLM_API_KEY" in str(caught.value)
    assert "wrong" not in str(caught.value)
    assert tgi.count("/v1/chat/completions") == 1


# ---- failures and retries -----------------------------------------------------------------------


async def test_429_then_success_is_retried(client: ModelClient, tgi: TGIServer) -> None:
    tgi.fail("429")
    assert "".join(await collect(client)) == DEFAULT_REPLY
    assert tgi.count("/v1/chat/completions") == 2


async def test_overload_inside_the_stream_is_retried(client: ModelClient, tgi: TGIServer) -> None:
    # Real TGI refuses a streamed request past --max-concurrent-requests with an error event in a 200.
    tgi.fail("overloaded", times=2)
    assert "".join(await collect(client)) == DEFAULT_REPLY
    assert tgi.count("/v1/chat/completions") == 3


async def test_overload_message_says_where_and_what(make_client, tgi: TGIServer) -> None:
    client = make_client(tgi.base_url, retries=1)
    tgi.fail("429", times=5)
    with pytest.raises(ModelError) as caught:
        await collect(client)
    error = caught.value
    assert error.retryable and error.status == 429
    assert f"the model server at {tgi.base_url} is overloaded (429)" in str(error)
    assert "gave up after 2 attempts" in str(error)
    assert tgi.count("/v1/chat/completions") == 2


async def test_422_is_not_retried(client: ModelClient, tgi: TGIServer) -> None:
    tgi.fail("422")
    with pytest.raises(ModelError) as caught:
        await collect(client)
    assert caught.value.status == 422 and not caught.value.retryable
    assert "rejected the request (422)" in str(caught.value)
    assert "max_new_tokens" in str(caught.value)  # the server's own explanation is kept
    assert tgi.count("/v1/chat/completions") == 1


async def test_validation_error_inside_the_stream_is_not_retried(client: ModelClient, tgi: TGIServer) -> None:
    tgi.fail("error_event", after=0, status=422, message="Input validation error: inputs too long")
    with pytest.raises(ModelError) as caught:
        await collect(client)
    assert caught.value.status == 422 and not caught.value.retryable
    assert "inputs too long" in str(caught.value)
    assert tgi.count("/v1/chat/completions") == 1


async def test_503_is_retried(client: ModelClient, tgi: TGIServer) -> None:
    tgi.fail("503", times=2)
    assert "".join(await collect(client)) == DEFAULT_REPLY
    assert tgi.count("/v1/chat/completions") == 3


@pytest.mark.parametrize("kind,status", [("500", 500), ("424", 424)])
async def test_errors_of_a_request_the_server_worked_on_are_not_retried(
    client: ModelClient, tgi: TGIServer, kind: str, status: int
) -> None:
    # 500 and 424 mean generation itself failed: sending the request again doubles the load on a sick server.
    tgi.fail(kind, times=2)
    with pytest.raises(ModelError) as caught:
        await collect(client)
    assert caught.value.status == status
    assert tgi.count("/v1/chat/completions") == 1


async def test_server_errors_give_up_after_the_retries(make_client, tgi: TGIServer) -> None:
    client = make_client(tgi.base_url, retries=2)
    tgi.fail("503", times=10)
    with pytest.raises(ModelError) as caught:
        await collect(client)
    assert caught.value.status == 503 and caught.value.retryable
    assert tgi.count("/v1/chat/completions") == 3


async def test_connection_refused_raises_after_the_retries(make_client) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    client = make_client(url, retries=2)
    with pytest.raises(ModelError) as caught:
        await collect(client)
    error = caught.value
    assert error.retryable and error.status is None
    assert f"the model server at {url} refused the connection" in str(error)
    assert "gave up after 3 attempts" in str(error)


async def test_errors_name_the_url_setting_only_for_a_server_personae_did_not_start(make_client, tgi: TGIServer) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    with pytest.raises(ModelError) as caught:
        await collect(make_client(url, retries=0))
    assert "is it running (PERSONAE_LLM_URL)?" in str(caught.value)
    with pytest.raises(ModelError) as caught:  # the embedded server: personae's own, not a setting's
        await collect(make_client(url, retries=0, url_setting=None))
    assert str(caught.value) == f"the model server at {url} refused the connection; is it still running?"
    tgi.fail("error_event", status=404, message="no such route")
    with pytest.raises(ModelError) as caught:
        await collect(make_client(tgi.base_url, retries=0, url_setting=None))
    assert caught.value.status == 404 and "PERSONAE_LLM_URL" not in str(caught.value)


async def test_error_event_mid_stream_after_text_is_raised_and_not_retried(client: ModelClient, tgi: TGIServer) -> None:
    tgi.chunks = 6
    tgi.fail("error_event", after=3, status=500, message="CUDA error: an illegal memory access")
    received: list[str] = []
    with pytest.raises(ModelError) as caught:
        async for delta in client.stream(MESSAGES, max_tokens=64, temperature=0.7):
            received.append(delta)
    assert len(received) == 3
    assert "illegal memory access" in str(caught.value)
    assert "broke off" in str(caught.value)
    assert tgi.count("/v1/chat/completions") == 1


async def test_error_event_before_any_text_is_not_retried(client: ModelClient, tgi: TGIServer) -> None:
    tgi.fail("error_event", after=0, status=500)
    with pytest.raises(ModelError, match="reported inside the stream"):
        await collect(client)
    assert tgi.count("/v1/chat/completions") == 1


async def test_dropped_connection_before_text_is_not_retried(client: ModelClient, tgi: TGIServer) -> None:
    # The server had the request: it may still be generating for it.
    tgi.fail("drop", after=0)
    with pytest.raises(ModelError, match="closed the connection"):
        await collect(client)
    assert tgi.count("/v1/chat/completions") == 1


async def test_dropped_connection_mid_reply_is_raised(client: ModelClient, tgi: TGIServer) -> None:
    tgi.chunks = 4
    tgi.fail("drop", after=2)
    received: list[str] = []
    with pytest.raises(ModelError) as caught:
        async for delta in client.stream(MESSAGES, max_tokens=64, temperature=0.7):
            received.append(delta)
    assert len(received) == 2
    assert "closed the connection" in str(caught.value)
    assert tgi.count("/v1/chat/completions") == 1


async def test_stream_that_ends_unfinished_before_text_is_not_retried(client: ModelClient, tgi: TGIServer) -> None:
    tgi.fail("truncate", after=0)
    with pytest.raises(ModelError, match="ended the stream before the reply was finished"):
        await collect(client)
    assert tgi.count("/v1/chat/completions") == 1


async def test_stream_that_ends_unfinished_after_text_is_raised(client: ModelClient, tgi: TGIServer) -> None:
    tgi.chunks = 4
    tgi.fail("truncate", after=2)
    received: list[str] = []
    with pytest.raises(ModelError, match="ended the stream before the reply was finished"):
        async for delta in client.stream(MESSAGES, max_tokens=64, temperature=0.7):
            received.append(delta)
    assert len(received) == 2
    assert tgi.count("/v1/chat/completions") == 1


async def test_a_silent_server_times_out_once_and_is_not_asked_again(make_client, tgi: TGIServer) -> None:
    # The "first token after 40 s" case, scaled down: a first-token timeout shorter than the server's
    # queue is one request, not one per retry.
    sleeps: list[float] = []
    client = make_client(tgi.base_url, first_token_timeout_s=0.3, retries=3, sleep=recording(sleeps))
    tgi.fail("hang", after=0, hang_s=30)
    with pytest.raises(ModelError) as caught:
        await collect(client)
    assert "sent no text for 0.3 s (PERSONAE_LLM_FIRST_TOKEN_TIMEOUT_S)" in str(caught.value)
    assert tgi.count("/v1/chat/completions") == 1
    assert sleeps == []


async def test_a_slow_first_token_within_its_timeout_is_one_request(make_client, tgi: TGIServer) -> None:
    # Shorter per-token timeout than the wait for the first token: the long wait is allowed once.
    client = make_client(tgi.base_url, timeout_s=0.2, first_token_timeout_s=30, retries=3)
    tgi.fail("hang", after=0, hang_s=0.5)
    assert "".join(await collect(client)) == DEFAULT_REPLY
    assert tgi.count("/v1/chat/completions") == 1


async def test_a_stall_between_tokens_is_cut_by_the_per_token_timeout_and_not_retried(make_client, tgi: TGIServer) -> None:
    client = make_client(tgi.base_url, timeout_s=0.3, first_token_timeout_s=30, retries=3)
    tgi.chunks = 4
    tgi.fail("hang", after=2, hang_s=30)
    received: list[str] = []
    with pytest.raises(ModelError, match=r"stopped sending text for 0.3 s \(PERSONAE_LLM_TIMEOUT_S\)"):
        async for delta in client.stream(MESSAGES, max_tokens=64, temperature=0.7):
            received.append(delta)
    assert len(received) == 2
    assert tgi.count("/v1/chat/completions") == 1


async def test_retries_wait_a_growing_back_off_between_the_requests(make_client, tgi: TGIServer) -> None:
    sleeps: list[float] = []
    sent_before_sleep: list[int] = []

    async def sleep(delay: float) -> None:
        sleeps.append(delay)
        sent_before_sleep.append(tgi.count("/v1/chat/completions"))

    client = make_client(tgi.base_url, retries=3, retry_base_s=0.2, sleep=sleep)
    tgi.fail("503", times=3)  # no Retry-After: the client's own back-off decides
    assert "".join(await collect(client)) == DEFAULT_REPLY
    assert tgi.count("/v1/chat/completions") == 4
    assert sent_before_sleep == [1, 2, 3]  # one wait after each failed request, before the next
    # Jittered exponential back-off: attempt n waits between half and all of 0.2 s * 2**n.
    for n, delay in enumerate(sleeps):
        assert 0.2 * 2**n / 2 <= delay <= 0.2 * 2**n, (n, sleeps)


async def test_429_with_retry_after_waits_at_least_that_long(make_client, tgi: TGIServer) -> None:
    sleeps: list[float] = []
    client = make_client(tgi.base_url, sleep=recording(sleeps))
    tgi.fail("429", retry_after=7)
    assert "".join(await collect(client)) == DEFAULT_REPLY
    assert tgi.count("/v1/chat/completions") == 2
    assert len(sleeps) == 1 and sleeps[0] >= 7


async def test_503_with_retry_after_as_a_date_is_honoured(make_client, tgi: TGIServer) -> None:
    from email.utils import formatdate
    import time

    sleeps: list[float] = []
    client = make_client(tgi.base_url, sleep=recording(sleeps))
    tgi.fail("503", retry_after=formatdate(time.time() + 20, usegmt=True))
    assert "".join(await collect(client)) == DEFAULT_REPLY
    assert tgi.count("/v1/chat/completions") == 2
    assert len(sleeps) == 1 and 15 <= sleeps[0] <= 21


async def test_a_retry_after_longer_than_the_cap_is_not_waited_for(make_client, tgi: TGIServer) -> None:
    sleeps: list[float] = []
    client = make_client(tgi.base_url, sleep=recording(sleeps))
    tgi.fail("429", retry_after=3600)
    with pytest.raises(ModelError, match=r"overloaded \(429\)"):
        await collect(client)
    assert tgi.count("/v1/chat/completions") == 1 and sleeps == []


async def test_a_connect_timeout_is_retried(make_client) -> None:
    # A listening socket whose backlog is full never completes a handshake: a connect timeout.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(8):  # fill the backlog (its length is rounded up by the kernel)
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        sleeps: list[float] = []
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        client = make_client(url, connect_timeout_s=0.2, retries=2, sleep=recording(sleeps))
        with pytest.raises(ModelError) as caught:
            await collect(client)
        assert "could not be reached" in str(caught.value)
        assert "gave up after 3 attempts" in str(caught.value)
        assert len(sleeps) == 2
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# ---- the concurrency cap ------------------------------------------------------------------------


async def test_concurrency_cap_holds(make_client, tgi: TGIServer) -> None:
    client = make_client(tgi.base_url, concurrency=3)
    tgi.chunks = 5
    tgi.token_delay = 0.02
    replies = await asyncio.gather(*(collect(client) for _ in range(20)))
    assert all("".join(r) == DEFAULT_REPLY for r in replies)
    assert tgi.count("/v1/chat/completions") == 20
    assert tgi.max_in_flight == 3
    assert client.in_flight == 0


async def test_abandoned_stream_frees_its_slot(make_client, tgi: TGIServer) -> None:
    client = make_client(tgi.base_url, concurrency=1)
    tgi.chunks = 10
    tgi.token_delay = 0.01
    stream = client.stream(MESSAGES, max_tokens=64, temperature=0.7)
    async for _ in stream:
        break
    await stream.aclose()
    assert client.in_flight == 0
    assert "".join(await asyncio.wait_for(collect(client), timeout=10)) == DEFAULT_REPLY


async def test_long_lived_client_retires_its_hub_client(make_client, tgi: TGIServer) -> None:
    # huggingface_hub keeps every streamed response until its client is closed; ours is rotated.
    client = make_client(tgi.base_url)
    client._hub._rotate_after = 3
    for _ in range(10):
        await collect(client)
    await asyncio.sleep(0)
    assert len(client._hub._users) <= 1
    assert tgi.count("/v1/chat/completions") == 10


# ---- token counts, server facts -----------------------------------------------------------------


async def test_count_tokens_uses_tgi_tokenize(client: ModelClient, tgi: TGIServer) -> None:
    assert await client.count_tokens("to be or not to be") == 6
    assert await client.count_tokens("that is the question") == 4
    assert tgi.count("/tokenize") == 2
    assert tgi.count("/info") == 1  # detected once, cached
    assert tgi.bodies("/tokenize")[0] == {"inputs": "to be or not to be"}
    assert client.is_tgi is True
    assert client.max_input_tokens == tgi.max_input_tokens


async def test_count_tokens_estimates_without_info(client: ModelClient, tgi: TGIServer) -> None:
    tgi.tgi = False  # a plain OpenAI-style server: /info and /tokenize answer 404
    text = "to be or not to be, that is the question"
    assert await client.count_tokens(text) == estimate_tokens(text)
    assert await client.count_tokens(text) == estimate_tokens(text)
    assert tgi.count("/tokenize") == 0
    assert tgi.count("/info") == 1
    assert client.is_tgi is False
    assert await client.info() is None
    assert client.max_input_tokens is None


async def test_count_tokens_estimates_when_the_server_is_down(make_client) -> None:
    client = make_client(f"http://127.0.0.1:{unused_port()}")
    assert await client.count_tokens("hello there") == estimate_tokens("hello there")
    assert client.is_tgi is None  # not settled: asked again later


async def test_info_returns_tgi_info(client: ModelClient, tgi: TGIServer) -> None:
    info = await client.info()
    assert info is not None and info["model_id"] == tgi.model_id
    assert await client.info() is info
    assert tgi.count("/info") == 1


# ---- complete() and JSON ------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {"relationship": {"type": "integer", "minimum": 0, "maximum": 10}},
    "required": ["relationship"],
}


async def test_complete_with_schema_on_tgi_sends_response_format_json_value(client: ModelClient, tgi: TGIServer) -> None:
    tgi.reply = '{"relationship": 7}'
    answer = await client.complete(MESSAGES, max_tokens=32, temperature=0.0, json_schema=SCHEMA)
    assert answer == '{"relationship": 7}'
    (body,) = tgi.bodies()
    assert body["response_format"] == {"type": "json", "value": SCHEMA}
    assert body["stream"] is False
    assert body["max_tokens"] == 32
    assert body["model"] == "tgi"
    assert "presence_penalty" not in body


async def test_complete_on_other_servers_sends_no_response_format(client: ModelClient, tgi: TGIServer) -> None:
    tgi.tgi = False
    await client.complete(MESSAGES, max_tokens=32, temperature=0.0, json_schema=SCHEMA)
    assert "response_format" not in tgi.bodies()[0]


async def test_complete_retries_and_maps_errors(client: ModelClient, tgi: TGIServer) -> None:
    tgi.fail("429")
    assert await client.complete(MESSAGES, max_tokens=8, temperature=0.0) == DEFAULT_REPLY
    tgi.fail("422")
    with pytest.raises(ModelError) as caught:
        await client.complete(MESSAGES, max_tokens=8, temperature=0.0)
    assert caught.value.status == 422
    assert tgi.count("/v1/chat/completions") == 3


# ---- the raw mistral layout ---------------------------------------------------------------------


async def test_raw_layout_renders_and_streams_from_completions(make_client, tgi: TGIServer) -> None:
    client = make_client(tgi.base_url, layout="mistral-raw")
    tgi.chunks = 4
    deltas = await collect(client, max_tokens=50, stop=["\n\n"])
    assert len(deltas) == 4 and "".join(deltas) == DEFAULT_REPLY
    assert tgi.count("/v1/chat/completions") == 0
    (body,) = tgi.bodies("/v1/completions")
    assert body["prompt"] == render_mistral_raw(MESSAGES, bos="")
    assert body["prompt"] == "I want you to answer questions as if you are Hamlet.[INST] Who goes there? [/INST]"
    assert body["stream"] is True
    assert body["max_tokens"] == 50
    assert body["model"] == "tgi"
    assert body["stop"] == ["\n\n", "[INST]"]
    assert "presence_penalty" not in body


async def test_raw_layout_retries_before_text_and_raises_after(make_client, tgi: TGIServer) -> None:
    client = make_client(tgi.base_url, layout="mistral-raw")
    tgi.fail("429")
    assert "".join(await collect(client)) == DEFAULT_REPLY
    assert tgi.count("/v1/completions") == 2

    tgi.chunks = 5
    tgi.fail("error_event", after=2, status=500, message="Incomplete generation")
    received: list[str] = []
    with pytest.raises(ModelError) as caught:
        async for delta in client.stream(MESSAGES, max_tokens=64, temperature=0.7):
            received.append(delta)
    assert len(received) == 2
    assert "Incomplete generation" in str(caught.value)
    assert tgi.count("/v1/completions") == 3

    tgi.fail("422")
    with pytest.raises(ModelError) as caught:
        await collect(client)
    assert caught.value.status == 422 and not caught.value.retryable
    assert tgi.count("/v1/completions") == 4

    tgi.fail("truncate", after=0)
    with pytest.raises(ModelError, match="ended the stream"):
        await collect(client)
    assert tgi.count("/v1/completions") == 5


async def test_raw_layout_connection_refused(make_client) -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    client = make_client(url, layout="mistral-raw", retries=1)
    with pytest.raises(ModelError, match="refused the connection") as caught:
        await collect(client)
    assert caught.value.retryable


def test_unknown_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="auto, training, chat"):
        ModelClient("http://127.0.0.1:1", timeout_s=1, concurrency=1, retries=0, layout="alpaca")


async def test_closed_client_refuses_work(make_client, tgi: TGIServer) -> None:
    client = make_client(tgi.base_url)
    await client.close()
    with pytest.raises(ModelError, match="closed"):
        await collect(client)


async def test_every_client_shares_one_tls_context_per_library() -> None:
    """Loading the certificates costs tens of milliseconds of CPU: a process does it once per HTTP
    library, not once per client (huggingface_hub's sessions included, built on the event loop)."""
    from huggingface_hub.utils import get_async_session

    from bots.llm.client import hub_httpx, tls_context

    first, second = get_async_session(), get_async_session()
    try:
        shared = tls_context(hub_httpx)
        assert first._transport._pool._ssl_context is shared
        assert second._transport._pool._ssl_context is shared
    finally:
        await first.aclose()
        await second.aclose()
    async with TGIServer() as server:
        clients = [ModelClient(server.base_url, timeout_s=5, concurrency=2, retries=0) for _ in range(2)]
        try:
            import httpx

            https = [await c._http_client() for c in clients]
            assert all(h._transport._pool._ssl_context is tls_context(httpx) for h in https)
        finally:
            for c in clients:
                await c.close()

