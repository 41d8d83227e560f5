"""``personae run`` with PERSONAE_METRICS_PORT serves /metrics, /healthz and /readyz, and logs JSON lines."""

from __future__ import annotations

import json
import signal

import httpx

from tests.observe.test_metrics import samples, value
from bots.fakes.telegram import FakeTelegram
from tests.test_service_drain import GROUP, prepared_database
from tests.tgi_server import TGIServer
from tests.throwaway import PersonaeProcess, free_port

SAID = "Who goes there? SECRET-WORDS"
REPLY = "Nay, answer me: stand, and unfold yourself."


async def test_personae_run_serves_metrics_health_and_json_logs(tmp_path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'personae.db'}"
    await prepared_database(url)
    port = free_port()
    async with FakeTelegram() as tg, TGIServer(reply=REPLY) as tgi:
        env = {
            "PERSONAE_DATABASE_URL": url,
            "PERSONAE_LLM_URL": tgi.base_url,
            "PERSONAE_APPRAISER": "none",
            "PERSONAE_TELEGRAM_TOKEN": tg.token,
            "PERSONAE_TELEGRAM_API_BASE": tg.base_url,
            "PERSONAE_TELEGRAM_FILE_BASE": tg.file_base_url,
            "PERSONAE_REDIS_URL": "",
            "PERSONAE_TELEGRAM_WEBHOOK_URL": "",
            "PERSONAE_METRICS_PORT": str(port),
            "PERSONAE_LOG_FORMAT": "json",
        }
        service = PersonaeProcess(env)
        await service.start()
        base = f"http://127.0.0.1:{port}"
        try:
            await tg.wait_for(lambda: tg.holding, timeout=60, what="the Telegram poller to wait for updates")
            tg.push({"message": tg.message(tg.group(GROUP), tg.user(61, "Ann"), SAID)})
            async with httpx.AsyncClient(trust_env=False, timeout=30) as client:

                async def answered() -> bool:
                    page = (await client.get(f"{base}/metrics")).text
                    return value(samples(page), "personae_turns_total", outcome="answered") == 1

                await tg.wait_for(lambda: tg.texts(GROUP) == [REPLY], timeout=60, what="the reply")
                # The turn is counted when the reply's iteration ends, which may come just after the
                # text is shown: ask again (no sleep; each scrape is a round trip) a bounded number of times.
                for _ in range(200):
                    if await answered():
                        break
                found = samples((await client.get(f"{base}/metrics")).text)
                assert value(found, "personae_turns_total", outcome="answered") == 1
                assert value(found, "personae_first_text_seconds_count", platform="telegram") == 1
                assert (await client.get(f"{base}/healthz")).status_code == 200
                ready = await client.get(f"{base}/readyz")
                assert ready.status_code == 200, ready.text
                assert set(ready.json()["parts"]) == {"database", "model", "adapters"}  # no Redis configured
            service.signal(signal.SIGTERM)
            assert await service.wait(60) == 0, service.tail()
        finally:
            log = service.log
            await service.close()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any("metrics and health on" in line["message"] for line in lines)
    assert "SECRET-WORDS" not in log
