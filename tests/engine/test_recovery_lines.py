"""Recovery after a crash answers several conversations at once, and each conversation's messages in
their order (bots.recovering.recover_once)."""

from __future__ import annotations

import asyncio

from bots import recovering
from core.engine import RecoveredTurn, ReplyStatus
from core.events import Platform
from tests.engine.test_durable_turns import restarted


async def test_conversations_are_recovered_at_once_and_each_one_in_order(world) -> None:
    engine = world.app.engine
    for text, user in (("first of u1", "u1"), ("second of u1", "u1"), ("from u2", "u2")):
        assert await engine.accept(world.event(text, user=user)) is not None
    after = restarted(world)
    u2_started = asyncio.Event()
    seen: list[tuple[str, str]] = []
    answered: list[RecoveredTurn] = []

    async def deliver(turn: RecoveredTurn) -> None:
        text = turn.intake.text
        seen.append(("start", text))
        if text == "from u2":
            u2_started.set()
        if text == "first of u1":
            # One conversation after another, u2's message would come after both of u1's: this waits for ever.
            async with asyncio.timeout(30):
                await u2_started.wait()
        await turn.reply.collect()
        answered.append(turn)
        seen.append(("end", text))

    assert await recovering.recover_once(after.app.engine, Platform.DISCORD, deliver) == 3
    assert seen.index(("start", "from u2")) < seen.index(("end", "first of u1"))
    assert seen.index(("end", "first of u1")) < seen.index(("start", "second of u1"))
    assert sorted((t.intake.text, t.reply.status) for t in answered) == [
        ("first of u1", ReplyStatus.ANSWERED), ("from u2", ReplyStatus.ANSWERED), ("second of u1", ReplyStatus.ANSWERED)
    ]
    assert [t async for t in after.app.engine.recover(Platform.DISCORD)] == []


async def test_recovery_stopped_midway_leaves_what_it_had_not_answered_to_the_next_sweep(world, monkeypatch) -> None:
    engine = world.app.engine
    for text in ("one", "two"):
        assert await engine.accept(world.event(text)) is not None
    after = restarted(world)
    monkeypatch.setattr(recovering, "RECOVERED_AT_ONCE", 1)
    inside, read_all = asyncio.Event(), asyncio.Event()
    pending = after.app.store.messages.pending

    async def pending_read(*args, **kwargs):
        batch = await pending(*args, **kwargs)
        if not batch:
            read_all.set()
        return batch

    monkeypatch.setattr(after.app.store.messages, "pending", pending_read)

    async def stuck(turn: RecoveredTurn) -> None:
        inside.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(recovering.recover_once(after.app.engine, Platform.DISCORD, stuck))
    async with asyncio.timeout(30):
        await inside.wait()
        await read_all.wait()  # stopped while answering, not in the middle of a query
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # Nothing stays marked as being answered here: the next sweep takes both, in order.
    delivered: list[str] = []

    async def deliver(turn: RecoveredTurn) -> None:
        await turn.reply.collect()
        delivered.append(turn.intake.text)

    assert await recovering.recover_once(after.app.engine, Platform.DISCORD, deliver) == 2
    assert delivered == ["one", "two"]


async def test_a_redelivery_of_a_message_queued_for_recovery_does_not_go_ahead_of_an_older_one(world) -> None:
    engine = world.app.engine
    events = [world.event(text) for text in ("one", "two")]
    for event in events:
        assert await engine.accept(event) is not None
    after = restarted(world)
    inside, go_on = asyncio.Event(), asyncio.Event()
    order: list[tuple[str, ReplyStatus]] = []

    async def deliver(turn: RecoveredTurn) -> None:
        if turn.intake.text == "one":
            inside.set()
            await go_on.wait()
        await turn.reply.collect()
        order.append((turn.intake.text, turn.reply.status))

    task = asyncio.create_task(recovering.recover_once(after.app.engine, Platform.DISCORD, deliver))
    async with asyncio.timeout(30):
        await inside.wait()  # "one" is being delivered, "two" waits behind it in its line
        again = after.app.engine.handle(events[1])  # the platform delivers "two" again meanwhile
        await again.collect()  # settled at once: the recovery's line answers it, after "one"
        order.append(("two again", again.status))
        go_on.set()
        await task
    assert [text for text, status in order if status is ReplyStatus.ANSWERED][0] == "one", order
