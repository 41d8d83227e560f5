"""python-telegram-bot's HTTP clients as bots.telegram.application builds them."""

from __future__ import annotations


def test_the_telegram_clients_share_the_process_tls_context_and_keep_their_timeouts() -> None:
    import httpx

    from bots.llm.client import tls_context
    from bots.telegram.application import bot_api_client

    calls, updates = bot_api_client(15.0), bot_api_client(15.0, updates=True)
    for request in (calls, updates):
        assert request._client._transport._pool._ssl_context is tls_context(httpx)
    assert (calls._client.timeout.connect, calls._client.timeout.read, calls._client.timeout.pool) == (15.0, 15.0, 15.0)
    assert (updates._client.timeout.read, updates._client.timeout.connect) == (15.0, 5.0)
