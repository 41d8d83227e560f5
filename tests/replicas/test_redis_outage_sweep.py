"""Redis dies while a webhook replica is half-way through a reply and the other keeps sweeping: the
message is answered once (a sweep presumes owners alive while liveness cannot be read)."""
import asyncio
import asyncpg
from tests.replicas.test_processes import Replicas, webhook, cluster  # noqa: F401
from tests.faults.harness import TELEGRAM_GROUPS
from tests.throwaway import free_port


async def test_redis_outage_sweep(cluster) -> None:
    w1, w2 = free_port(), free_port()
    replicas = {"r1": {**webhook(w1), "PERSONAE_DISCORD_TOKEN": ""}, "r2": {**webhook(w2), "PERSONAE_DISCORD_TOKEN": ""}}
    async with Replicas("redis", cluster, replicas, telegram=True, discord=False, token_delay=0.3) as run:
        chat = TELEGRAM_GROUPS[0]
        sent = await run.post_telegram(chat, 100)  # r1
        await run.until(lambda: sum(run.replies_to(sent)), 60, "half shown")
        run.redis.kill()
        await asyncio.sleep(6)  # the outage itself
        await asyncio.to_thread(run.redis.start)
        # Waited for (bounded), not slept on: a busy machine may take longer than an idle one.
        await run.until(lambda: run.replies_to(sent)[0] >= 1, 90, "the reply to be completed")
        await run.settle()  # then quiet for a while: a second answer would show up here
        texts = [t for t in run.bot_texts("telegram", chat) if sent.marker in t]
        # Answered once: never streamed by both replicas while Redis was away.
        assert run.replies_to(sent)[0] == 1 and len(texts) == 1, (texts, run.log()[-3000:])
        conn = await asyncpg.connect(run.database_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            replies = await conn.fetchval("select count(*) from messages where role = 'assistant'")
        finally:
            await conn.close()
        assert replies == 1
