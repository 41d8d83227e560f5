"""`personae prompt` prints the bytes the engine sends: a few turns through the engine against the
recording TGI-protocol server, then `personae prompt` with the same card, user, history and message,
compared with what the server received (the raw prompt in the training layout, the messages in the
chat layout). The first turn carries the greeting the person was shown, after the opening line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bots.cli import app
from core.cards import card_json, edit_card
from tests.engine.test_training_layout import CHINESE, ENGLISH, default_world
from tests.tgi_server import TGIServer

BD_RP = "yuyouyu/Mistral-Nemo-BD-RP"
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
GREETINGS = {False: "(bows) Welcome, {{user}}. I am {{char}}.", True: "（拱手）{{user}}，幸会。我是{{char}}。"}
EXAMPLES = "<START>\n{{user}}: Who are you?\n{{char}}: (sighs) A prince of nothing."
runner = CliRunner()


async def give_greeting(world, tmp_path: Path, *, zh: bool) -> Path:
    """Give the world's character a greeting and example dialogue; the card file `personae prompt` reads."""
    store = world.app.store
    character = await store.characters.get_by_name(world.character_name)
    card = edit_card(character.card, {"greeting": GREETINGS[zh]})
    card["data"]["alternate_greetings"] = []
    card["data"]["mes_example"] = EXAMPLES
    await store.characters.replace(character.id, card)
    world.app.engine.hot.forget_character(character.id)
    path = tmp_path / "card.json"
    path.write_text(card_json((await store.characters.get_by_name(world.character_name)).card), encoding="utf-8")
    return path


def personae_prompt(tmp_path: Path, card: Path, history: list[dict] | None, message: str, *flags: str) -> str:
    args = ["prompt", str(card), "--user", "Elena", "--message", message, *flags]
    if history is not None:
        file = tmp_path / "history.json"
        file.write_text(json.dumps(history, ensure_ascii=False), encoding="utf-8")
        args += ["--history", str(file)]
    result = runner.invoke(app, args, env={"PERSONAE_CARD_EXAMPLES": "off", "PERSONAE_PROMPT_LAYOUT": "auto"})
    assert result.exit_code == 0, result.output
    return result.stdout


def opening(world, zh: bool) -> str:
    return f"（Elena走向{world.character_name}。）" if zh else f"(Elena approaches {world.character_name}.)"


@pytest.mark.parametrize("zh", [False, True], ids=["english", "chinese"])
async def test_personae_prompt_prints_the_training_layout_string_the_engine_sent(store, cache, tmp_path, zh) -> None:
    lines = CHINESE if zh else ENGLISH
    async with TGIServer(model_id=BD_RP, reply=lambda body: f"(bows) reply {body['prompt'].count('[INST]')}") as tgi:
        world = await default_world(store, cache, tgi, zh=zh)
        try:
            card = await give_greeting(world, tmp_path, zh=zh)
            history: list[dict] = []
            for i, text in enumerate(lines):
                reply, _ = await world.say(text)
                sent = tgi.bodies("/v1/completions")[-1]["prompt"]
                if i == 0:
                    # First contact: the greeting as the person was shown it, after the opening line.
                    assert reply.greeting
                    assert sent.endswith(f"[INST] {opening(world, zh)} [/INST]{reply.greeting}</s>[INST] {text} [/INST]")
                    assert sent.count("[INST]") == 2  # no example dialogue (off by default)
                    assert personae_prompt(tmp_path, card, None, text, "--raw") == sent  # the card's greeting, as the engine
                    history.append({"role": "assistant", "content": reply.greeting})
                assert personae_prompt(tmp_path, card, history, text, "--raw") == sent
                assert json.loads(personae_prompt(tmp_path, card, history, text, "--raw", "--json")) == {"prompt": sent}
                history += [{"role": "user", "content": text}, {"role": "assistant", "content": reply.text}]
            assert tgi.count("/v1/completions") == len(lines) and tgi.count("/v1/chat/completions") == 0
        finally:
            await world.app.engine.drain()
            await world.app.model.close()


async def test_personae_prompt_prints_the_chat_messages_the_engine_sent(store, cache, tmp_path) -> None:
    async with TGIServer(model_id=SMOL, reply=lambda body: f"(nods) reply {len(body['messages'])}") as tgi:
        world = await default_world(store, cache, tgi, zh=False)
        try:
            card = await give_greeting(world, tmp_path, zh=False)
            history: list[dict] = []
            for i, text in enumerate(ENGLISH):
                reply, _ = await world.say(text)
                sent = tgi.bodies()[-1]["messages"]
                if i == 0:
                    assert sent[1:] == [
                        {"role": "user", "content": opening(world, False)},
                        {"role": "assistant", "content": reply.greeting},
                        {"role": "user", "content": text},
                    ]
                    assert json.loads(personae_prompt(tmp_path, card, None, text, "--json")) == {"messages": sent}
                    history.append({"role": "assistant", "content": reply.greeting})
                assert json.loads(personae_prompt(tmp_path, card, history, text, "--json")) == {"messages": sent}
                history += [{"role": "user", "content": text}, {"role": "assistant", "content": reply.text}]
            assert tgi.count("/v1/chat/completions") == len(ENGLISH) and tgi.count("/v1/completions") == 0
        finally:
            await world.app.engine.drain()
            await world.app.model.close()
