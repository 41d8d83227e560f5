"""A Discord channel as a scene: two people and two characters; a name-addressed message is answered by
that character only; a reply to a character's message goes to that character (found from the
stored replies' message ids); the prompt holds the channel's lines, no other channel's."""

from __future__ import annotations

from core.cards import new_card
from core.commands import Actor, Place
from core.engine import ReplyStatus
from core.events import Platform
from tests.discord.conftest import CHARACTER, GUILD_ID
from bots.fakes.discord import ALICE, BOB, ROLEPLAY, TAVERN

OPHELIA = "Ophelia"


async def add_ophelia(bot) -> None:
    await bot.app.store.characters.add(new_card(
        name=OPHELIA, world="8th Century Danish Royalty", traits=["gentle"], mbti="INFP", style=["soft"], scene="Elsinore.",
    ))
    admin = Actor(Platform.DISCORD, "setup", "Setup", is_admin=True)
    outcome = await bot.app.commands.scene_command(admin, Place(Platform.DISCORD, str(GUILD_ID), str(ROLEPLAY)), f"add {OPHELIA}")
    assert outcome.ok, outcome.message


def chat_bodies(bot) -> list[dict]:
    return [b for b in bot.tgi.bodies() if b.get("stream")]


async def test_two_people_two_characters_named_and_replied_to(bot) -> None:
    await bot.bind(ROLEPLAY)
    await bot.bind(TAVERN)
    await add_ophelia(bot)
    bot.tgi.script(reply="Elsewhere, a secret.")
    await bot.say(TAVERN, ALICE, "Tavern gossip nobody in the roleplay channel may hear.")

    bot.tgi.script(reply="Follow the ghost.")
    _, first = await bot.say(ROLEPLAY, ALICE, f"{CHARACTER}, I saw a ghost!")
    assert first.status is ReplyStatus.ANSWERED and first.character.name == CHARACTER
    bot.tgi.script(reply="Good night, sweet lord.")
    before = len(chat_bodies(bot))
    _, second = await bot.say(ROLEPLAY, BOB, f"{OPHELIA}, good evening.")
    assert second.character.name == OPHELIA
    assert len(chat_bodies(bot)) == before + 1  # one character answered, the other stayed silent

    # Bob replies to Hamlet's message, naming no one: Hamlet answers, seeing the scene.
    hamlet_message = next(m for m in bot.fake.bot_messages(ROLEPLAY) if m["content"] == "Follow the ghost.")
    bot.tgi.script(reply="I bade her follow it.")
    _, third = await bot.say(ROLEPLAY, BOB, "What did you tell her?", reply_to=int(hamlet_message["id"]))
    assert third.status is ReplyStatus.ANSWERED and third.character.name == CHARACTER
    messages = chat_bodies(bot)[-1]["messages"]
    assert "reply with a brief sentence to Bob." in messages[0]["content"]
    last = messages[-1]["content"]
    assert "I saw a ghost!" in last and f"{CHARACTER} (to Alice): Follow the ghost." in last
    assert f"{OPHELIA} (to Bob): Good night, sweet lord." in last
    assert last.endswith("Bob: What did you tell her?")
    assert not any("Tavern gossip" in m["content"] or "secret" in m["content"] for m in messages)
