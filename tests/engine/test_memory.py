"""Long-term memory through the engine: turns that leave the history window are condensed (by the
recording TGI double, scripted), the memories come back in the scene of later prompts, people see
and delete them, and a private chat's stay in the private chat."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Mapping

import pytest

from bots.llm.client import ModelClient
from core.commands import Actor, Place
from core.events import Platform
from core.memory import MEMORY_SYSTEM
from tests.conftest import paired_cache, paired_database
from tests.engine.conftest import build_world
from tests.tgi_server import TGIServer

LANTERN = "Elena keeps a blue lantern from her grandmother Ingrid."
# Events of a story that each say something else (none replaces another).
TOPICS = (
    "the frozen harbour", "a silver goblet", "wolves beyond the forest", "the king's ghost",
    "a broken sword", "old Yorick's skull", "the northern lights", "a ship from Norway",
)
ELENA = Actor(Platform.DISCORD, "u1", "Elena")


@pytest.fixture
def database_backend(request: pytest.FixtureRequest, backends: tuple[str, str]):
    """The database of the pair (SQLite with the in-process cache, PostgreSQL with Redis)."""
    return paired_database(request, backends)


@pytest.fixture
def cache_backend(request: pytest.FixtureRequest, backends: tuple[str, str]) -> str | None:
    return paired_cache(request, backends)


def is_condensing(body: Mapping[str, Any]) -> bool:
    """A condensing request, in the chat layout (messages) or the training layout (/generate's inputs)."""
    messages = body.get("messages") or []
    if messages:
        return messages[0].get("content") == MEMORY_SYSTEM
    return str(body.get("inputs", "")).startswith(MEMORY_SYSTEM)


class Condenser:
    """Answers the condensing task as a model would: the lantern when someone mentions it, else one
    event naming the stretch; replies get the usual line. ``broken``: answers without JSON."""

    def __init__(self) -> None:
        self.tasks: list[str] = []
        self.broken = False
        self.varied = False  # events that differ from each other (else each new one replaces the last)
        self.arrived = asyncio.Event()  # set when a condensing task comes in

    def __call__(self, body: Mapping[str, Any]) -> str:
        if not is_condensing(body):
            return "(nods) I hear you."
        task = body["messages"][-1]["content"] if body.get("messages") else body["inputs"]
        self.tasks.append(task)
        self.arrived.set()
        if self.broken:
            return "I would rather not say."
        dialogue = task.split("[Conversation]\n", 1)[1]
        memories = []
        if re.search(r"^Elena: .*lantern", dialogue, re.M):
            memories.append({"kind": "fact", "text": LANTERN})
        said = re.findall(r"^Elena: (?:small talk|in the group) (\d+)", dialogue, re.M)
        if said and self.varied:
            memories.append({"kind": "event", "text": f"Elena and Hamlet spoke of {TOPICS[len(self.tasks) % len(TOPICS)]}."})
        elif said:
            memories.append({"kind": "event", "text": f"They made small talk, turns {said[0]} to {said[-1]}, about the weather and the road."})
        return 'Here is what to keep. {"memories": %s}' % json.dumps(memories)


def reply_bodies(tgi: TGIServer) -> list[dict]:
    return [b for b in tgi.bodies() if not is_condensing(b)]


async def chat(world, turns: range, text: str = "small talk {n}", **kw) -> None:
    for n in turns:
        reply, _ = await world.say(text.format(n=n), **kw)
        assert reply.status.name == "ANSWERED", reply.status


async def story(world, exchanges: int, **kw) -> None:
    """A story of ``exchanges`` turns in which the person tells the lantern in the third."""
    await chat(world, range(1, 3), **kw)
    await chat(world, range(3, 4), text="My grandmother Ingrid gave me a blue lantern; I keep it by my bed.", **kw)
    await chat(world, range(4, exchanges + 1), **kw)
    await world.app.engine.drain()


async def test_after_120_turns_the_prompt_about_turn_3_holds_its_memory(store, cache, tgi) -> None:
    condenser = Condenser()
    tgi.reply = condenser
    world = await build_world(store, cache, tgi, memory="on")
    await story(world, 120)
    assert condenser.tasks, "nothing was condensed"

    await world.say("Do you still have my lantern?")
    system = reply_bodies(tgi)[-1]["messages"][0]["content"]
    assert f"What {world.character_name} remembers of Elena: " in system and LANTERN in system
    # The turn itself left the window long ago: the memory is all that is left of it.
    assert not any("grandmother" in m["content"] for m in reply_bodies(tgi)[-1]["messages"][1:])

    # Every stretch was condensed once: the memories' turns do not overlap, and start at the start.
    conversation = next(iter(await conversations(world)))
    memories = await store.memories.list(conversation)
    ranges = sorted({(m.seq_from, m.seq_to) for m in memories})
    assert ranges[0][0] == 1
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:]))
    assert sum(m.tokens for m in memories) <= world.app.settings.memory_tokens


async def test_without_memory_the_same_question_finds_nothing(store, cache, tgi) -> None:
    condenser = Condenser()
    tgi.reply = condenser
    world = await build_world(store, cache, tgi, history_turns=10)
    await story(world, 20)
    await world.say("Do you still have my lantern?")
    assert condenser.tasks == []
    assert "lantern" not in reply_bodies(tgi)[-1]["messages"][0]["content"]


async def conversations(world):
    from core.events import ConversationKey

    character = await world.app.store.characters.get_by_name(world.character_name)
    return [ConversationKey(character.id, Platform.DISCORD, world.channel, "u1")]


async def test_memory_lists_and_forget_removes_it_from_the_next_prompt(store, cache, tgi) -> None:
    condenser = Condenser()
    tgi.reply = condenser
    world = await build_world(store, cache, tgi, memory="on", history_turns=10, memory_batch=4)
    await story(world, 30)
    commands = world.app.commands

    listed = await commands.memory(ELENA, world.place)
    assert listed.ok and LANTERN in listed.message
    number = next(n for n, m in enumerate(listed.memories, 1) if m.text == LANTERN)
    assert f"{number}. {LANTERN} (fact, " in listed.message

    await world.say("Do you still have my lantern?")
    assert LANTERN in reply_bodies(tgi)[-1]["messages"][0]["content"]

    refused = await commands.forget_memory(ELENA, world.place, "99")
    assert not refused.ok and "/memory lists 1 to" in refused.message
    assert not (await commands.forget_memory(ELENA, world.place, "two")).ok
    assert LANTERN in (await commands.memory(ELENA, world.place)).message  # a refusal changed nothing

    forgot = await commands.forget_memory(ELENA, world.place, str(number))
    assert forgot.ok and LANTERN in forgot.message
    await world.say("Do you still have my lantern?")
    assert LANTERN not in reply_bodies(tgi)[-1]["messages"][0]["content"]
    assert LANTERN not in (await commands.memory(ELENA, world.place)).message
    # Another person sees nothing of Elena's.
    other = await commands.memory(Actor(Platform.DISCORD, "u2", "Other"), world.place)
    assert other.ok and "remembers nothing about you" in other.message


async def test_forget_deletes_every_memory(store, cache, tgi) -> None:
    condenser = Condenser()
    tgi.reply = condenser
    world = await build_world(store, cache, tgi, memory="on", history_turns=10, memory_batch=4)
    await story(world, 20)
    assert (await world.app.commands.memory(ELENA, world.place)).memories
    outcome = await world.app.commands.forget(ELENA)
    assert outcome.counts["memories"] >= 1
    assert (await world.app.commands.memory(ELENA, world.place)).memories == []
    await world.say("Do you still have my lantern?")
    assert "remembers" not in reply_bodies(tgi)[-1]["messages"][0]["content"]


async def test_a_private_chats_memories_never_reach_a_group_prompt(store, cache, tgi) -> None:
    condenser = Condenser()
    tgi.reply = condenser
    world = await build_world(store, cache, tgi, memory="on", history_turns=10, memory_batch=4)
    dm = Place(Platform.DISCORD, "dm-elena", "dm-elena", private=True)
    used = await world.app.commands.use(ELENA, dm, world.character_name)
    assert used.ok, used.message
    await story(world, 20, channel_id="dm-elena", chat_id="dm-elena", private=True)
    # In the group: the same person, the same character; a story of its own, long enough to be condensed too.
    await chat(world, range(1, 21), text="in the group {n}")
    await world.app.engine.drain()

    await world.say("Do you still have my lantern?")
    group_system = reply_bodies(tgi)[-1]["messages"][0]["content"]
    assert f"What {world.character_name} remembers of Elena: " in group_system  # the group's own memories are there
    assert "lantern" not in group_system
    assert "lantern" not in (await world.app.commands.memory(ELENA, world.place)).message

    await world.say("Do you still have my lantern?", channel_id="dm-elena", chat_id="dm-elena", private=True)
    assert LANTERN in reply_bodies(tgi)[-1]["messages"][0]["content"]
    assert LANTERN in (await world.app.commands.memory(ELENA, dm)).message


async def test_a_condensing_failure_loses_nothing_and_blocks_no_reply(store, cache, tgi) -> None:
    condenser = Condenser()
    tgi.reply = condenser
    world = await build_world(store, cache, tgi, memory="on", history_turns=10, memory_batch=4)
    [conversation] = await conversations(world)
    keeper = world.app.engine.memory
    working = keeper.model

    # The model server for condensing is away: every reply is answered, nothing is condensed.
    keeper.model = ModelClient("http://127.0.0.1:1", timeout_s=2.0, concurrency=2, retries=0)
    try:
        await story(world, 12)
    finally:
        await keeper.model.close()
    # Then it answers without JSON: still nothing condensed, nothing marked as condensed.
    keeper.model = working
    condenser.broken = True
    await chat(world, range(13, 18))
    await world.app.engine.drain()
    assert condenser.tasks
    assert await store.memories.list(conversation) == []
    assert (await store.memories.uncondensed(conversation, 10, 100))[0] == 0

    # Back to normal: the turns waiting are condensed from the start, the lantern with them.
    condenser.broken = False
    await chat(world, range(18, 26))
    await world.app.engine.drain()
    memories = await store.memories.list(conversation)
    assert LANTERN in [m.text for m in memories]
    assert min(m.seq_from for m in memories) == 1


async def test_a_slow_condensing_does_not_hold_up_replies(store, cache, tgi) -> None:
    condenser = Condenser()
    tgi.reply = condenser
    world = await build_world(store, cache, tgi, memory="on", history_turns=6, memory_batch=2)
    keeper = world.app.engine.memory
    async with TGIServer(reply=condenser) as slow:
        slow.gate = asyncio.Event()  # the condensing request (TGI's /generate) waits until the gate opens
        keeper.model = ModelClient(slow.base_url, timeout_s=30.0, concurrency=2, retries=0, layout="training")
        try:
            await chat(world, range(1, 6))
            await asyncio.wait_for(condenser.arrived.wait(), 10)  # the condensing request has arrived and waits
            replies_before = len(reply_bodies(tgi))
            await chat(world, range(6, 12))  # answered while it waits
            assert len(reply_bodies(tgi)) == replies_before + 6
            assert slow.in_flight == 1  # one at a time per conversation
            slow.gate.set()
            await world.app.engine.drain()
        finally:
            await keeper.model.close()
    assert condenser.tasks


async def test_the_memory_budget_is_kept(store, cache, tgi) -> None:
    condenser = Condenser()
    condenser.varied = True
    tgi.reply = condenser
    world = await build_world(store, cache, tgi, memory="on", history_turns=6, memory_batch=2, memory_tokens=60, memory_prompt_tokens=30)
    [conversation] = await conversations(world)
    await story(world, 40)
    memories = await store.memories.list(conversation)
    assert len(condenser.tasks) > 5
    assert sum(m.tokens for m in memories) <= 60
    assert LANTERN in [m.text for m in memories]  # facts outlive events

    await world.say("Do you still have my lantern?")
    system = reply_bodies(tgi)[-1]["messages"][0]["content"]
    added = system.split(f"What {world.character_name} remembers of Elena: ", 1)[1].split("\n", 1)[0]
    assert LANTERN in added
    from core.prompt import estimate_tokens

    assert sum(estimate_tokens(m.text) for m in memories if m.text in added) <= 30


async def test_memory_and_lore_where_no_character_plays_are_refused_in_a_line(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi, memory="on")
    commands = world.app.commands
    nowhere = Place(world.place.platform, world.place.chat_id, "a-channel-with-no-character")
    for outcome in (
        await commands.memory(ELENA, nowhere),
        await commands.forget_memory(ELENA, nowhere, "1"),
        await commands.forget_memory(ELENA, nowhere, "-1"),
    ):
        assert not outcome.ok and "\n" not in outcome.message and "character" in outcome.message.lower()
    lore = await commands.lore(world.admin, nowhere, "list")
    assert not lore.ok and "No character plays here" in lore.message
