"""The fault scenarios: each runs ``personae run`` through one fault and returns its row of the table.

Each scenario is small (a handful of messages) so that the whole set runs in a few minutes on two
cores; every wait is bounded, so a product that does not recover makes a row with lost messages,
never a hung run. What each row is meant to show is in issue 11 and docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Awaitable, Callable

from bots.fakes import discord as fd
from tests.faults.harness import DISCORD_CHANNELS, TELEGRAM_GROUPS, TELEGRAM_PRIVATE, FaultRun, Row, Sent, kill_mid_reply
from tests.throwaway import ThrowawayPostgres

Scenario = Callable[[ThrowawayPostgres], Awaitable[Row]]
RECOVER_S = 45.0  # how long a scenario waits for the answers after the fault (recovery may wait out a lock lease)


async def _finish(run: FaultRun, fault: str, fault_at: float, sent: list[Sent] | None = None, note: str = "",
                  wait: float = RECOVER_S, done: Callable[[], bool] | None = None, **facts) -> Row:
    """Wait (bounded) for every answer (or ``done``) and for the bot to go quiet, then count."""
    sent = run.sent if sent is None else sent
    await run.until(done or (lambda: run.answered(sent)), wait, "every message to be answered")
    await run.settle()
    stored = await run.stored(sent, wait=15.0 if run.answered(sent) else 1.0)
    row = run.row(fault, fault_at, sent, note=note)
    row.stored = stored
    row.facts.update(facts, alive=run.bot.alive, log=run.bot.tail(2500))
    return row


async def _killed(pg: ThrowawayPostgres, fault: str, *, sig: int, telegram: bool, discord: bool) -> Row:
    """Kill the bot with ``sig`` while replies are half shown, start it again, count the answers."""
    async with FaultRun(fault.split()[0].lower(), pg, telegram=telegram, discord=discord) as run:
        if telegram and not discord:
            for i, chat in enumerate(TELEGRAM_GROUPS[:2]):
                run.say_telegram(chat, 100 + i)
            for person in TELEGRAM_PRIVATE[:2]:
                run.say_privately(person)
        elif telegram:
            for i, chat in enumerate(TELEGRAM_GROUPS[:2]):
                run.say_telegram(chat, 100 + i)
        if discord:
            for channel in DISCORD_CHANNELS[:3 if not telegram else 2]:
                await run.say_discord(channel, fd.ALICE)
        at = await kill_mid_reply(run, sig, run.sent)
        status = await run.exit_status(30)
        drained = run.answered()
        if status is None:  # a drain that does not end: the supervisor would kill it
            await run.bot.kill()
        await run.restart_bot()
        note = "" if sig == signal.SIGKILL else f"exit status {status}, {'all' if drained else 'not all'} answered before exit"
        return await _finish(run, fault, at, note=note, exit_status=status, drained=drained)


async def telegram_sigkill(pg: ThrowawayPostgres) -> Row:
    return await _killed(pg, "SIGKILL mid-reply, restart (Telegram)", sig=signal.SIGKILL, telegram=True, discord=False)


async def discord_sigkill(pg: ThrowawayPostgres) -> Row:
    return await _killed(pg, "SIGKILL mid-reply, restart (Discord)", sig=signal.SIGKILL, telegram=False, discord=True)


async def sigterm(pg: ThrowawayPostgres) -> Row:
    return await _killed(pg, "SIGTERM mid-reply, restart (both)", sig=signal.SIGTERM, telegram=True, discord=True)


async def postgres_stopped(pg: ThrowawayPostgres) -> Row:
    """PostgreSQL stops while replies stream, stays down ~20 s while more messages arrive, comes back."""
    async with FaultRun("pgdown", pg) as run:
        # Groups and private chats: a private chat is where an error used to be said out loud.
        before = [run.say_telegram(chat, 200 + i) for i, chat in enumerate(TELEGRAM_GROUPS[:2])]
        before.append(run.say_privately(TELEGRAM_PRIVATE[0]))
        await run.until(lambda: any(run.reply_started(s) for s in before), 30, "a reply to start")
        at = time.monotonic()
        await asyncio.to_thread(pg.stop, "fast")
        try:
            during = [run.say_telegram(TELEGRAM_GROUPS[3], 210), *(run.say_privately(p) for p in TELEGRAM_PRIVATE[1:3])]
            await asyncio.sleep(20.0)  # the outage itself
        finally:
            await asyncio.to_thread(pg.start)
        # A message that came during the outage may get a notice instead of an answer: that is final.
        answered_or_told = lambda: all(run.replies_to(s)[0] or run.notices(s.platform, s.chat) for s in run.sent)  # noqa: E731
        row = await _finish(run, "PostgreSQL stopped ~20 s mid-run", at, done=answered_or_told)
        errors = [t for s in run.sent for t in run.notices(s.platform, s.chat) if "went wrong" in t.lower()]
        row.facts.update(
            before_answered=sum(run.replies_to(s)[0] == 1 for s in before),
            before_count=len(before),
            before_stored=await run.stored(before, wait=15.0 if run.answered(before) else 1.0),
            during=[s.chat for s in during],
            notices_per_chat=max((len(run.notices(s.platform, s.chat)) for s in run.sent), default=0),
            went_wrong=len(errors),
        )
        row.note = f"{len(errors)} 'Something went wrong'"
        return row


async def _redis_fault(pg: ThrowawayPostgres, fault: str, *, freeze: bool) -> Row:
    async with FaultRun("redisfrozen" if freeze else "rediskilled", pg) as run:
        before = [run.say_telegram(chat, 300 + i) for i, chat in enumerate(TELEGRAM_GROUPS[:2])]
        await run.until(lambda: any(run.reply_started(s) for s in before), 30, "a reply to start")
        at = time.monotonic()
        if freeze:
            run.redis.freeze()
        else:
            await asyncio.to_thread(run.redis.kill)
        try:
            for i, chat in enumerate(TELEGRAM_GROUPS[2:4]):
                run.say_telegram(chat, 310 + i)
            await asyncio.sleep(8.0)  # the outage itself
        finally:
            if freeze:
                run.redis.thaw()
            else:
                await asyncio.to_thread(run.redis.start)
        return await _finish(run, fault, at, note="8 s, then " + ("SIGCONT" if freeze else "started empty"))


async def redis_killed(pg: ThrowawayPostgres) -> Row:
    return await _redis_fault(pg, "Redis killed mid-run", freeze=False)


async def redis_frozen(pg: ThrowawayPostgres) -> Row:
    return await _redis_fault(pg, "Redis frozen (SIGSTOP) mid-run", freeze=True)


async def _bad_text(pg: ThrowawayPostgres, fault: str, bad: str) -> Row:
    async with FaultRun("badtext", pg, telegram=True, discord=True) as run:
        at = time.monotonic()
        for i, chat in enumerate(TELEGRAM_GROUPS[:2]):
            run.say_telegram(chat, 400 + i, f"Hello{bad} there, prince. {{m}} Will you{bad} talk?")
        await run.say_discord(fd.ROLEPLAY, fd.ALICE, f"Hello{bad} there, prince. {{m}} Will you{bad} talk?")
        return await _finish(run, fault, at, wait=20)


async def nul_byte(pg: ThrowawayPostgres) -> Row:
    return await _bad_text(pg, "NUL byte in a message", "\x00")


async def lone_surrogate(pg: ThrowawayPostgres) -> Row:
    return await _bad_text(pg, "lone surrogate in a message", "\ud800")


async def endless_text(pg: ThrowawayPostgres) -> Row:
    """The model server ignores max_tokens and streams on and on."""
    async with FaultRun("endless", pg, token_delay=0.001) as run:
        base = run.tgi.reply
        run.tgi.reply = lambda body: base(body).replace(" Farewell.", "") + " and on" * 20000
        run.complete = lambda text: True  # any reply that ends counts; its size is checked below
        at = time.monotonic()
        sent = [run.say_telegram(chat, 500 + i) for i, chat in enumerate(TELEGRAM_GROUPS[:2])]
        await run.until(lambda: run.answered(sent), 30, "a reply")
        await run.settle(quiet=3.0, timeout=30)
        messages = [run.bot_texts(s.platform, s.chat) for s in sent]
        longest = max((len(t) for texts in messages for t in texts), default=0)
        row = run.row("model server sends endless text", at, sent)
        row.recover_s = max((c.at for c in run.tg.calls if c.method != "getUpdates"), default=at) - at
        row.stored = await run.stored(sent, wait=5.0)
        row.note = f"{max(len(t) for t in messages)} message(s) per reply, longest {longest} chars"
        row.facts.update(messages_per_chat=max(len(t) for t in messages), longest=longest, alive=run.bot.alive, log=run.bot.tail(2500))
        return row


async def first_token_late(pg: ThrowawayPostgres, *, delay: float = 40.0, between_s: float | None = None) -> Row:
    """The first token comes after ``delay`` s (a busy GPU): one request per message, and the reply arrives.

    With the defaults (``make faults``) the delay is 40 s against the shipped settings: more than the
    30 s allowed between two streamed pieces, less than the 60 s allowed for the first. ``between_s``
    scales that down for the test suite: PERSONAE_LLM_TIMEOUT_S=between_s (which ``delay`` must
    exceed) and PERSONAE_LLM_FIRST_TOKEN_TIMEOUT_S=1.5*delay, the same proportions.
    """
    env: dict[str, str] = {}
    if between_s is not None:
        assert delay > between_s, "the first token must come later than the gap allowed between two pieces"
        env = {"PERSONAE_LLM_TIMEOUT_S": str(between_s), "PERSONAE_LLM_FIRST_TOKEN_TIMEOUT_S": str(delay * 1.5)}
    async with FaultRun("slowstart", pg, env=env) as run:
        run.tgi.first_token_delay = delay
        at = time.monotonic()
        sent = [run.say_telegram(chat, 600 + i) for i, chat in enumerate(TELEGRAM_GROUPS[:2])]
        row = await _finish(run, f"first token after {delay:g} s", at, wait=delay + 25)
        # Generation requests in whichever layout was chosen (chat, or the raw training layout).
        requests = sum(run.tgi.count(path) for path in ("/v1/chat/completions", "/v1/completions", "/generate_stream"))
        row.note = f"{requests} model requests for {len(sent)} messages"
        row.facts.update(requests=requests)
        return row


FLOOD = 100
# PERSONAE_RATE_LIMIT_MESSAGES and _WINDOW_S for this run: small, to keep the run short. The window is
# shorter than the time the flooder's turns take to answer one after another, so a limit that counted
# messages when they are answered (not when they arrive) would never be reached.
FLOOD_LIMIT = 5
FLOOD_WINDOW_S = 10


async def group_flood(pg: ThrowawayPostgres) -> Row:
    """One person sends 100 messages in a Telegram group; three others then write in their own groups."""
    env = {"PERSONAE_RATE_LIMIT_MESSAGES": str(FLOOD_LIMIT), "PERSONAE_RATE_LIMIT_WINDOW_S": str(FLOOD_WINDOW_S)}
    async with FaultRun("flood", pg, env=env) as run:
        flood_chat = TELEGRAM_GROUPS[0]
        at = time.monotonic()
        flood = [run.say_telegram(flood_chat, 700) for _ in range(FLOOD)]
        others = [run.say_telegram(chat, 710 + i) for i, chat in enumerate(TELEGRAM_GROUPS[1:4])]
        row = await _finish(run, f"flood of {FLOOD} messages by one person (Telegram group)", at, others, wait=40)
        # The flooder's own line is answered one turn after another (paced group writes): wait, within
        # a bound, for what the limit lets through and the notice, rather than count half-way.
        await run.until(
            lambda: sum(1 for s in flood if run.replies_to(s)[0] >= 1) >= FLOOD_LIMIT and run.notices("telegram", flood_chat),
            90, "the flooder's admitted messages and the notice",
        )
        flood_answered = sum(1 for s in flood if run.replies_to(s)[0] >= 1)
        flood_twice = sum(1 for s in flood if run.replies_to(s)[0] > 1)
        notices = len(run.notices("telegram", flood_chat))
        row.note = f"counts are the 3 others; flooder: {flood_answered} of {FLOOD} answered (limit {FLOOD_LIMIT} per {FLOOD_WINDOW_S} s), {notices} notice(s)"
        row.facts.update(flood_answered=flood_answered, flood_twice=flood_twice, flood_notices=notices)
        return row


async def malformed_interaction(pg: ThrowawayPostgres) -> Row:
    """The gateway delivers an interaction discord.py cannot read; both adapters must go on."""
    async with FaultRun("badgateway", pg, telegram=True, discord=True) as run:
        at = time.monotonic()
        # A slash command without the fields discord.py reads first (attachment_size_limit, the
        # command's name), in a channel the guild lacks, from a member with no user.
        await run.dc.dispatch("INTERACTION_CREATE", {
            "id": str(run.dc.next_id()), "application_id": str(fd.APP_ID), "type": 2, "token": "itoken-bad",
            "version": 1, "channel_id": "1", "guild_id": str(fd.GUILD_ID), "data": {"id": "1", "type": 1},
            "member": {"user": None, "roles": "none", "permissions": "x"},
        })
        await run.say_discord(fd.ROLEPLAY, fd.ALICE)
        run.say_telegram(TELEGRAM_GROUPS[0], 800)
        status = await run.exit_status(0.5)
        row = await _finish(run, "malformed gateway interaction", at, wait=20)
        status = status if status is not None else run.bot.returncode
        row.note = f"process {'running' if run.bot.alive else f'exited ({status})'}"
        return row


SCENARIOS: dict[str, Scenario] = {
    "telegram-sigkill": telegram_sigkill,
    "discord-sigkill": discord_sigkill,
    "sigterm": sigterm,
    "postgres-stopped": postgres_stopped,
    "redis-killed": redis_killed,
    "redis-frozen": redis_frozen,
    "nul-byte": nul_byte,
    "lone-surrogate": lone_surrogate,
    "endless-text": endless_text,
    "first-token-40s": first_token_late,
    "group-flood": group_flood,
    "malformed-interaction": malformed_interaction,
}
