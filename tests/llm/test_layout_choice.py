"""PERSONAE_PROMPT_LAYOUT=auto: BD-RP's training layout for a BeyondDialogue model, the chat template otherwise."""

from __future__ import annotations

import logging

import pytest

from bots.llm.client import render_mistral_raw
from bots.llm.dialects import Dialect, choose_layout
from bots.llm.vllm_double import VLLMServer
from bots.settings import Settings
from tests.tgi_server import TGIServer

MESSAGES = [{"role": "system", "content": "You are Hamlet."}, {"role": "user", "content": "Who goes there?"}]


async def reply(client) -> str:
    return "".join([d async for d in client.stream(MESSAGES, max_tokens=16, temperature=0.7)])


async def test_a_tgi_serving_bd_rp_gets_the_training_layout_as_a_raw_completion(make_client, caplog) -> None:
    async with TGIServer(model_id="yuyouyu/Mistral-Nemo-BD-RP") as tgi:
        client = make_client(tgi.base_url, layout="auto")
        with caplog.at_level(logging.INFO, logger="bots.llm.client"):
            await reply(client)
            await reply(client)
        assert tgi.count("/v1/chat/completions") == 0
        assert [b["prompt"] for b in tgi.bodies("/v1/completions")] == [render_mistral_raw(MESSAGES, bos="")] * 2
    told = [r.getMessage() for r in caplog.records if "prompt layout" in r.getMessage()]
    assert told == [f"prompt layout for {tgi.base_url}: training (auto: the server's model_id 'yuyouyu/Mistral-Nemo-BD-RP' "
                    "is a BeyondDialogue model, trained on this layout)"]


async def test_a_tgi_serving_another_model_gets_the_chat_template(make_client) -> None:
    async with TGIServer(model_id="mistralai/Mistral-Nemo-Instruct-2407") as tgi:
        client = make_client(tgi.base_url, layout="auto")
        await reply(client)
        assert tgi.count("/v1/completions") == 0 and tgi.count("/v1/chat/completions") == 1
        assert client.layout == "chat" and "'mistralai/Mistral-Nemo-Instruct-2407' is not a BeyondDialogue model" in client.layout_reason


async def test_a_vllm_serving_bd_rp_under_its_name_gets_the_training_layout(make_client) -> None:
    async with VLLMServer(served_model_name="Mistral-Nemo-BD-RP") as vllm:
        client = make_client(vllm.base_url, layout="auto")
        await reply(client)
        assert vllm.count("/v1/chat/completions") == 0
        assert vllm.bodies("/v1/completions")[0]["model"] == "Mistral-Nemo-BD-RP"


async def test_personae_llm_model_naming_bd_rp_chooses_the_training_layout_on_a_plain_server(make_client) -> None:
    async with TGIServer(tgi=False, model_id="local-model") as plain:
        client = make_client(plain.base_url, layout="auto", model="my-BD-RP-q4")
        await reply(client)
        assert plain.count("/v1/completions") == 1 and client.layout == "training"
        assert client.layout_reason.startswith("auto: PERSONAE_LLM_MODEL 'my-BD-RP-q4'")


async def test_a_layout_that_is_set_is_kept_whatever_the_model(make_client) -> None:
    async with TGIServer(model_id="yuyouyu/Mistral-Nemo-BD-RP") as tgi:
        await reply(make_client(tgi.base_url, layout="chat"))
        await reply(make_client(tgi.base_url, layout="mistral-raw"))  # the earlier name of the training layout
        assert tgi.count("/v1/chat/completions") == 1 and tgi.count("/v1/completions") == 1


def test_the_choice_reads_every_name_the_server_gives() -> None:
    assert choose_layout("auto", Dialect("vllm", ("bd-rp",)), None)[0] == "training"
    assert choose_layout("auto", Dialect("openai", ("SmolLM2-135M-Instruct",)), None) == (
        "chat", "auto: the served model 'SmolLM2-135M-Instruct' is not a BeyondDialogue model (no 'BD-RP' in its name)")
    assert choose_layout("auto", None, None)[0] == "chat"
    assert choose_layout("training", Dialect("openai", ("SmolLM2",)), None) == ("training", "PERSONAE_PROMPT_LAYOUT=training")


@pytest.mark.parametrize("value, layout", [(None, "auto"), ("training", "training"), ("mistral-raw", "training"), ("chat", "chat")])
def test_the_setting_defaults_to_auto_and_takes_the_old_name(value, layout) -> None:
    values = {} if value is None else {"prompt_layout": value}
    assert Settings(_env_file=None, **values).prompt_layout == layout
