"""What a failed connection to the database or to Redis means, said in one line (no secret in it)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Iterator

import sqlalchemy as sa

from storage.errors import CacheUnavailable, DatabaseRefused, DatabaseUnavailable, StorageError

# PostgreSQL error classes (SQLSTATE) that mean "fix the URL", not "try again later".
_LOGIN_REFUSED = {"28000": "the login was refused", "28P01": "the password was refused"}
_NO_DATABASE = "3D000"
DATABASE_ERRORS = (OSError, asyncio.TimeoutError, sa.exc.DBAPIError)


def database_failure(exc: BaseException, where: str) -> StorageError:
    """The StorageError for an exception raised while connecting to the database at ``where`` (a safe URL)."""
    orig = getattr(exc, "orig", None) or exc
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    detail = _first_line(orig)
    if state in _LOGIN_REFUSED:
        return DatabaseRefused(f"the database at {where} refused the login ({detail}): fix the user or password")
    if state == _NO_DATABASE:
        return DatabaseRefused(f"the database at {where} does not exist: create it, or fix its name")
    if state and not state.startswith(("08", "57P")):
        # The server answered a statement with an error: not a connection problem.
        return StorageError(f"the database at {where} refused a statement: {detail}")
    return DatabaseUnavailable(f"cannot reach the database at {where}: {_network_reason(orig, detail)}")


def cache_failure(exc: BaseException, where: str) -> CacheUnavailable:
    """The CacheUnavailable for an exception raised while reaching Redis at ``where`` (a safe URL)."""
    from redis.exceptions import ResponseError  # here: a command without Redis never imports it

    text = _first_line(exc)
    lowered = text.lower()
    if "auth" in lowered or "password" in lowered or "noperm" in lowered:
        return CacheUnavailable(f"Redis at {where} refused the login ({text}): fix the user or password")
    if isinstance(exc, ResponseError):
        return CacheUnavailable(f"Redis at {where} answered with an error: {text}")
    return CacheUnavailable(f"cannot reach Redis at {where}: {_network_reason(exc, text)}")


@contextlib.contextmanager
def database_errors(where: str) -> Iterator[None]:
    """Turn connection failures inside the block into DatabaseUnavailable or DatabaseRefused."""
    try:
        yield
    except DATABASE_ERRORS as exc:
        raise database_failure(exc, where) from exc


def _network_reason(exc: BaseException, text: str) -> str:
    # Walk the causes too: drivers wrap the socket error that says what happened.
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "Connect call failed" in str(seen) or "Connection refused" in str(seen):
            return "connection refused; is the server running there?"
        if isinstance(seen, (asyncio.TimeoutError, TimeoutError)) or "timed out" in str(seen).lower():
            return "no answer in time; check the host and port, and that a firewall lets them through"
        if isinstance(seen, socket.gaierror) or "Name or service not known" in str(seen):
            return "the host name does not resolve; check it"
        seen = seen.__cause__ or seen.__context__
    return text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
