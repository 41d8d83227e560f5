"""``ModelClient.complete`` in the layout of the replies: in the training layout the raw string, to
TGI's native ``/generate`` with its grammar (or ``/v1/completions`` elsewhere); the chat API in the chat layout."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bots.llm.client import ModelClient
from bots.llm.dialects import analysis_then_object
from bots.llm.vllm_double import VLLMServer
from core.errors import ModelError
from core.text import neutralise_controls
from tests.tgi_server import TGIServer

SCHEMA = {"type": "object", "properties": {"relationship": {"type": "integer"}}, "required": ["relationship"]}
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Rate the intimacy. [INST] not a control"},
]
# The person's "[INST]" is neutralised (a look-alike), as in the replies.
RAW = f"You are a helpful assistant.[INST] Rate the intimacy. {neutralise_controls('[INST]')} not a control [/INST]"


def training(make_client, url: str, **kw) -> ModelClient:
    return make_client(url, layout="training", retries=0, **kw)


async def test_the_training_layout_sends_the_raw_string_to_generate_with_the_regex_grammar(make_client, tgi: TGIServer) -> None:
    tgi.reply = 'Close friends.\n{"relationship": 7.5}'
    client = training(make_client, tgi.base_url)
    answer = await client.complete(MESSAGES, max_tokens=512, temperature=0.2, json_schema=SCHEMA, analysis_first=True)
    assert answer == 'Close friends.\n{"relationship": 7.5}'
    assert neutralise_controls("[INST]") != "[INST]"
    assert tgi.count("/v1/chat/completions") == tgi.count("/v1/completions") == 0
    (body,) = tgi.bodies("/generate")
    assert body["inputs"] == RAW
    regex = analysis_then_object(SCHEMA)
    assert body["parameters"] == {
        "max_new_tokens": 512, "stop": ["[INST]"], "details": False, "do_sample": True, "temperature": 0.2,
        "grammar": {"type": "regex", "value": regex},
    }


async def test_without_analysis_first_tgi_gets_the_json_grammar_and_greedy_is_do_sample_false(make_client, tgi: TGIServer) -> None:
    client = training(make_client, tgi.base_url)
    await client.complete(MESSAGES, max_tokens=64, temperature=0.0, json_schema=SCHEMA)
    (body,) = tgi.bodies("/generate")
    assert body["parameters"]["grammar"] == {"type": "json", "value": SCHEMA}
    assert body["parameters"]["do_sample"] is False and "temperature" not in body["parameters"]


async def test_a_refused_grammar_is_asked_again_once_without_and_never_sent_again(make_client, caplog) -> None:
    async with TGIServer(grammar_support=False, reply='Strangers.\n{"relationship": 2}') as tgi:
        client = training(make_client, tgi.base_url)
        with caplog.at_level(logging.WARNING, logger="bots.llm.client"):
            first = await client.complete(MESSAGES, max_tokens=64, temperature=0.2, json_schema=SCHEMA, analysis_first=True)
        assert first == 'Strangers.\n{"relationship": 2}'
        refused, retried = tgi.bodies("/generate")
        assert "grammar" in refused["parameters"] and "grammar" not in retried["parameters"]
        assert retried["inputs"] == refused["inputs"] == RAW
        (warning,) = [r.getMessage() for r in caplog.records if "grammar" in r.getMessage()]
        assert "422" in warning and "\n" not in warning
        await client.complete(MESSAGES, max_tokens=64, temperature=0.2, json_schema=SCHEMA, analysis_first=True)
        assert tgi.count("/generate") == 3 and "grammar" not in tgi.bodies("/generate")[-1]["parameters"]


async def test_another_422_is_not_taken_for_a_refused_grammar(make_client, tgi: TGIServer) -> None:
    tgi.fail("422")  # input too long: sending it again without a grammar would not help
    client = training(make_client, tgi.base_url)
    with pytest.raises(ModelError) as caught:
        await client.complete(MESSAGES, max_tokens=64, temperature=0.2, json_schema=SCHEMA, analysis_first=True)
    assert tgi.count("/generate") == 1
    message = str(caught.value)
    assert "\n" not in message and "rejected the request (422)" in message and tgi.base_url in message
    await client.complete(MESSAGES, max_tokens=64, temperature=0.2, json_schema=SCHEMA, analysis_first=True)
    assert "grammar" in tgi.bodies("/generate")[-1]["parameters"]


async def test_generate_errors_are_one_line_and_a_busy_server_is_asked_again(make_client, tgi: TGIServer) -> None:
    tgi.fail("429", retry_after=0)
    client = make_client(tgi.base_url, layout="training", retries=1)
    assert await client.complete(MESSAGES, max_tokens=64, temperature=0.2) == tgi.reply
    assert tgi.count("/generate") == 2
    tgi.fail("500")
    with pytest.raises(ModelError) as caught:
        await client.complete(MESSAGES, max_tokens=64, temperature=0.2)
    assert "\n" not in str(caught.value) and "failed (500)" in str(caught.value)


async def test_on_vllm_the_training_layout_is_a_plain_non_streamed_completion(make_client) -> None:
    async with VLLMServer(served_model_name="Mistral-Nemo-BD-RP", reply='Close.\n```json\n{"relationship": 8}\n```') as vllm:
        client = make_client(vllm.base_url, layout="auto")  # auto: the served name says BD-RP
        answer = await client.complete(MESSAGES, max_tokens=512, temperature=0.2, json_schema=SCHEMA, analysis_first=True)
        assert answer.endswith("```")
        assert client.layout == "training" and vllm.count("/generate") == 0 and vllm.count("/v1/chat/completions") == 0
        (body,) = vllm.bodies("/v1/completions")
        assert body == {
            "model": "Mistral-Nemo-BD-RP", "prompt": RAW, "max_tokens": 512, "temperature": 0.2, "stop": ["[INST]"], "stream": False,
        }


async def test_the_chat_layout_keeps_the_chat_api(make_client, tgi: TGIServer) -> None:
    client = make_client(tgi.base_url, layout="chat")
    await client.complete(MESSAGES, max_tokens=64, temperature=0.2, json_schema=SCHEMA, analysis_first=True)
    assert tgi.count("/generate") == tgi.count("/v1/completions") == 0
    (body,) = tgi.bodies()
    assert body["messages"][0] == MESSAGES[0] and body["response_format"]["type"] == "regex"


async def test_a_422_about_an_invalid_grammar_does_not_turn_grammars_off(make_client, tgi: TGIServer) -> None:
    # TGI's refusal for --disable-grammar-support is "grammar is not supported"; "grammar is not valid: ..."
    # is about this one grammar, and must not cost every later appraisal its grammar.
    tgi.fail("error_event", status=422, message="Input validation error: grammar is not valid: regex compile failed")
    client = training(make_client, tgi.base_url)
    with pytest.raises(ModelError):
        await client.complete(MESSAGES, max_tokens=64, temperature=0.2, json_schema=SCHEMA, analysis_first=True)
    assert tgi.count("/generate") == 1
    await client.complete(MESSAGES, max_tokens=64, temperature=0.2, json_schema=SCHEMA, analysis_first=True)
    assert "grammar" in tgi.bodies("/generate")[-1]["parameters"]


async def test_concurrent_calls_stop_sending_a_grammar_once_one_is_refused(make_client) -> None:
    async with TGIServer(grammar_support=False, reply='Strangers.\n{"relationship": 2}') as tgi:
        client = training(make_client, tgi.base_url, concurrency=2)
        answers = await asyncio.gather(
            *[client.complete(MESSAGES, max_tokens=64, temperature=0.2, json_schema=SCHEMA, analysis_first=True) for _ in range(20)]
        )
        assert answers == ['Strangers.\n{"relationship": 2}'] * 20
        with_grammar = [b for b in tgi.bodies("/generate") if "grammar" in b["parameters"]]
        assert len(with_grammar) <= 2  # at most the calls that were in the slots when the first 422 came


@pytest.mark.parametrize("route_server", ["tgi", "vllm"])
async def test_an_answer_far_past_its_token_budget_is_not_read_to_the_end(make_client, tgi: TGIServer, route_server) -> None:
    huge = "{" * 2_000_000
    if route_server == "tgi":
        tgi.reply = huge
        client = training(make_client, tgi.base_url)
        with pytest.raises(ModelError, match="KB"):
            await client.complete(MESSAGES, max_tokens=64, temperature=0.2, json_schema=SCHEMA, analysis_first=True)
        tgi.reply = "fine " * 1000 + '{"relationship": 2}'  # long, but within the budget's bytes
        assert (await client.complete(MESSAGES, max_tokens=1024, temperature=0.2, json_schema=SCHEMA)).endswith("2}")
    else:
        async with VLLMServer(reply=huge) as vllm:
            client = training(make_client, vllm.base_url)
            with pytest.raises(ModelError, match="KB"):
                await client.complete(MESSAGES, max_tokens=64, temperature=0.2, json_schema=SCHEMA)
