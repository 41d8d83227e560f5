"""`personae prompt --channel` prints what the model will get for the next message in a stored
channel: the same messages the engine then sends (checked against the recording TGI double)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bots.cli import app
from bots.compose import wire
from bots.llm.client import ModelClient
from core.cards import new_card
from core.commands import Actor, Place
from core.events import ChatEvent, Platform
from storage import migrate
from storage.cache_memory import MemoryCache
from storage.database import open_store
from tests.engine.conftest import make_settings
from tests.tgi_server import TGIServer

runner = CliRunner()
CHANNEL = "chan-scene"


@pytest.fixture
async def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'personae.db'}"
    await migrate.upgrade(url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PERSONAE_DATABASE_URL", url)
    for name in ("PERSONAE_REDIS_URL", "PERSONAE_LLM_URL", "PERSONAE_PROMPT_LAYOUT", "PERSONAE_SCENE_SHARE"):
        monkeypatch.delenv(name, raising=False)
    return url


async def say(url: str, who: tuple[str, str], text: str, *, channel: str = CHANNEL, private: bool = False) -> list[dict]:
    """One message through a whole app on the database; the messages the model server got."""
    store = await open_store(url)
    async with TGIServer() as tgi:
        tgi.script(reply=f"(to {who[1]}) Indeed.")
        engine_app = wire(make_settings(database_url=url, llm_url=tgi.base_url, appraiser="none"), store, MemoryCache(), ModelClient(tgi.base_url, timeout_s=5.0, concurrency=2, retries=0))
        event = ChatEvent(Platform.DISCORD, channel, channel, who[0], who[1], f"m-{len(text)}-{text[:5]}", text, private=private)
        await engine_app.engine.handle(event).collect()
        await engine_app.engine.drain()
        await engine_app.model.close()
        bodies = [b for b in tgi.bodies() if b.get("stream")]
    await store.close()
    return bodies[-1]["messages"] if bodies else []


async def setup(url: str) -> None:
    store = await open_store(url)
    app_ = wire(make_settings(database_url=url, appraiser="none"), store, MemoryCache(), ModelClient("http://127.0.0.1:1", timeout_s=1.0, concurrency=2, retries=0))
    for name in ("Hamlet", "Ophelia"):
        await store.characters.add(new_card(name=name, world="Denmark", traits=["proud"], mbti="INTJ", style=["terse"], scene="Elsinore."))
    admin = Actor(Platform.DISCORD, "admin", "Admin", is_admin=True)
    place = Place(Platform.DISCORD, CHANNEL, CHANNEL)
    assert (await app_.commands.bind(admin, place, "Hamlet", "all")).ok
    assert (await app_.commands.scene_command(admin, place, "add Ophelia")).ok
    assert (await app_.commands.use(Actor(Platform.DISCORD, "u-bob", "Bob"), Place(Platform.DISCORD, "dm", "dm", private=True), "Hamlet")).ok
    await app_.model.close()
    await store.close()


async def test_the_printed_messages_are_what_the_engine_sends_next(db: str) -> None:
    await setup(db)
    await say(db, ("u-elena", "Elena"), "Hamlet, I saw a ghost {on} the walls!")
    await say(db, ("u-bob", "Bob"), "Ophelia, good evening.")
    await say(db, ("u-bob", "Bob"), "A private word: I took the crown.", channel="dm", private=True)
    printed = await asyncio.to_thread(
        runner.invoke, app, ["prompt", "--channel", f"discord:{CHANNEL}", "--user", "Bob", "--message", "Hamlet, what did you tell Elena?", "--json"]
    )
    assert printed.exit_code == 0, printed.output
    shown = json.loads(printed.stdout)["messages"]
    sent = await say(db, ("u-bob", "Bob"), "Hamlet, what did you tell Elena?")
    assert shown == sent
    assert "Elena: Hamlet, I saw a ghost {on} the walls!" in shown[-1]["content"]
    assert not any("crown" in m["content"] for m in shown)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--channel", "irc:1", "--user", "Bob", "--message", "hi"], "--channel must be PLATFORM:CHANNEL"),
        (["--channel", "discord:nowhere", "--user", "Bob", "--message", "hi"],
         f"no character is bound to discord:nowhere (see /bind, /scene add); channels with characters there: discord:{CHANNEL}"),
        (["--channel", "telegram:-100", "--user", "Bob", "--message", "hi"], "no telegram channel has one"),
        (["--channel", "console:x", "--user", "Bob", "--message", "hi"], "console:console-NAME once `personae chat --user NAME`"),
        (["--channel", f"discord:{CHANNEL}", "--user", "Bob"], "--channel needs the next message"),
        (["--channel", f"discord:{CHANNEL}", "--user", "Bob", "--message", "hi", "--character", "Nobody"],
         "no character called 'Nobody' plays in this channel (here: Hamlet, Ophelia)"),
    ],
)
async def test_bad_channel_options_give_one_clear_line(db: str, args: list[str], says: str) -> None:
    await setup(db)
    result = await asyncio.to_thread(runner.invoke, app, ["prompt", *args])
    assert result.exit_code == 1
    assert says in result.output and "Traceback" not in result.output
