"""ModelClient speaks each server's dialect: guided JSON, the tokenize route, the served model name."""

from __future__ import annotations

import logging
from typing import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from bots.llm import dialects
from bots.llm.client import ModelClient
from bots.llm.dialects import Dialect
from bots.llm.vllm_double import VLLMServer
from core.errors import ModelError
from tests.tgi_server import DEFAULT_REPLY, TGIServer

MESSAGES = [
    {"role": "system", "content": "I want you to answer questions as if you are Hamlet."},
    {"role": "user", "content": "Who goes there?"},
]
SCHEMA = {"type": "object", "properties": {"joy": {"type": "integer"}}, "required": ["joy"]}


@pytest_asyncio.fixture
async def vllm() -> AsyncIterator[VLLMServer]:
    async with VLLMServer(served_model_name="bd-rp") as server:
        yield server


async def reply(client: ModelClient) -> str:
    return "".join([d async for d in client.stream(MESSAGES, max_tokens=32, temperature=0.7)])


# ---- vLLM ---------------------------------------------------------------------------------------


async def test_without_a_configured_model_the_served_name_is_discovered_from_v1_models(make_client, vllm: VLLMServer) -> None:
    client = make_client(vllm.base_url)
    assert await reply(client) == DEFAULT_REPLY
    assert await reply(client) == DEFAULT_REPLY
    assert [b["model"] for b in vllm.bodies()] == ["bd-rp", "bd-rp"]
    assert vllm.count("/v1/models") == 1, "the server is asked what it is once"
    assert (await client.dialect()).kind == "vllm"
    assert client.is_tgi is False and await client.info() is None


async def test_a_wrong_model_name_is_a_404_that_names_the_setting(make_client, vllm: VLLMServer, caplog) -> None:
    client = make_client(vllm.base_url, model="tgi")
    with caplog.at_level(logging.WARNING, logger="bots.llm.client"), pytest.raises(ModelError) as raised:
        await reply(client)
    assert raised.value.status == 404 and not raised.value.retryable
    assert "PERSONAE_LLM_MODEL" in str(raised.value) and "does not exist" in str(raised.value)
    assert vllm.count("/v1/chat/completions") == 1, "a 404 is not retried"
    assert "serves bd-rp" in caplog.text


async def test_a_configured_model_name_is_sent_as_is(make_client, vllm: VLLMServer) -> None:
    client = make_client(vllm.base_url, model="bd-rp")
    assert await reply(client) == DEFAULT_REPLY
    assert vllm.bodies()[0]["model"] == "bd-rp"


async def test_guided_json_goes_out_in_openai_json_schema_shape(make_client, vllm: VLLMServer) -> None:
    vllm.reply = '{"joy": 7}'
    client = make_client(vllm.base_url)
    answer = await client.complete(MESSAGES, max_tokens=32, temperature=0.2, json_schema=SCHEMA)
    assert answer == '{"joy": 7}'
    (body,) = vllm.bodies()
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}
    assert body["model"] == "bd-rp"


async def test_the_vllm_double_refuses_tgi_shaped_guided_json(vllm: VLLMServer) -> None:
    async with httpx.AsyncClient(base_url=vllm.base_url) as http:
        body = {"model": "bd-rp", "messages": MESSAGES, "max_tokens": 8, "response_format": {"type": "json", "value": SCHEMA}}
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "BadRequestError"


async def test_token_counts_come_from_vllm_tokenize_with_model_and_prompt(make_client, vllm: VLLMServer) -> None:
    client = make_client(vllm.base_url)
    assert await client.count_tokens("to be or not to be") == 6
    tokenize = [r for r in vllm.requests if r.path == "/tokenize"]
    assert [r.body for r in tokenize] == [{"model": "bd-rp", "prompt": "to be or not to be", "add_special_tokens": False}]


# ---- SGLang -------------------------------------------------------------------------------------


async def test_sglang_counts_tokens_at_v1_tokenize_and_gets_the_served_name(make_client) -> None:
    async with VLLMServer(served_model_name="bd-rp", kind="sglang") as sglang:
        client = make_client(sglang.base_url)
        assert await client.count_tokens("that is the question") == 4
        assert sglang.count("/v1/tokenize") == 1 and sglang.count("/tokenize") == 0
        assert await reply(client) == DEFAULT_REPLY
        assert sglang.bodies()[0]["model"] == "bd-rp"
        assert (await client.dialect()).kind == "sglang"


# ---- TGI and plain servers ----------------------------------------------------------------------


async def test_tgi_keeps_model_tgi_and_its_own_guided_json(make_client, tgi: TGIServer) -> None:
    client = make_client(tgi.base_url)
    await reply(client)
    await client.complete(MESSAGES, max_tokens=16, temperature=0.2, json_schema=SCHEMA)
    stream_body, complete_body = tgi.bodies()
    assert stream_body["model"] == complete_body["model"] == "tgi"
    assert complete_body["response_format"] == {"type": "json", "value": SCHEMA}
    assert (await client.dialect()).kind == "tgi"


async def test_a_plain_openai_style_server_gets_no_guided_json_and_estimated_counts(make_client) -> None:
    async with TGIServer(tgi=False) as plain:
        client = make_client(plain.base_url)
        assert (await client.dialect()).kind == "openai"
        await client.complete(MESSAGES, max_tokens=16, temperature=0.2, json_schema=SCHEMA)
        assert "response_format" not in plain.bodies()[0] and plain.bodies()[0]["model"] == "tgi"
        await client.count_tokens("to be or not to be")
        assert plain.count("/tokenize") == 0


async def test_an_unreachable_server_has_no_dialect_yet(make_client) -> None:
    client = make_client("http://127.0.0.1:1")
    assert await client.dialect() is None


# ---- the dialect table --------------------------------------------------------------------------


def test_llama_cpp_server_takes_the_openai_schema_shape_and_its_own_tokenize_body() -> None:
    llama = Dialect("llamacpp", ("smollm2",))
    assert llama.response_format(SCHEMA)["json_schema"]["schema"] == SCHEMA
    assert llama.tokenize_request("hi there", "smollm2") == ("/tokenize", {"content": "hi there"})
    assert llama.model_name(None) == "smollm2" and llama.model_name("mine") == "mine"


@pytest.mark.parametrize(
    "body, count",
    [
        ([{"id": 1}, {"id": 2}], 2),  # TGI
        ({"count": 3, "max_model_len": 4608, "tokens": [1, 2, 3]}, 3),  # vLLM, SGLang
        ({"tokens": [5, 6]}, 2),  # llama.cpp
        ({"detail": "Not Found"}, None),
        ("nonsense", None),
    ],
)
def test_token_count_reads_every_servers_answer(body, count) -> None:
    assert dialects.token_count(body) == count


async def test_guided_json_with_a_wrong_model_name_is_the_same_clear_404(make_client, vllm: VLLMServer) -> None:
    client = make_client(vllm.base_url, model="yuyouyu/Mistral-Nemo-BD-RP")
    with pytest.raises(ModelError) as raised:
        await client.complete(MESSAGES, max_tokens=32, temperature=0.2, json_schema=SCHEMA)
    assert raised.value.status == 404 and "PERSONAE_LLM_MODEL" in str(raised.value)
