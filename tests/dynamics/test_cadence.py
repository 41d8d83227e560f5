"""PERSONAE_APPRAISAL_CADENCE: which exchanges the model appraiser reads. Counted on the recording
double: a skipped exchange sends no appraisal request and moves nothing; regenerating keeps the count."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bots.settings import Settings
from core.cadence import parse_cadence
from bots.compose import wire
from core.commands import Place
from core.events import ConversationKey, Platform
from tests.dynamics.conftest import close, person
from tests.engine.conftest import build_world, built_apps
from tests.tgi_server import TGIServer

HELPER = "You are a helpful assistant."
REPLY = "I see."  # the lexicon reads nothing in it: only the person's words move it
NEUTRAL = ["The table is made of wood.", "We met at noon.", "Tell me about the castle."]
WARM = "I love you, dear friend, thank you so much!"
COLD = "You wretched fool, I hate you."
SIX = [NEUTRAL[0], WARM, NEUTRAL[1], COLD, NEUTRAL[2], WARM]  # the lexicon sees exchanges 2, 4 and 6 move


class SwingingAnswers:
    """Replies for the turns; appraisal answers that swing between two extremes, so each one moves the state."""

    def __init__(self) -> None:
        self.asked = {"emotion": 0, "relationship": 0}

    def __call__(self, body) -> str:
        if body["messages"][0]["content"] != HELPER:
            return REPLY
        task = "relationship" if "intimacy score" in body["messages"][1]["content"] else "emotion"
        self.asked[task] += 1
        high = self.asked[task] % 2 == 1
        if task == "relationship":
            return f'Analysis.\n{{"relationship": {10 if high else 0}}}'
        level = 10 if high else 0
        return "Analysis.\n" + '{"happiness": %d, "sadness": %d, "disgust": 0, "fear": 0, "surprise": 5, "anger": 0}' % (level, 10 - level)


def appraisal_requests(tgi: TGIServer) -> int:
    return sum(1 for b in tgi.bodies() if b["messages"][0]["content"] == HELPER)


async def six_exchanges(store, cache, tgi: TGIServer, cadence: str) -> tuple[list[int], list[int]]:
    """Say SIX; return the reply ids in order and the reply ids that moved the state."""
    world = await build_world(store, cache, tgi, appraiser="model", appraisal_cadence=cadence)
    tgi.reply = SwingingAnswers()
    try:
        replies = []
        for text in SIX:
            reply, _ = await world.say(text)
            await world.app.engine.drain()
            replies.append(reply.reply_message_id)
        changes = await world.app.store.relationships.changes(await person(world))
        return replies, sorted(c.message_id for c in changes)
    finally:
        await close(world)


@pytest.mark.parametrize(
    "cadence, appraised",
    [("every", [1, 2, 3, 4, 5, 6]), ("every:1", [1, 2, 3, 4, 5, 6]), ("every:3", [3, 6]), ("every:2", [2, 4, 6]), ("moved", [2, 4, 6])],
)
async def test_over_six_exchanges_only_the_due_ones_ask_the_model_and_move_the_state(store, cache, tgi, cadence, appraised) -> None:
    replies, moved = await six_exchanges(store, cache, tgi, cadence)
    assert appraisal_requests(tgi) == 2 * len(appraised)  # two tasks per appraised exchange, none for the rest
    assert moved == [replies[n - 1] for n in appraised]


async def test_moved_asks_only_about_exchanges_the_lexicon_sees_move(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi, appraiser="model", appraisal_cadence="moved")
    tgi.reply = SwingingAnswers()
    try:
        for text in NEUTRAL:
            await world.say(text)
            await world.app.engine.drain()
        assert appraisal_requests(tgi) == 0
        await world.say(COLD)
        await world.app.engine.drain()
        assert appraisal_requests(tgi) == 2
    finally:
        await close(world)


async def test_regenerating_keeps_the_count_and_undoes_only_what_an_appraisal_did(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi, appraiser="model", appraisal_cadence="every:2")
    tgi.reply = SwingingAnswers()
    try:
        character = await world.app.store.characters.get_by_name(world.character_name)
        conversation = ConversationKey(character.id, Platform.DISCORD, world.channel, "u1")

        async def regenerate(reply_id: int) -> None:
            again = world.app.engine.regenerate(conversation, "Elena", reply_id)
            await again.collect()
            assert again.status.value == "answered"
            await world.app.engine.drain()

        async def say(text: str) -> int:
            reply, _ = await world.say(text)
            await world.app.engine.drain()
            return reply.reply_message_id

        first = await say("One.")  # skipped
        assert appraisal_requests(tgi) == 0
        second = await say("Two.")  # appraised
        assert appraisal_requests(tgi) == 2
        await regenerate(second)  # its change undone, and the new reply appraised in its place
        assert appraisal_requests(tgi) == 4
        third = await say("Three.")  # skipped: regenerating did not count as an exchange
        assert appraisal_requests(tgi) == 4
        await regenerate(third)  # still skipped, and nothing to undo
        assert appraisal_requests(tgi) == 4
        fourth = await say("Four.")  # appraised
        assert appraisal_requests(tgi) == 6
        changes = list(reversed(await world.app.store.relationships.changes(await person(world))))
        assert [(c.message_id, c.appraiser) for c in changes] == [(second, "model"), (second, "undo"), (second, "model"), (fourth, "model")]
        assert first not in {c.message_id for c in changes}
    finally:
        await close(world)


async def test_every_nth_counts_each_conversation_and_a_regenerated_reply_decides_alike_after_a_restart(store, cache, tgi) -> None:
    # The appraisal window is per channel: so is the count, or some exchanges would never be read.
    world = await build_world(store, cache, tgi, appraiser="model", appraisal_cadence="every:2")
    tgi.reply = SwingingAnswers()
    other = f"{world.channel}-b"
    assert (await world.app.commands.bind(world.admin, Place(Platform.DISCORD, world.chat, other), world.character_name, "all")).ok
    character = await world.app.store.characters.get_by_name(world.character_name)
    try:
        async def say(text: str, channel: str) -> int:
            reply, _ = await world.say(text, channel_id=channel)
            await world.app.engine.drain()
            return reply.reply_message_id

        async def regenerate(reply_id: int, channel: str) -> None:
            again = world.app.engine.regenerate(ConversationKey(character.id, Platform.DISCORD, channel, "u1"), "Elena", reply_id)
            await again.collect()
            assert again.status.value == "answered"
            await world.app.engine.drain()

        await say("One.", world.channel)  # first of channel A: skipped
        b1 = await say("One.", other)  # first of channel B: skipped
        assert appraisal_requests(tgi) == 0
        b2 = await say("Two.", other)  # second of B: appraised
        assert appraisal_requests(tgi) == 2
        a2 = await say("Two.", world.channel)  # second of A: appraised
        assert appraisal_requests(tgi) == 4
        await say("Three.", world.channel)  # third of A: skipped
        assert appraisal_requests(tgi) == 4

        # A restart: nothing kept in the process; the decision comes from what is stored.
        world.app = wire(world.app.settings, store, cache, world.app.model)
        built_apps.append(world.app)
        await regenerate(b2, other)  # appraised as it was: its change undone, the new reply appraised
        assert appraisal_requests(tgi) == 6
        changes = list(reversed(await world.app.store.relationships.changes(await person(world))))
        assert [(c.message_id, c.appraiser) for c in changes] == [(b2, "model"), (a2, "model"), (b2, "undo"), (b2, "model")]
    finally:
        await close(world)


def test_the_setting_takes_every_every_n_and_moved_and_says_what_it_takes() -> None:
    assert [Settings(appraisal_cadence=v).appraisal_cadence for v in ("every", "every:1", "EVERY:4", "moved")] == [
        "every", "every", "every:4", "moved",
    ]
    assert parse_cadence("every:12") == ("every", 12)
    for bad in ("every:0", "every:x", "sometimes", "every:"):
        with pytest.raises(ValidationError) as caught:
            Settings(appraisal_cadence=bad)
        assert "every, every:N" in str(caught.value) and "moved" in str(caught.value)
