"""PERSONAE_LOG_FORMAT=json: every line parses, lines of a turn carry its ids, and no message text unless asked."""

from __future__ import annotations

import json
import logging

import pytest

from bots.cli import setup_logging
from core import observe
from tests.engine.conftest import build_world, tgi  # noqa: F401  (the TGI double fixture)

SAID = "SECRET-SAID the ghost walks"
ANSWERED = "SECRET-ANSWER no JSON in here at all"


@pytest.fixture
def json_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    setup_logging(log_format="text", message_text=False)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("personae", "bots", "core", "storage"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("message_text", [False, True])
async def test_json_lines_carry_the_turn_ids_and_no_message_text(capsys, json_logging, store, cache, tgi, message_text) -> None:
    setup_logging(verbose=True, log_format="json", message_text=message_text)
    world = await build_world(store, cache, tgi, appraiser="model")
    tgi.script(reply=ANSWERED, instant=True)  # the appraiser cannot read it: that is logged, with the answer
    reply, _ = await world.say(SAID)
    await world.app.engine.drain()
    tgi.fail("500", times=5)
    failed, _ = await world.say(SAID + " again")
    tgi.failures.clear()
    await world.app.engine.drain()
    found = lines(capsys.readouterr().err)

    for line in found:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert SAID not in json.dumps(line, ensure_ascii=False), line
    conversation = reply.conversation.cache_key()
    appraisal = [line for line in found if line["logger"] == "core.appraisal"]
    assert appraisal, found
    # The appraisal runs after the turn, in the background: its lines still say which turn.
    assert {(line.get("conversation"), line.get("turn")) for line in appraisal} >= {(conversation, reply.intake.id)}
    model = [line for line in found if line["logger"] == "core.turn" and "model failure" in line["message"]]
    assert [(line["conversation"], line["turn"]) for line in model] == [(conversation, failed.intake.id)]
    quoted = any("SECRET-ANSWER" in line["message"] for line in appraisal)
    assert quoted is message_text
    assert observe.conversation_id.get() is None and observe.turn_id.get() is None  # nothing leaks out of a turn
