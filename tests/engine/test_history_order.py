"""The stored history is the conversation's order, not the order messages arrived in.

A person's message is stored when it arrives; a second one sent while the first is answered is
stored before the first reply (and, on first contact, before the greeting), yet joins the
conversation only after that reply.
"""

from __future__ import annotations

from core.engine import ReplyStatus
from tests.engine.conftest import World, build_world

GREETING = "Who's there?"


async def two_quick_messages(world: World) -> tuple:
    """m1, then m2 stored while nothing is answered yet (a webhook stores each on arrival); then both answered."""
    e1, e2 = world.event("First, my lord.", message_id="m-1"), world.event("And second.", message_id="m-2")
    i1, i2 = await world.app.engine.accept(e1), await world.app.engine.accept(e2)
    assert i1 is not None and i2 is not None and i1.id < i2.id
    world.tgi.script(reply="Reply one.")
    r1 = world.app.engine.handle(e1)
    assert await r1.collect() == "Reply one."
    world.tgi.script(reply="Reply two.")
    r2 = world.app.engine.handle(e2)
    assert await r2.collect() == "Reply two."
    assert (r1.user_message_id, r2.user_message_id) == (i1.id, i2.id)  # the delivery records keep their ids
    return r1, r2


async def history(world: World, reply) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in await world.app.store.messages.recent(reply.conversation, 20)]


def prompt(body: dict) -> list[tuple[str, str]]:
    """The conversation a request shows the model: every message after the system prompt."""
    return [(m["role"], m["content"]) for m in body["messages"][1:]]


async def test_two_quick_messages_on_first_contact_keep_the_conversation_order(store, cache, tgi) -> None:
    world = await build_world(store, cache, tgi, greeting=GREETING)
    r1, r2 = await two_quick_messages(world)
    assert r1.greeting == GREETING
    expected = [
        ("assistant", GREETING), ("user", "First, my lord."), ("assistant", "Reply one."),
        ("user", "And second."), ("assistant", "Reply two."),
    ]
    assert await history(world, r2) == expected
    second = prompt(tgi.bodies()[1])
    assert second[1:] == expected[:3] + [("user", "And second.")]  # after the greeting's opening line
    assert second[0][0] == "user"

    # Regenerate the newest reply: it answers m2, with the history before it in order.
    tgi.script(reply="Reply two, again.")
    again = world.app.engine.regenerate(r2.conversation, "Elena", r2.reply_message_id)
    assert await again.collect() == "Reply two, again." and again.status is ReplyStatus.ANSWERED
    assert prompt(tgi.bodies()[-1])[1:] == expected[:3] + [("user", "And second.")]
    assert (await history(world, r2))[-1] == ("assistant", "Reply two, again.")

    # /undo takes back the newest exchange only: m2 and its reply.
    assert await world.app.engine.delete_reply(r2.conversation, r2.reply_message_id)
    assert await history(world, r2) == expected[:3]
    await world.app.engine.drain()
    await world.app.model.close()


async def test_two_quick_messages_keep_the_conversation_order(world) -> None:
    r1, r2 = await two_quick_messages(world)
    expected = [("user", "First, my lord."), ("assistant", "Reply one."), ("user", "And second."), ("assistant", "Reply two.")]
    assert await history(world, r2) == expected
    assert prompt(world.tgi.bodies()[1]) == expected[:3]
    world.tgi.script(reply="Reply two, again.")
    again = world.app.engine.regenerate(r2.conversation, "Elena", r2.reply_message_id)
    assert await again.collect() == "Reply two, again." and again.status is ReplyStatus.ANSWERED
    assert await world.app.engine.delete_reply(r2.conversation, r2.reply_message_id)
    assert await history(world, r2) == expected[:2]
