"""A fault run: the real ``personae run`` as a child process against throwaway servers and local fakes.

One ``FaultRun`` owns, for one scenario: a throwaway Redis, a fresh database in a throwaway
PostgreSQL cluster, the fake Telegram Bot API, the fake Discord (REST and gateway), the TGI-protocol
double, and the ``python -m bots.cli run`` process itself (which it can kill, stop and restart).
People send messages that carry a marker (``m3x``); the model double answers each with a reply that
repeats the marker and ends with ``Farewell.``, so the chats can be read back afterwards: a message
is answered once when exactly one bot message in its chat holds its marker and the whole reply.

Everything is bounded: every wait has a deadline, and the run's ``async with`` block kills the bot
process and stops every server and temporary directory even when the scenario fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from bots.fakes import discord as fd
from bots.fakes.discord import FakeDiscord
from bots.fakes.telegram import FakeTelegram
from tests.tgi_server import TGIServer
from tests.throwaway import PersonaeProcess, ThrowawayPostgres, ThrowawayRedis

CHARACTER = "Hamlet"
END = "Farewell."
# About twenty words: at 0.1 s a word a reply streams for about two seconds, long enough to kill
# the process while it is half shown.
FILLER = ("Good morrow, friend; the night is long and the candles burn low, so sit with me a while "
          "and tell me what troubles you, for Elsinore is cold and")
_MARK = re.compile(r"\bm\d+x\b")

# Telegram groups (each bound to the character, one person talking in each) and their people.
TELEGRAM_GROUPS = [-1000000000 - i for i in range(1, 41)]
# People who chose the character in their private chat with the bot (a Telegram private chat's id is the person's).
TELEGRAM_PRIVATE = [900 + i for i in range(10)]
DISCORD_CHANNELS = [fd.ROLEPLAY, fd.LOBBY, fd.TAVERN]
DISCORD_PEOPLE = [fd.ALICE, fd.BOB]
# PERSONAE_REPLICA_LEASE_S for the bot (None: the product's default, as `make faults` reports it).
# The test suite shortens it, and with it a dead process's conversation locks (1.5 times it): what
# a restart waits out before it may answer what the dead one was answering.
REPLICA_LEASE_S: str | None = None


def model_reply(body: Mapping[str, Any]) -> str:
    """The double's answer: the marker of the newest user message, a sentence, and the end word."""
    messages = body.get("messages") or []
    last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "") or body.get("prompt", "")
    found = _MARK.findall(str(last))
    marker = found[-1] if found else "m?x"
    # The marker comes first, so that even the first half-shown piece of a reply names its message.
    return f"{marker} (bows) {FILLER} {END}"


@dataclass(slots=True)
class Sent:
    """One message a person sent."""

    marker: str
    platform: str  # "telegram" or "discord"
    chat: int  # Telegram chat id or Discord channel id
    person: int
    at: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class Row:
    """One line of the fault table."""

    fault: str
    sent: int
    once: int
    twice: int
    notice: int  # no reply, but the chat got a notice (an apology, "try again later")
    lost: int  # neither a reply nor a notice
    partial: int  # half-shown replies left in the chats
    recover_s: float | None  # from the fault to the last answer (None: not every message was answered)
    stored: str = ""  # "k/n": replies found in the database
    note: str = ""
    facts: dict[str, Any] = field(default_factory=dict)  # what a test checks beyond the counts

    def cells(self) -> list[str]:
        recover = "-" if self.recover_s is None else f"{self.recover_s:.1f} s"
        return [self.fault, str(self.sent), str(self.once), str(self.twice), str(self.notice), str(self.lost),
                str(self.partial), self.stored, recover, self.note]


HEADER = ["fault", "sent", "answered once", "answered twice", "notice only", "lost", "half-shown left", "replies stored", "recovered after", "note"]


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row.cells()) + " |" for row in rows]
    return "\n".join(lines)


async def migrated_template(postgres: ThrowawayPostgres) -> str:
    """A database on ``postgres`` migrated by ``personae db upgrade``, made once per cluster; each run's
    database is a copy of it (CREATE DATABASE ... TEMPLATE), which spares a child process per run."""
    name: str | None = getattr(postgres, "fault_template", None)
    if name is None:
        name = f"fault_template_{os.getpid()}"
        url = await asyncio.to_thread(postgres.create_database, name)
        upgrade = PersonaeProcess({"PERSONAE_DATABASE_URL": url}, "db", "upgrade")
        try:
            await upgrade.start()
            status = await upgrade.wait(120)
            if status != 0:
                raise RuntimeError(f"personae db upgrade failed ({status}): {upgrade.tail(2000)}")
        finally:
            await upgrade.close()
        postgres.fault_template = name  # type: ignore[attr-defined]
    return name


class FaultRun:
    """Servers, fakes and the bot process for one scenario. Use as ``async with FaultRun(...) as run``."""

    def __init__(
        self,
        name: str,
        postgres: ThrowawayPostgres,
        *,
        telegram: bool = True,
        discord: bool = False,
        token_delay: float = 0.1,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.postgres = postgres
        self.use_telegram = telegram
        self.use_discord = discord
        self.token_delay = token_delay
        self.extra_env = dict(env or {})
        self.sent: list[Sent] = []
        # When a bot message holding a marker counts as the whole reply (a scenario may change it).
        self.complete: Callable[[str], bool] = lambda text: END in text
        self._stack = contextlib.AsyncExitStack()
        self._markers = 0
        self.tg: FakeTelegram | None = None
        self.dc: FakeDiscord | None = None
        self.tgi: TGIServer
        self.redis: ThrowawayRedis
        self.bot: PersonaeProcess
        self.database_url = ""

    # -- setting up and tearing down ---------------------------------------------------------

    async def __aenter__(self) -> "FaultRun":
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def _start(self) -> None:
        self.tgi = await self._stack.enter_async_context(TGIServer(reply=model_reply, token_delay=self.token_delay))
        if self.use_telegram:
            self.tg = await self._stack.enter_async_context(FakeTelegram())
        if self.use_discord:
            self.dc = await self._stack.enter_async_context(FakeDiscord())
        self.redis = await asyncio.to_thread(ThrowawayRedis().start)
        self._stack.callback(self.redis.close)
        database = f"fault_{self.name}_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
        template = await migrated_template(self.postgres)
        self.database_url = await asyncio.to_thread(self.postgres.create_database, database, template)
        env = dict(
            PERSONAE_DATABASE_URL=self.database_url,
            PERSONAE_REDIS_URL=self.redis.url,
            PERSONAE_LLM_URL=self.tgi.base_url,
            PERSONAE_APPRAISER="lexicon",  # appraisals would be model requests of their own
        )
        if REPLICA_LEASE_S is not None:
            env.update(PERSONAE_REPLICA_LEASE_S=REPLICA_LEASE_S)
        if self.tg is not None:
            env.update(PERSONAE_TELEGRAM_TOKEN=self.tg.token, PERSONAE_TELEGRAM_API_BASE=self.tg.base_url,
                       PERSONAE_TELEGRAM_FILE_BASE=self.tg.file_base_url)
        if self.dc is not None:
            env.update(PERSONAE_DISCORD_TOKEN=self.dc.token, PERSONAE_DISCORD_API_BASE=self.dc.api_base,
                       PERSONAE_DISCORD_GATEWAY_URL=self.dc.gateway_url, PERSONAE_DISCORD_SYNC="off",
                       # The bot's own messages, which the scenarios read; webhooks are tests/discord's.
                       PERSONAE_DISCORD_WEBHOOKS="off")
        env.update(self.extra_env)
        self.env = env
        await self._migrate_and_bind()
        self.bot = PersonaeProcess(env, verbose=False)
        self._stack.push_async_callback(self.bot.close)
        await self.start_bot()

    async def _migrate_and_bind(self) -> None:
        from core.cards import new_card
        from core.events import Trigger
        from core.state import Binding
        from storage.database import open_store

        store = await open_store(self.database_url)
        try:
            # No greeting, so that every bot message without a marker is a notice (an apology or an error).
            character = await store.characters.add(new_card(
                name=CHARACTER, world="8th Century Danish Royalty", traits=["extreme", "strong", "decisive"],
                mbti="ENFJ", style=["indecisive", "decisive", "sentimental"], scene="Elsinore at night.", greeting="",
            ))
            for chat in TELEGRAM_GROUPS if self.tg is not None else []:
                self.tg.group(chat, f"Group {chat}")
                await store.bindings.put(Binding("telegram", str(chat), str(chat), character.id, Trigger.ALL))
            for person in TELEGRAM_PRIVATE if self.tg is not None else []:
                self.tg.private(self.tg.user(person, f"Person{person}"))
                await store.bindings.put(Binding("telegram", str(person), str(person), character.id, Trigger.ALL, None, True))
            for channel in DISCORD_CHANNELS if self.dc is not None else []:
                await store.bindings.put(Binding("discord", str(fd.GUILD_ID), str(channel), character.id, Trigger.ALL))
        finally:
            await store.close()

    # -- the bot process ---------------------------------------------------------------------

    async def start_bot(self, timeout: float = 60.0) -> None:
        """Start ``personae run`` and wait until every adapter is connected."""
        identified = len(self.dc.identifies) if self.dc is not None else 0
        polls = self.tg.polls if self.tg is not None else 0
        await self.bot.start()

        def ready() -> bool:
            if not self.bot.alive:
                raise RuntimeError(f"personae run exited ({self.bot.returncode}) while starting:\n{self.bot.tail()}")
            if self.dc is not None and not (len(self.dc.identifies) > identified and self.dc._sockets):
                return False
            return self.tg is None or self.tg.polls > polls

        if not await self.until(ready, timeout, "personae run to connect"):
            raise RuntimeError(f"personae run did not connect in {timeout:.0f} s:\n{self.bot.tail()}")

    async def exit_status(self, timeout: float) -> int | None:
        """The bot's exit status, or None if it still runs after ``timeout`` seconds."""
        try:
            return await self.bot.wait(timeout)
        except TimeoutError:
            return None

    async def restart_bot(self) -> float:
        """Start the bot again after it died or was stopped; returns when it is connected (the time taken)."""
        if self.dc is not None:
            await self.until(lambda: not self.dc._sockets, 10, "the dead bot's gateway connection to close")
        began = time.monotonic()
        await self.start_bot()
        return time.monotonic() - began

    # -- people talking ------------------------------------------------------------------------

    def _marker(self) -> str:
        self._markers += 1
        return f"m{self._markers}x"

    def say_telegram(self, chat: int, person: int, text: str = "Hello there, prince. {m}") -> Sent:
        """Person ``person`` writes in Telegram group ``chat``; ``{m}`` in ``text`` becomes the marker."""
        assert self.tg is not None
        marker = self._marker()
        self.tg.say(self.tg.chats[chat], self.tg.user(person, f"Person{person}"), text.replace("{m}", marker))
        sent = Sent(marker, "telegram", chat, person)
        self.sent.append(sent)
        return sent

    def say_privately(self, person: int, text: str = "Hello there, prince. {m}") -> Sent:
        """Person ``person`` (one of TELEGRAM_PRIVATE) writes to the bot in their private Telegram chat."""
        return self.say_telegram(person, person, text)

    async def say_discord(self, channel: int, person: int, text: str = "Hello there, prince. {m}") -> Sent:
        assert self.dc is not None
        marker = self._marker()
        await self.dc.say(channel, person, text.replace("{m}", marker))
        sent = Sent(marker, "discord", channel, person)
        self.sent.append(sent)
        return sent

    # -- reading the chats back ----------------------------------------------------------------

    def bot_texts(self, platform: str, chat: int) -> list[str]:
        if platform == "telegram":
            assert self.tg is not None
            return [m.get("text", "") for m in self.tg.bot_messages(chat)]
        assert self.dc is not None
        return [m.get("content", "") for m in self.dc.bot_messages(chat)]

    def replies_to(self, sent: Sent) -> tuple[int, int]:
        """(complete replies, half-shown replies) carrying ``sent``'s marker in its chat."""
        complete = partial = 0
        pattern = re.compile(rf"\b{re.escape(sent.marker)}\b")
        for text in self.bot_texts(sent.platform, sent.chat):
            if pattern.search(text):
                if self.complete(text):
                    complete += 1
                else:
                    partial += 1
        return complete, partial

    def notices(self, platform: str, chat: int) -> list[str]:
        """The bot's messages in a chat that answer no marker (apologies, errors, limits)."""
        return [t for t in self.bot_texts(platform, chat) if not _MARK.search(t)]

    def answered(self, sent: list[Sent] | None = None) -> bool:
        return all(self.replies_to(s)[0] >= 1 for s in (self.sent if sent is None else sent))

    def reply_started(self, sent: Sent) -> bool:
        return sum(self.replies_to(sent)) >= 1

    async def until(self, condition: Callable[[], Any], timeout: float, what: str) -> bool:
        """Poll ``condition`` until true; False after ``timeout`` seconds (never raises for time)."""
        deadline = time.monotonic() + timeout
        while True:
            if condition():
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)

    async def settle(self, quiet: float = 1.5, timeout: float = 30.0) -> None:
        """Wait until the bot has made no platform call for ``quiet`` seconds (late duplicates show up)."""
        def last_call() -> float:
            times = [c.at for c in (self.tg.calls if self.tg else []) if c.method != "getUpdates"]
            times += [c.at for c in (self.dc.calls if self.dc else [])]
            return max(times, default=0.0)

        await self.until(lambda: time.monotonic() - last_call() >= quiet, timeout, "the bot to go quiet")

    def row(self, fault: str, fault_at: float, sent: list[Sent] | None = None, note: str = "") -> Row:
        """Count what happened to ``sent`` (default: every message sent in this run)."""
        sent = self.sent if sent is None else sent
        once = twice = notice = lost = partial = 0
        by_chat: dict[tuple[str, int], list[Sent]] = {}
        for s in sent:
            by_chat.setdefault((s.platform, s.chat), []).append(s)
        for (platform, chat), items in by_chat.items():
            notices = len(self.notices(platform, chat))
            for s in items:
                complete, half = self.replies_to(s)
                partial += half
                if complete == 1:
                    once += 1
                elif complete > 1:
                    twice += 1
                elif notices > 0:
                    notice += 1
                    notices -= 1
                else:
                    lost += 1
        recover = None
        if once + twice == len(sent) and self.answer_times(sent):
            recover = max(0.0, max(self.answer_times(sent)) - fault_at)
        return Row(fault, len(sent), once, twice, notice, lost, partial, recover, note=note)

    async def stored(self, sent: list[Sent] | None = None, wait: float = 15.0) -> str:
        """How many of ``sent`` have their reply stored in the database, as "k/n" ("?" if it cannot be read).

        A reply held back during an outage may reach the database a little after it was shown: this
        waits up to ``wait`` seconds for all of them.
        """
        sent = self.sent if sent is None else sent
        database = self.database_url.rsplit("/", 1)[-1]
        deadline = time.monotonic() + wait
        while True:
            try:
                rows = await asyncio.to_thread(self.postgres.psql, "SELECT content FROM messages WHERE role = 'assistant'", database)
            except Exception:  # noqa: BLE001 - the figure is informative; the schema may have moved
                rows = None
            found = set(_MARK.findall(rows or ""))
            count = sum(1 for s in sent if s.marker in found)
            if count == len(sent) or time.monotonic() > deadline:
                return "?" if rows is None else f"{count}/{len(sent)}"
            await asyncio.sleep(0.5)

    def answer_times(self, sent: list[Sent]) -> list[float]:
        """When each message's complete reply was last written (sent or edited), as far as the fakes recorded."""
        times = []
        for s in sent:
            pattern = re.compile(rf"\b{re.escape(s.marker)}\b")
            if s.platform == "telegram" and self.tg is not None:
                hits = [c.at for c in self.tg.calls if c.params.get("chat_id") == s.chat
                        and pattern.search(str(c.params.get("text", ""))) and self.complete(str(c.params.get("text", "")))]
            elif self.dc is not None:
                hits = [c.at for c in self.dc.calls if isinstance(c.body, dict)
                        and pattern.search(str(c.body.get("content", ""))) and self.complete(str(c.body.get("content", "")))]
            else:
                hits = []
            if hits:
                times.append(min(hits))
        return times


async def kill_mid_reply(run: FaultRun, sig: int, sent: list[Sent], timeout: float = 30.0) -> float:
    """Wait until a reply to one of ``sent`` is half shown, then send ``sig`` to the bot; returns when."""
    await run.until(lambda: any(sum(run.replies_to(s)) and not run.replies_to(s)[0] for s in sent) or run.answered(sent),
                    timeout, "a reply to be half shown")
    at = time.monotonic()
    run.bot.signal(sig)
    return at


__all__ = ["FaultRun", "Row", "Sent", "HEADER", "markdown_table", "kill_mid_reply"]
