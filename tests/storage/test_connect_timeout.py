"""``connect_timeout`` in a PostgreSQL URL (libpq's parameter) sets how long opening a connection may take."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from storage.engine import CONNECT_TIMEOUT_S, create_engine
from storage.errors import InvalidDatabaseURL


class Stop(Exception):
    """Raised by the do_connect hook, so that nothing is dialled."""


async def connect_parameters(url: str) -> dict[str, Any]:
    """What the engine would hand asyncpg.connect for ``url`` (caught before any connection is made)."""
    engine = create_engine(url)
    seen: dict[str, Any] = {}

    @event.listens_for(engine.sync_engine, "do_connect")
    def capture(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        seen.update(cparams)
        raise Stop

    try:
        with pytest.raises((Stop, sa.exc.DBAPIError)):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
    return seen


async def test_the_default_connect_timeout_is_ten_seconds() -> None:
    params = await connect_parameters("postgresql://u@127.0.0.1:1/db")
    assert params["timeout"] == CONNECT_TIMEOUT_S == 10.0


async def test_connect_timeout_in_the_url_replaces_it_and_is_not_passed_on_as_an_unknown_argument() -> None:
    params = await connect_parameters("postgresql://u@127.0.0.1:1/db?connect_timeout=2.5&ssl=disable")
    assert params["timeout"] == 2.5
    assert "connect_timeout" not in params
    assert params["ssl"] == "disable"  # other parameters go through as before


def test_a_connect_timeout_that_is_not_a_number_names_it() -> None:
    with pytest.raises(InvalidDatabaseURL, match="connect_timeout"):
        create_engine("postgresql://u@127.0.0.1:1/db?connect_timeout=soon")
