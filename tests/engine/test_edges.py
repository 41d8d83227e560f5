"""What the engine lets through at its edges: bad bytes, and a model server that will not stop."""

from __future__ import annotations

import pytest

from core.engine import NOTICE_BUDGET, ReplyStatus
from tests.engine.conftest import build_world
from tests.engine.test_engine import stored


@pytest.mark.parametrize(
    "sent, kept",
    [
        ("Hail\x00, friend", "Hail, friend"),
        ("who goes \ud800there", "who goes \ufffdthere"),
        ("bell\x07 and\x1b[31m colour\x7f\x85 here\ttab\r\nnext", "bell and[31m colour here\ttab\nnext"),
    ],
    ids=["nul", "lone-surrogate", "c0-c1-controls"],
)
async def test_bad_bytes_in_a_message_are_cleaned_before_the_model_and_the_database(world, sent: str, kept: str) -> None:
    reply, deltas = await world.say(sent)
    assert reply.status is ReplyStatus.ANSWERED
    assert world.tgi.bodies()[-1]["messages"][-1]["content"] == kept
    assert await stored(world) == [("user", kept), ("assistant", world.tgi.reply)]


async def test_bad_bytes_in_the_models_reply_are_cleaned_as_shown_and_as_stored(world) -> None:
    world.tgi.script(reply="(bows)\x00 Good \ud800morrow\x1b.", chunks=3)
    reply, deltas = await world.say("hello")
    assert reply.status is ReplyStatus.ANSWERED
    shown = "".join(deltas)
    assert shown == "(bows) Good \ufffdmorrow."
    assert await stored(world) == [("user", "hello"), ("assistant", shown)]


async def test_endless_text_is_cut_at_the_token_budget_and_stored_as_shown(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi, max_tokens=16)
    tgi.script(reply="more " * 5000)  # one word a delta, far past max_tokens: the server ignores it
    reply, deltas = await world.say("tell me everything")
    assert reply.status is ReplyStatus.ANSWERED
    assert tgi.bodies()[-1]["max_tokens"] == 16
    assert deltas[-1] == NOTICE_BUDGET
    assert len(deltas) == 16 + 1  # the budget's deltas, then the mark that it was cut
    shown = "".join(deltas).strip()
    assert await stored(world) == [("user", "tell me everything"), ("assistant", shown)]


async def test_one_giant_delta_is_cut_at_a_word_end(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi, max_tokens=16)
    tgi.script(reply="word " * 7400, chunks=1)  # 37,000 characters in one event
    reply, deltas = await world.say("go on")
    shown = "".join(deltas).strip()
    assert shown.endswith("word" + NOTICE_BUDGET)
    assert len(shown) <= (16 + 16) * 8 + len(NOTICE_BUDGET)
    assert await stored(world) == [("user", "go on"), ("assistant", shown)]


async def test_a_reply_within_max_tokens_is_never_cut(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi, max_tokens=16)
    honest = " ".join(["extraordinarily"] * 16)  # 16 long words (one token each in a large vocabulary)
    tgi.script(reply=honest)
    reply, deltas = await world.say("speak")
    assert "".join(deltas) == honest and NOTICE_BUDGET not in deltas
    assert reply.text == honest
