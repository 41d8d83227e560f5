"""The default path (PERSONAE_PROMPT_LAYOUT=auto) sends a BD-RP server the layout it was trained on,
byte for byte against LLaMA-Factory's ``mistral`` template: ``{system}[INST] u1 [/INST]a1</s>[INST] u2 [/INST]``
(the server adds the BOS token itself), and any other model the chat request."""

from __future__ import annotations

import uuid

import pytest

from bots.compose import model_client, wire
from core.cards import new_card
from core.prompt import render_system_prompt
from tests.dynamics.conftest import ZH_CARD
from tests.engine.conftest import World, build_world, built_apps, make_settings
from tests.tgi_server import TGIServer

ENGLISH = ["Who goes there?", "Stand and unfold yourself.", "Long live the king!"]
CHINESE = ["你是谁？", "今晚月色很好。", "我们明天再见吧。"]


async def default_world(store, cache, tgi: TGIServer, *, zh: bool) -> World:
    """A world wired as `personae run` wires it: the model client from the settings (layout auto)."""
    world = await build_world(store, cache, tgi)
    await world.app.model.close()
    settings = make_settings(llm_url=tgi.base_url, appraiser="none")
    assert settings.prompt_layout == "auto"
    world.app = wire(settings, store, cache, model_client(settings, tgi.base_url))
    built_apps.append(world.app)
    if zh:
        name = f"李白-{uuid.uuid4().hex[:6]}"
        await store.characters.add(new_card(name=name, **ZH_CARD))
        assert (await world.app.commands.bind(world.admin, world.place, name)).ok
        world.character_name = name
    return world


@pytest.mark.parametrize("zh", [False, True], ids=["english", "chinese"])
async def test_a_three_turn_conversation_reaches_bd_rp_in_the_training_layout(store, cache, zh) -> None:
    lines = CHINESE if zh else ENGLISH
    async with TGIServer(model_id="yuyouyu/Mistral-Nemo-BD-RP", reply=lambda body: f"(bows) reply {body['prompt'].count('[INST]')}") as tgi:
        world = await default_world(store, cache, tgi, zh=zh)
        try:
            for text in lines:
                await world.say(text)
            character = await store.characters.get_by_name(world.character_name)
            system = render_system_prompt(character.profile, chat_role="Elena")
            expected = (
                f"{system}[INST] {lines[0]} [/INST](bows) reply 1</s>"
                f"[INST] {lines[1]} [/INST](bows) reply 2</s>"
                f"[INST] {lines[2]} [/INST]"
            )
            assert tgi.bodies("/v1/completions")[-1]["prompt"] == expected
            assert tgi.count("/v1/chat/completions") == 0
        finally:
            await world.app.engine.drain()
            await world.app.model.close()


async def test_a_server_of_another_model_gets_the_chat_request_on_the_default_path(store, cache) -> None:
    async with TGIServer(model_id="HuggingFaceTB/SmolLM2-135M-Instruct") as tgi:
        world = await default_world(store, cache, tgi, zh=False)
        try:
            await world.say(ENGLISH[0])
            assert tgi.count("/v1/completions") == 0 and tgi.count("/v1/chat/completions") == 1
            assert tgi.bodies()[-1]["messages"][-1] == {"role": "user", "content": ENGLISH[0]}
        finally:
            await world.app.engine.drain()
            await world.app.model.close()
