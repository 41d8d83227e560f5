"""``personae bench --platform discord|telegram``: people in one busy room, measured as they see it.

The real adapter (discord.py's client, or python-telegram-bot's application, exactly as `personae run`
starts them) runs in this process against the local fake platform (``bots.fakes``), which enforces
the platform's rate limits and answers 429 past them. The model is the TGI-protocol double in its own
process, streaming a ~193-character reply in ~0.45 s. Simulated people write in one channel (or
group): "typing" people write again a random 20-40 s after their reply is complete; "saturating"
people write again at once. For each count of people it prints the time to the first visible text
and to the whole reply (p50/p95, from the person's message), the writes per answered turn, replies
per second, 429s received and messages dropped by the bounded wait.

On Discord the replies go through the channel's webhook under the character's name, as a default
deployment writes them (PERSONAE_DISCORD_WEBHOOKS=off: the bot's own messages); the fake counts a
webhook's sends and edits against the channel's send and edit buckets, as the client paces them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, AsyncIterator, Callable

import httpx
from pydantic import SecretStr

from bots.compose import model_client, open_cache, open_slots, open_store, wire
from bots.settings import Settings
from core.cards import new_card
from core.commands import Actor, Place
from core.errors import PersonaeError
from core.events import Platform

# 193 characters: the reply length of the earlier busy-room measurements (docs/performance.md).
REPLY = (
    "(leans on the counter) Twenty voices at once, and every one of them wants the same ale. "
    "Sit, friend, the night is long; tell me your name and I will tell you which of these rogues to trust."
)
STREAM_S = 0.45  # the model streams the reply in this long
CHUNKS = 15  # stream events per reply
GREETING = "(looks up) Welcome to the Drowned Lantern, {{user}}."
TYPING_PAUSE_S = (20.0, 40.0)

log = logging.getLogger(__name__)


@dataclass
class Turn:
    person: int
    sent_at: float
    first_at: float | None = None
    done_at: float | None = None
    dropped: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class RoomFigures:
    platform: str
    people: int
    mode: str  # "typing" or "saturation"
    seconds: float
    turns: int = 0  # messages people sent
    answered: int = 0  # whole replies shown
    dropped: int = 0  # settled unanswered by the bounded wait
    unfinished: int = 0  # still waiting when the run ended
    first_p50_s: float = 0.0
    first_p95_s: float = 0.0
    whole_p50_s: float = 0.0
    whole_p95_s: float = 0.0
    writes: int = 0  # sends and edits the platform accepted in the room
    writes_per_turn: float = 0.0
    replies_per_s: float = 0.0
    budget_replies_per_s: float = 0.0  # what the room's send budget allows at one write per reply
    rate_limited: int = 0  # 429s the platform answered
    most_writes_in_5s: int = 0
    written_by: str = ""  # Discord: "webhook" (the characters' names, as deployed by default) or "bot"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def streaming_model_server() -> AsyncIterator[str]:
    """The TGI-protocol double in its own process, streaming REPLY in CHUNKS events over STREAM_S."""
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bots.llm.tgi_double", "--port", str(port), "--reply", REPLY,
        "--chunks", str(CHUNKS), "--token-delay", str(STREAM_S / CHUNKS),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=1.0) as client:
            for _ in range(200):
                if proc.returncode is not None:
                    raise PersonaeError("the benchmark's model server exited")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/health")).status_code == 200:
                        break
                await asyncio.sleep(0.05)
            else:
                raise PersonaeError("the benchmark's model server did not start within 10 s")
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(ProcessLookupError):
                await asyncio.wait_for(proc.wait(), 5)


class Watch:
    """Follows the bot's writes in the fake to each person's turn: first text, whole reply."""

    def __init__(self) -> None:
        self.turns: dict[Any, Turn] = {}  # the person's message id -> turn
        self.of_message: dict[Any, Turn] = {}  # the bot's message id -> turn
        self.write_times: list[float] = []
        # Writes of messages not yet known to answer anyone (a webhook's message is no reply): claimed later.
        self.unclaimed: dict[Any, list[tuple[float, bool]]] = {}

    def sent(self, answered: Any, message_id: Any, finished: bool) -> None:
        now = time.monotonic()
        self.write_times.append(now)
        turn = self.turns.get(answered)
        if turn is None:
            self.unclaimed[message_id] = [(now, finished)]
            return
        self.of_message[message_id] = turn
        self._seen(turn, now, finished)

    def edited(self, message_id: Any, finished: bool) -> None:
        now = time.monotonic()
        self.write_times.append(now)
        turn = self.of_message.get(message_id)
        if turn is not None:
            self._seen(turn, now, finished)
        elif message_id in self.unclaimed:
            self.unclaimed[message_id].append((now, finished))

    def claim(self, answered: Any, message_id: Any) -> None:
        """``message_id`` was written as the answer to ``answered``: its writes so far count for that turn."""
        writes = self.unclaimed.pop(message_id, [])
        turn = self.turns.get(answered)
        if turn is None:
            return
        self.of_message[message_id] = turn
        for at, finished in writes:
            self._seen(turn, at, finished)

    @staticmethod
    def _seen(turn: Turn, now: float, finished: bool) -> None:
        if turn.first_at is None:
            turn.first_at = now
        if finished and turn.done_at is None:
            turn.done_at = now
            turn.done.set()


async def _people(
    say: Callable[[int, str], Any], watch: Watch, *, people: int, seconds: float, saturate: bool, patience_s: float, seed: int
) -> list[Turn]:
    """Each person writes, waits for the whole reply (or its drop), pauses (unless saturating), again."""
    end = time.monotonic() + seconds
    turns: list[Turn] = []

    async def person(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        if not saturate:
            await asyncio.sleep(rng.uniform(0, min(TYPING_PAUSE_S[0], seconds / 2)))  # people do not all start at once
        n = 0
        while time.monotonic() < end:
            n += 1
            turn = Turn(i, time.monotonic())
            turns.append(turn)
            await say(i, f"Person {i}, message {n}: what news tonight?", turn)  # type: ignore[call-arg]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(turn.done.wait(), timeout=max(0.1, min(patience_s, end - time.monotonic() + patience_s)))
            if not turn.done.is_set():
                return
            if not saturate:
                pause = rng.uniform(*TYPING_PAUSE_S)
                if time.monotonic() + pause >= end:
                    return
                await asyncio.sleep(pause)

    await asyncio.gather(*(person(i) for i in range(people)))
    return turns


def _figures(figures: RoomFigures, turns: list[Turn], watch: Watch, elapsed: float, refused: int) -> RoomFigures:
    firsts = [t.first_at - t.sent_at for t in turns if t.first_at is not None]
    wholes = [t.done_at - t.sent_at for t in turns if t.done_at is not None]
    figures.turns = len(turns)
    figures.answered = len(wholes)
    figures.dropped = sum(t.dropped for t in turns)
    figures.unfinished = sum(1 for t in turns if t.done_at is None and not t.dropped)
    figures.first_p50_s, figures.first_p95_s = _pct(firsts, 0.5), _pct(firsts, 0.95)
    figures.whole_p50_s, figures.whole_p95_s = _pct(wholes, 0.5), _pct(wholes, 0.95)
    figures.writes = len(watch.write_times)
    figures.writes_per_turn = figures.writes / figures.answered if figures.answered else 0.0
    figures.replies_per_s = figures.answered / elapsed if elapsed > 0 else 0.0
    figures.rate_limited = refused
    times = sorted(watch.write_times)
    figures.most_writes_in_5s = max((sum(1 for u in times[i:] if u < t + 5.0) for i, t in enumerate(times)), default=0)
    return figures


@contextlib.asynccontextmanager
async def _app(settings: Settings) -> AsyncIterator[Any]:
    store = await open_store(settings)
    cache = await open_cache(settings)
    slots = open_slots(settings, cache)
    model = model_client(settings, settings.llm_url, slots=slots)  # type: ignore[arg-type]
    app = wire(settings, store, cache, model)
    app.slots = slots
    try:
        yield app
    finally:
        await app.engine.drain()
        await model.close()
        await slots.close()
        await cache.close()
        await store.close()


async def _character(app: Any) -> tuple[int, str]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    character = await app.store.characters.add(
        new_card(name=name, world="a harbour tavern", traits=["warm"], mbti="ESFJ", style=["brief"], scene="A crowded taproom.", greeting=GREETING)
    )
    return character.id, name


def _watch_drops(app: Any, by_message: Callable[[str], Turn | None]) -> None:
    """The bounded wait drops a message through ``Engine.discard``: mark its turn."""
    discard = app.engine.discard

    async def recorded(event: Any) -> None:
        turn = by_message(event.message_id)
        if turn is not None:
            turn.dropped = True
            turn.done.set()
        await discard(event)

    app.engine.discard = recorded


async def discord_room(settings: Settings, url: str, *, people: int, seconds: float, saturate: bool, seed: int) -> RoomFigures:
    from bots.discord.client import PersonaeClient, run_discord
    from bots.fakes import discord as fd

    figures = RoomFigures("discord", people, "saturation" if saturate else "typing", seconds)
    figures.written_by = "webhook" if settings.discord_webhooks else "bot"
    async with fd.FakeDiscord() as fake:
        fake.limits = fd.RateLimits()
        channel = fd.ROLEPLAY
        for i in range(people):
            fake.add_person(910000000000000000 + i, f"person{i}")
        config = settings.model_copy(update=dict(
            discord_token=SecretStr(fd.TOKEN), discord_api_base=fake.api_base, discord_gateway_url=fake.gateway_url, discord_sync="off",
            telegram_token=None, llm_url=url,
        ))
        watch = Watch()

        def on_write(kind: str, message: dict[str, Any]) -> None:
            if message["channel_id"] != str(channel):
                return
            finished = bool(message.get("components"))  # the button rides on the write that completes the reply
            if kind == "send":
                ref = (message.get("message_reference") or {}).get("message_id")
                watch.sent(str(ref) if ref is not None else None, message["id"], finished)
            else:
                watch.edited(message["id"], finished)

        fake.watchers.append(on_write)
        async with _app(config) as app:
            character_id, name = await _character(app)
            _watch_drops(app, lambda mid: watch.turns.get(mid))
            try:
                admin = Actor(Platform.DISCORD, "bench", "Bench", is_admin=True)
                outcome = await app.commands.bind(admin, Place(Platform.DISCORD, str(fd.GUILD_ID), str(channel)), name, "all")
                if not outcome.ok:
                    raise PersonaeError(f"the benchmark could not bind its character: {outcome.message}")
                client = PersonaeClient(app, guild_ready_timeout=0.1)
                _claim_webhook_replies(client, watch)
                stop = asyncio.Event()
                running = asyncio.create_task(run_discord(app, client=client, stop=stop))
                await fake.wait_for(lambda: client.is_ready() or running.done(), timeout=20, what="the client to be ready")
                if running.done():
                    running.result()

                async def say(i: int, text: str, turn: Turn) -> None:
                    payload = fake.message_payload(channel, 910000000000000000 + i, text)
                    watch.turns[payload["id"]] = turn
                    turn.sent_at = time.monotonic()
                    fake.messages[int(payload["id"])] = payload
                    await fake.dispatch("MESSAGE_CREATE", payload)

                started = time.monotonic()
                turns = await _people(
                    say, watch, people=people, seconds=seconds, saturate=saturate,
                    patience_s=config.delivery_max_wait_s + 30, seed=seed,
                )
                elapsed = time.monotonic() - started
                stop.set()
                await asyncio.wait_for(running, 60)
            finally:
                await app.store.characters.delete(character_id)
        figures.budget_replies_per_s = fake.limits.per_channel / fake.limits.window_s
        return _figures(figures, turns, watch, elapsed, fake.limits.refused)


class _Claiming:
    """A Discord reply's place that tells the watch which person's message its first message answers:
    a webhook's message carries no reference to it, so the fake alone cannot say."""

    def __init__(self, place: Any, watch: Watch) -> None:
        self.place, self.watch = place, watch

    @property
    def webhook(self) -> bool:
        return bool(self.place.webhook)

    async def send(self, text: str, *, reference: Any = None, **fields: Any) -> Any:
        handle = await self.place.send(text, reference=reference, **fields)
        if reference is not None:
            self.watch.claim(str(reference.message_id), str(handle.id))
        return handle

    def handle(self, message_id: int) -> Any:
        return self.place.handle(message_id)


def _claim_webhook_replies(client: Any, watch: Watch) -> None:
    pick = client._place_for

    async def place_for(channel: Any, reply: Any) -> Any:
        return _Claiming(await pick(channel, reply), watch)

    client._place_for = place_for


async def telegram_room(settings: Settings, url: str, *, people: int, seconds: float, saturate: bool, seed: int) -> RoomFigures:
    from bots.fakes import telegram as ft
    from bots.telegram.application import Tuning, run_telegram

    figures = RoomFigures("telegram", people, "saturation" if saturate else "typing", seconds)
    async with ft.FakeTelegram() as tg:
        tg.limits = ft.FloodLimits()
        chat_id = -100777000
        group = tg.group(chat_id, "The Drowned Lantern")
        persons = [tg.user(5000 + i, f"Person{i}") for i in range(people)]
        config = settings.model_copy(update=dict(
            telegram_token=SecretStr(tg.token), telegram_api_base=tg.base_url, telegram_file_base=tg.file_base_url,
            discord_token=None, llm_url=url,
        ))
        watch = Watch()

        def on_write(method: str, message: dict[str, Any]) -> None:
            if message["chat"]["id"] != chat_id:
                return
            finished = bool(message.get("reply_markup"))
            if method == "sendMessage":
                ref = (message.get("reply_to_message") or {}).get("message_id")
                watch.sent(ref, message["message_id"], finished)
            else:
                watch.edited(message["message_id"], finished)

        tg.watchers.append(on_write)
        async with _app(config) as app:
            character_id, name = await _character(app)
            _watch_drops(app, lambda mid: watch.turns.get(int(mid)) if str(mid).isdigit() else None)
            try:
                owner = Actor(Platform.TELEGRAM, "bench", "Bench", is_owner=True)
                outcome = await app.commands.bind(owner, Place(Platform.TELEGRAM, str(chat_id), str(chat_id)), name, "all")
                if not outcome.ok:
                    raise PersonaeError(f"the benchmark could not bind its character: {outcome.message}")
                stop = asyncio.Event()
                running = asyncio.create_task(run_telegram(app, Tuning(poll_timeout=1), stop=stop))
                await tg.wait_for(lambda: tg.holding or running.done(), 20, "the bot to poll")
                if running.done():
                    running.result()

                async def say(i: int, text: str, turn: Turn) -> None:
                    message = tg.message(group, persons[i], text)
                    watch.turns[message["message_id"]] = turn
                    turn.sent_at = time.monotonic()
                    tg.push({"message": message})

                started = time.monotonic()
                turns = await _people(
                    say, watch, people=people, seconds=seconds, saturate=saturate,
                    patience_s=config.delivery_max_wait_s + 30, seed=seed,
                )
                elapsed = time.monotonic() - started
                stop.set()
                await asyncio.wait_for(running, 60)
            finally:
                await app.store.characters.delete(character_id)
        figures.budget_replies_per_s = tg.limits.windows["group"][0] / tg.limits.windows["group"][1]
        return _figures(figures, turns, watch, elapsed, tg.limits.refused)


def line(f: RoomFigures) -> str:
    return (
        f"{f.platform:8} {f.mode:10} {f.people:3d} people {f.seconds:5.0f} s | first text p50 {f.first_p50_s:5.2f} s p95 {f.first_p95_s:5.2f} s"
        f" | whole p50 {f.whole_p50_s:5.2f} s p95 {f.whole_p95_s:5.2f} s | {f.writes_per_turn:4.2f} writes/turn"
        f" | {f.replies_per_s:5.3f} replies/s (budget {f.budget_replies_per_s:5.3f}) | 429s {f.rate_limited}"
        f" | turns {f.turns}, answered {f.answered}, dropped {f.dropped}, unfinished {f.unfinished} | most writes in 5 s {f.most_writes_in_5s}"
        + (f" | written by the {f.written_by}" if f.written_by else "")
    )


async def run_room_bench(
    settings: Settings, *, platform: str, people: list[int], seconds: float, saturate: bool, as_json: bool, seed: int = 1
) -> list[RoomFigures]:
    if platform not in ("discord", "telegram"):
        raise PersonaeError(f"--platform must be discord or telegram, not {platform!r}")
    # Overrides that only make sense for a benchmark: no per-person flood limit in the way.
    settings = settings.model_copy(update=dict(rate_limit_messages=100_000, max_waiting_per_person=1000))
    logging.getLogger("discord").setLevel(logging.ERROR)
    run = discord_room if platform == "discord" else telegram_room
    results = []
    async with streaming_model_server() as url:
        for count in people:
            figures = await run(settings, url, people=count, seconds=seconds, saturate=saturate, seed=seed)
            print(line(figures), flush=True)
            results.append(figures)
    if as_json:
        print(json.dumps([asdict(f) for f in results]))
    return results
