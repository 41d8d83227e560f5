"""Several ``personae run`` processes on one PostgreSQL database and one Redis (issue 13).

Each test runs real processes (throwaway Redis and PostgreSQL, the Discord and Telegram fakes, the
TGI-protocol double, as in tests/faults), kills one of them with SIGKILL while it is half-way
through a reply, and checks that every message was answered exactly once, each person's replies
came in the order they wrote, and the dead process's turns were finished by another one.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import time
from typing import Iterator

import aiohttp
import pytest

from bots.telegram.intake import SECRET_HEADER
from tests.conftest import require_service
from bots.fakes import discord as fd
from tests.faults.harness import TELEGRAM_GROUPS, FaultRun, Sent
from tests.throwaway import PersonaeProcess, ThrowawayError, ThrowawayPostgres, free_port

SECRET = "replica-secret"
LEASE_S = "3"  # short leases (and conversation locks of 4.5 s), so that takeovers come within seconds


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayPostgres]:
    if shutil.which("redis-server") is None and not os.path.exists("/usr/bin/redis-server"):
        require_service("redis-server (for a throwaway Redis)", ThrowawayError("redis-server is not installed"))
    try:
        pg = ThrowawayPostgres().start()
    except ThrowawayError as exc:
        require_service("a throwaway PostgreSQL (initdb, pg_ctl)", exc)
    try:
        yield pg
    finally:
        pg.close()


class Replicas(FaultRun):
    """A FaultRun whose bot is several ``personae run`` processes, each with settings of its own."""

    def __init__(self, name: str, pg: ThrowawayPostgres, replicas: dict[str, dict[str, str]], **kw) -> None:
        super().__init__(name, pg, env={"PERSONAE_REPLICA_LEASE_S": LEASE_S}, **kw)
        self.settings = replicas
        self.procs: dict[str, PersonaeProcess] = {}
        self.webhooks: list[int] = []  # ports of the replicas taking Telegram webhooks, in turn
        self._next_webhook = 0

    async def _migrate_and_bind(self) -> None:
        await super()._migrate_and_bind()
        if self.dc is not None:
            self.dc.add_annex()  # a second guild, on the other shard of two
            await bind_annex(self)

    async def start_bot(self, timeout: float = 90.0) -> None:
        for name, extra in self.settings.items():
            proc = PersonaeProcess({**self.env, "PERSONAE_REPLICA_ID": name, **extra})
            self._stack.push_async_callback(proc.close)
            self.procs[name] = proc
            if "PERSONAE_TELEGRAM_WEBHOOK_PORT" in extra:
                self.webhooks.append(int(extra["PERSONAE_TELEGRAM_WEBHOOK_PORT"]))
            await proc.start()
        shards = sorted(
            (int(e["PERSONAE_DISCORD_SHARDS"]), int(e["PERSONAE_DISCORD_SHARD_COUNT"]))
            for e in self.settings.values() if e.get("PERSONAE_DISCORD_SHARDS")
        )

        def ready() -> bool:
            for name, proc in self.procs.items():
                if not proc.alive:
                    raise RuntimeError(f"{name} exited ({proc.returncode}):\n{proc.tail()}")
            if self.dc is not None and sorted(s for s in self.dc.connected_shards() if s) != shards:
                return False
            if self.tg is not None and self.webhooks:
                return len(self.tg.calls_of("setWebhook")) >= len(self.webhooks)
            return self.tg is None or self.tg.polls > 0

        if not await self.until(ready, timeout, "every replica to connect"):
            raise RuntimeError("the replicas did not connect:\n" + "\n".join(p.tail(1500) for p in self.procs.values()))

    def log(self) -> str:
        return "\n".join(f"--- {name} ---\n{proc.tail(2500)}" for name, proc in self.procs.items())

    async def post_telegram(self, chat: int, person: int, text: str = "Hello there, prince. {m}") -> Sent:
        """Person ``person`` writes in group ``chat``; the update goes to the webhook replicas in turn
        (a load balancer), to the next one when a replica does not take it (as Telegram retries)."""
        assert self.tg is not None
        marker = self._marker()
        message = self.tg.message(self.tg.chats[chat], self.tg.user(person, f"Person{person}"), text.replace("{m}", marker))
        update = self.tg.update({"message": message})
        sent = Sent(marker, "telegram", chat, person)
        self.sent.append(sent)
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as http:
            while True:
                port = self.webhooks[self._next_webhook % len(self.webhooks)]
                self._next_webhook += 1
                try:
                    async with http.post(f"http://127.0.0.1:{port}/telegram", json=update,
                                         headers={SECRET_HEADER: SECRET}, timeout=aiohttp.ClientTimeout(total=10)) as answer:
                        if answer.status == 200:
                            return sent
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"no replica took update {update['update_id']}")

    def calls_in(self, platform: str, chat: int) -> list[str]:
        """The bot's sends and edits in ``chat`` (when, what, which message), to read a failure by."""
        if platform != "telegram" or self.tg is None:
            return []
        return [f"{c.at:.2f} {c.method} {c.params.get('message_id', '')} {str(c.params.get('text', ''))[:12]!r}"
                for c in self.tg.calls if c.params.get("chat_id") == chat and c.method in ("sendMessage", "editMessageText")]

    def in_order(self) -> list[str]:
        """Chats whose complete replies are not in the order their messages were sent (one person per chat here)."""
        wrong = []
        for platform, chat in {(s.platform, s.chat) for s in self.sent}:
            expected = [s.marker for s in self.sent if (s.platform, s.chat) == (platform, chat)]
            # Complete replies only: a piece shown by the killed process in the instant before it could
            # record where (see docs/reliability.md) stays half-shown; the row counts those apart.
            seen = [m for text in self.bot_texts(platform, chat) if self.complete(text) for m in re.findall(r"\bm\d+x\b", text)]
            if seen != expected:
                wrong.append(f"{platform} {chat}: replies {seen}, sent {expected}; {self.calls_in(platform, chat)}")
        return wrong


def webhook(port: int) -> dict[str, str]:
    return {
        "PERSONAE_TELEGRAM_WEBHOOK_URL": f"http://127.0.0.1:{port}/telegram",
        "PERSONAE_TELEGRAM_WEBHOOK_SECRET": SECRET,
        "PERSONAE_TELEGRAM_WEBHOOK_LISTEN": "127.0.0.1",
        "PERSONAE_TELEGRAM_WEBHOOK_PORT": str(port),
    }


async def check_answered_once_in_order(run: Replicas, fault_at: float) -> None:
    await run.until(run.answered, 60, "every message to be answered")
    await run.settle(quiet=3.0, timeout=30)
    row = run.row("replicas", fault_at)
    row.stored = await run.stored(wait=15.0)
    facts = f"{row}\n{run.log()}"
    assert (row.lost, row.twice, row.notice) == (0, 0, 0), facts
    assert row.once == row.sent > 0, facts
    assert row.stored == f"{row.sent}/{row.sent}", facts
    assert run.in_order() == [], facts


async def test_three_processes_discord_shards_and_telegram_webhooks_one_killed_mid_reply(cluster) -> None:
    w2, w3 = free_port(), free_port()
    discord = {"PERSONAE_DISCORD_SHARD_COUNT": "2"}
    no_telegram = {"PERSONAE_TELEGRAM_TOKEN": ""}
    no_discord = {"PERSONAE_DISCORD_TOKEN": ""}
    replicas = {
        "r1": {**discord, "PERSONAE_DISCORD_SHARDS": "0", **no_telegram},  # Discord shard 0 (the annex guild)
        "r2": {**discord, "PERSONAE_DISCORD_SHARDS": "1", **webhook(w2)},  # shard 1 (the main guild) and webhooks
        "r3": {**no_discord, **webhook(w3)},  # webhooks
    }
    async with Replicas("replicas", cluster, replicas, telegram=True, discord=True) as run:
        assert run.dc is not None and run.tg is not None
        groups = TELEGRAM_GROUPS[:3]
        # Three groups, two webhook replicas in turn: each person's messages alternate between them.
        for round_ in range(2):
            for i, chat in enumerate(groups):
                await run.post_telegram(chat, 100 + i)
        for _ in range(2):
            await run.say_discord(fd.ROLEPLAY, fd.ALICE)
            await run.say_discord(fd.ANNEX, fd.BOB)
        # r2 runs shard 1: the replies in ROLEPLAY are its turns. Kill it while one is half shown.
        roleplay = [s for s in run.sent if s.chat == fd.ROLEPLAY]
        await run.until(lambda: any(run.replies_to(s)[1] for s in roleplay) or all(run.replies_to(s)[0] for s in roleplay),
                        60, "a reply in ROLEPLAY to be half shown")
        half_shown = any(run.replies_to(s)[1] for s in roleplay)
        fault_at = time.monotonic()
        run.procs["r2"].signal(signal.SIGKILL)
        await run.procs["r2"].wait(10)
        assert half_shown, "r2 finished every reply before it could be killed: " + run.log()
        await check_answered_once_in_order(run, fault_at)
        # r2's Discord turns were finished by r1 (the one other replica on Discord).
        assert "left pending" in run.procs["r1"].log, run.log()


async def bind_annex(run: Replicas) -> None:
    """Bind the annex guild's channel to the character (the fake's second guild, on shard 0)."""
    from core.events import Trigger
    from core.state import Binding
    from storage.database import open_store

    store = await open_store(run.database_url)
    try:
        character = await store.characters.get_by_name("Hamlet")
        assert character is not None
        await store.bindings.put(Binding("discord", str(fd.ANNEX_GUILD), str(fd.ANNEX), character.id, Trigger.ALL))
    finally:
        await store.close()


async def test_two_polling_processes_elect_one_poller_and_the_standby_takes_over_when_it_is_killed(cluster) -> None:
    replicas = {"p1": {}, "p2": {}}
    async with Replicas("polling", cluster, replicas, telegram=True, discord=False) as run:
        assert run.tg is not None
        groups = TELEGRAM_GROUPS[:2]
        await run.until(lambda: any("now polls Telegram" in p.log for p in run.procs.values()), 30, "a poller to be elected")
        leader = next(name for name, p in run.procs.items() if "now polls Telegram" in p.log)
        standby = next(name for name in run.procs if name != leader)
        for round_ in range(2):
            for i, chat in enumerate(groups):
                run.say_telegram(chat, 100 + i)
        await run.until(lambda: any(run.replies_to(s)[1] for s in run.sent) or run.answered(), 60, "a reply to be half shown")
        half_shown = any(run.replies_to(s)[1] for s in run.sent)
        fault_at = time.monotonic()
        run.procs[leader].signal(signal.SIGKILL)
        await run.procs[leader].wait(10)
        assert half_shown, "the poller finished every reply before it could be killed: " + run.log()
        await run.until(lambda: "now polls Telegram" in run.procs[standby].log, 30, "the standby to take over polling")
        for i, chat in enumerate(groups):
            run.say_telegram(chat, 100 + i)
        await check_answered_once_in_order(run, fault_at)
        assert "now polls Telegram" in run.procs[standby].log, run.log()
        assert run.tg.conflicts == 0, run.log()
