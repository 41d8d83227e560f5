"""Fixtures for the storage tests."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.conftest import TEST_REDIS_URL
from tests.storage.helpers import TcpProxy


def through(proxy: TcpProxy, url: str = TEST_REDIS_URL) -> str:
    """``url`` (the test Redis: its db number, user and password) with the proxy as host and port."""
    parts = urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture
async def redis_proxy(redis_prefix: str):
    """A TcpProxy in front of the test Redis."""
    from redis.asyncio.connection import parse_url

    options = parse_url(TEST_REDIS_URL)
    proxy = TcpProxy(options.get("host", "127.0.0.1"), options.get("port", 6379))
    await proxy.start()
    yield proxy
    if proxy._server is not None:
        await proxy.stop()
