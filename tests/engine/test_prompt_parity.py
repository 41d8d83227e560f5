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


# -- edge cases: `personae prompt` goes through the engine's own functions -------------------------------

R = "(smiles) The rain has stopped."


def _alt_greeting(card: dict) -> None:
    card["data"]["first_mes"] = ""
    card["data"]["alternate_greetings"] = ["Who goes there, {{user}}?"]


def _greeting(text: str):
    def change(card: dict) -> None:
        card["data"]["first_mes"] = text
        card["data"]["alternate_greetings"] = []
    return change


# name: (card change, user, earlier messages, new message, history file: None, "empty" or "stored",
#        fail the reply before the new message, settings)
EDGES = {
    "alternate-greeting-only": (_alt_greeting, "Elena", [], "Hi.", None, False, {}),
    "padded-message": (_greeting(""), "Elena", [], "  Hi.\r\nThere  ", None, False, {}),
    "spaced-name-in-greeting": (_greeting("Welcome, {{user}}."), "Eve   Smith", [], "Hi.", None, False, {}),
    "history-over-the-window": (_greeting("Welcome."), "Elena", [f"m{i}" for i in range(5)], "last", "stored", False,
                                {"history_turns": 6}),
    "empty-history-file": (_greeting("Welcome."), "Elena", [], "Hi.", "empty", False, {}),
    "budget-after-a-failed-reply": (_greeting(""), "Elena", [f"exchange {i} " + "words " * 60 for i in range(4)] + ["short one"],
                                    ("long message " * 120).strip(), "stored", True, {"max_input_tokens": 1000, "max_tokens": 96}),
}


@pytest.mark.parametrize("case", EDGES)
async def test_personae_prompt_matches_the_engine_at_the_edges(store, cache, tmp_path, case) -> None:
    from bots.compose import model_client, wire
    from tests.engine.conftest import build_world, built_apps, make_settings

    change, user, earlier, message, history_file, fail_last, overrides = EDGES[case]
    async with TGIServer(tgi=False, model_id=SMOL, reply=R) as tgi:
        world = await build_world(store, cache, tgi)
        await world.app.model.close()
        settings = make_settings(llm_url=tgi.base_url, appraiser="none", llm_retries=0, **overrides)
        world.app = wire(settings, store, cache, model_client(settings, tgi.base_url))
        built_apps.append(world.app)
        try:
            character = await store.characters.get_by_name(world.character_name)
            card = json.loads(card_json(character.card))
            change(card)
            await store.characters.replace(character.id, card)
            world.app.engine.hot.forget_character(character.id)
            reply = None
            for i, text in enumerate(earlier):
                if fail_last and i == len(earlier) - 1:
                    tgi.fail("500", times=1)
                reply, _ = await world.say(text, name=user)
            if history_file == "stored":
                rows = await store.messages.recent(reply.conversation, 10_000)
                history = [{"role": m.role, "content": m.content} for m in rows]
            else:
                history = [] if history_file == "empty" else None
            await world.say(message, name=user)
            sent = tgi.bodies("/v1/chat/completions")[-1]["messages"]
        finally:
            await world.app.engine.drain()
            await world.app.model.close()
    path = tmp_path / "card.json"
    path.write_text(card_json((await store.characters.get_by_name(world.character_name)).card), encoding="utf-8")
    args = ["prompt", str(path), "--user", user, "--message", message, "--json"]
    if history is not None:
        (tmp_path / "history.json").write_text(json.dumps(history, ensure_ascii=False), encoding="utf-8")
        args += ["--history", str(tmp_path / "history.json")]
    env = {"PERSONAE_CARD_EXAMPLES": "off", "PERSONAE_PROMPT_LAYOUT": "auto"}
    env.update({f"PERSONAE_{k.upper()}": str(v) for k, v in overrides.items()})
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"messages": sent}
