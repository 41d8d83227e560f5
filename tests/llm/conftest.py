"""Fixtures for the model-client tests: the fake TGI server and clients pointed at it."""

from __future__ import annotations

from typing import AsyncIterator

import pytest_asyncio

from bots.llm.client import ModelClient
from tests.tgi_server import TGIServer


@pytest_asyncio.fixture
async def tgi() -> AsyncIterator[TGIServer]:
    """A fresh fake TGI server on a free 127.0.0.1 port."""
    async with TGIServer() as server:
        yield server


@pytest_asyncio.fixture
async def make_client() -> AsyncIterator:
    """Build ModelClients (fast retries by default); all of them are closed after the test."""
    made: list[ModelClient] = []

    def make(base_url: str, **kwargs) -> ModelClient:
        options = dict(timeout_s=5.0, concurrency=8, retries=3, retry_base_s=0.01)
        options.update(kwargs)
        client = ModelClient(base_url, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


@pytest_asyncio.fixture
async def client(tgi: TGIServer, make_client) -> ModelClient:
    return make_client(tgi.base_url)
