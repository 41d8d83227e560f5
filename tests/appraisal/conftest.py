"""The TGI-protocol double for the appraisal tests (store and cache come from tests/conftest.py)."""

from __future__ import annotations

from typing import AsyncIterator

import pytest

from tests.tgi_server import TGIServer


@pytest.fixture
async def tgi() -> AsyncIterator[TGIServer]:
    async with TGIServer() as server:
        yield server
