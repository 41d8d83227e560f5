"""The fake TGI server speaks TGI's wire format (checked with plain httpx, not with our client)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.tgi_server import DEFAULT_REPLY, TGIServer

CHAT = {"model": "tgi", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20, "stream": True}


async def sse_lines(server: TGIServer, body: dict, path: str = "/v1/chat/completions") -> tuple[int, list[str]]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as http:
        async with http.stream("POST", path, json=body) as response:
            raw = (await response.aread()).decode()
    return response.status_code, raw.split("\n\n")


async def test_chat_stream_wire_format(tgi: TGIServer) -> None:
    tgi.chunks = 3
    status, events = await sse_lines(tgi, CHAT)
    assert status == 200
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-2]]
    assert len(chunks) == 3
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == DEFAULT_REPLY
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]
    assert chunks[0]["usage"] is None


async def test_usage_chunk_when_asked(tgi: TGIServer) -> None:
    _, events = await sse_lines(tgi, {**CHAT, "stream_options": {"include_usage": True}})
    last = json.loads(events[-3][len("data: ") :])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == tgi.ledger.tokenizer.count(DEFAULT_REPLY)
    assert last["usage"]["prompt_tokens"] == tgi.ledger.entries[-1].prompt_tokens > 0


async def test_error_event_wire_format(tgi: TGIServer) -> None:
    tgi.fail("error_event", after=1, status=500, message="boom")
    _, events = await sse_lines(tgi, CHAT)
    assert json.loads(events[1][len("data: ") :]) == {"error": {"message": "boom", "http_status_code": 500}}
    tgi.fail("error_event", after=0, status=424, message="bad")
    _, events = await sse_lines(tgi, {"prompt": "x", "max_tokens": 5, "stream": True}, "/v1/completions")
    assert json.loads(events[0][len("data: ") :]) == {"error": "bad", "error_type": "generation"}


async def test_http_errors_have_tgi_bodies(tgi: TGIServer) -> None:
    async with httpx.AsyncClient(base_url=tgi.base_url, timeout=5) as http:
        tgi.fail("429")
        response = await http.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 429
        assert response.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
        response = await http.post("/v1/chat/completions", json={**CHAT, "stop": list("abcde")})
        assert response.status_code == 422 and response.json()["error_type"] == "validation"


async def test_overload_past_max_concurrent_requests_is_an_event_in_a_200(tgi: TGIServer) -> None:
    tgi.max_concurrent_requests = 1
    tgi.token_delay = 0.05
    first = asyncio.create_task(sse_lines(tgi, CHAT))
    while tgi.in_flight == 0:
        await asyncio.sleep(0.005)
    status, events = await sse_lines(tgi, CHAT)
    assert status == 200
    assert json.loads(events[0][len("data: ") :])["error"]["http_status_code"] == 429
    await first
    async with httpx.AsyncClient(base_url=tgi.base_url, timeout=5) as http:
        slow = asyncio.create_task(http.post("/v1/chat/completions", json=CHAT))
        while tgi.in_flight == 0:
            await asyncio.sleep(0.005)
        response = await http.post("/v1/chat/completions", json={**CHAT, "stream": False})
        assert response.status_code == 429
        await slow


async def test_tokenize_info_health(tgi: TGIServer) -> None:
    async with httpx.AsyncClient(base_url=tgi.base_url, timeout=5) as http:
        tokens = (await http.post("/tokenize", json={"inputs": "to be or"})).json()
        assert [t["text"] for t in tokens] == ["to", " be", " or"]
        assert set(tokens[0]) == {"id", "text", "start", "stop"}
        info = (await http.get("/info")).json()
        assert {"model_id", "max_input_tokens", "max_total_tokens", "max_stop_sequences"} <= set(info)
        assert (await http.get("/health")).status_code == 200
        tgi.healthy = False
        assert (await http.get("/health")).json() == {"error": "unhealthy", "error_type": "healthcheck"}
        tgi.tgi = False
        assert (await http.get("/info")).status_code == 404
        assert (await http.post("/tokenize", json={"inputs": "x"})).status_code == 404


async def test_records_and_reset(tgi: TGIServer) -> None:
    tgi.script(reply=lambda body: body["messages"][-1]["content"].upper(), chunks=1)
    _, events = await sse_lines(tgi, CHAT)
    assert json.loads(events[0][len("data: ") :])["choices"][0]["delta"]["content"] == "HI"
    assert tgi.count("/v1/chat/completions") == 1 and tgi.bodies()[0]["max_tokens"] == 20
    tgi.fail("500", times=3)
    tgi.reset()
    assert tgi.count() == 0 and not tgi.failures and tgi.reply == DEFAULT_REPLY


def test_unknown_fail_kind() -> None:
    with pytest.raises(ValueError, match="unknown fail kind"):
        TGIServer().fail("explode")


def test_runs_in_a_thread_for_synchronous_callers() -> None:
    server = TGIServer(chunks=2).start_in_thread()
    try:
        with httpx.Client(base_url=server.base_url, timeout=5) as http:
            response = http.post("/v1/chat/completions", json={**CHAT, "stream": False})
        assert response.json()["choices"][0]["message"]["content"] == DEFAULT_REPLY
        assert server.count("/v1/chat/completions") == 1
    finally:
        server.stop_thread()
