"""``personae doctor``: the configuration checked end to end, one table line per fact.

Database (reachable, migrated), cache, model server (reachable, which kind, which model), the
prompt layout and why, the context the server allows against ours, guided JSON, and a one-token
generation with its time to the first token. A failing line says what to do; the command exits 1
when a line failed. With PERSONAE_LLM_URL unset the bundled model is started, as ``personae run`` would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import httpx

from bots.failures import explain
from bots.llm import dialects
from bots.llm.dialects import Dialect
from bots.settings import Settings
from core.errors import ModelError

CHECK_TIMEOUT_S = 10.0
PROBE_MESSAGES = [{"role": "user", "content": "Say hello."}]


@dataclass(frozen=True, slots=True)
class Line:
    """One row: what was checked, whether it passed (None: not checked, or only information), what was found, what to do."""

    check: str
    ok: bool | None
    found: str
    fix: str = ""


def render(lines: list[Line]) -> str:
    """The table: check, status, what was found; the fix under a failing line."""
    width = max(len(line.check) for line in lines)
    out = []
    for line in lines:
        status = {True: "ok", False: "FAIL", None: "-"}[line.ok]
        out.append(f"{line.check:<{width}}  {status:<4}  {line.found}")
        if line.fix:
            out.append(f"{'':<{width}}        -> {line.fix}")
    return "\n".join(out)


async def run_doctor(settings: Settings, *, echo: Callable[[str], Any]) -> bool:
    """Check everything, print the table with ``echo``; True when no line failed."""
    lines = [await check_database(settings), await check_cache(settings)]
    async for line in check_model(settings):
        lines.append(line)
    echo(render(lines))
    return all(line.ok is not False for line in lines)


# ---- storage ------------------------------------------------------------------------------------


def _sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None: in memory); only called for sqlite URLs."""
    path = url.partition(":///")[2].partition("?")[0]
    return Path(path) if path and path != ":memory:" else None


async def check_database(settings: Settings) -> Line:
    from bots.compose import describe_database
    from storage import migrate

    url, where = settings.database_url, describe_database(settings)
    sqlite = url.startswith("sqlite")
    if sqlite:
        file = _sqlite_file(url)
        if file is None:
            return Line("database", True, f"{where}: in memory, created and migrated at start (nothing is kept)")
        if not file.exists():
            return Line("database", True, f"{where}: not created yet; created and migrated at the first start")
    try:
        at, head = await asyncio.wait_for(migrate.current(url), CHECK_TIMEOUT_S), await migrate.head()
        known = await migrate.revisions()
    except TimeoutError:
        return Line("database", False, f"{where}: no answer in {CHECK_TIMEOUT_S:g} s", "check PERSONAE_DATABASE_URL and that the server runs")
    except Exception as exc:  # noqa: BLE001 - every failure is a line of the table
        return Line("database", False, where, explain(exc).message.replace("\n", "; "))
    if at == head:
        return Line("database", True, f"{where}: at revision {at} (head)")
    if sqlite:
        return Line("database", True, f"{where}: at revision {at or 'none'}, head {head}; upgraded at the next start")
    if at is not None and at not in known:
        return Line("database", False, f"{where}: at revision {at}, which this code does not know (head {head})",
                    "this database was migrated by a newer personae: run that version, or point PERSONAE_DATABASE_URL elsewhere")
    return Line("database", False, f"{where}: at revision {at or 'none (empty)'}, head is {head}", "run `personae db upgrade`")


async def check_cache(settings: Settings) -> Line:
    from bots.compose import describe_cache, open_cache

    try:
        cache = await asyncio.wait_for(open_cache(settings), CHECK_TIMEOUT_S)
    except TimeoutError:
        return Line("cache", False, f"Redis: no answer in {CHECK_TIMEOUT_S:g} s", "check PERSONAE_REDIS_URL, or unset it to use the in-process cache")
    except Exception as exc:  # noqa: BLE001
        return Line("cache", False, "Redis", explain(exc).message.replace("\n", "; "))
    try:
        return Line("cache", True, describe_cache(cache))
    finally:
        await cache.close()


# ---- the model server ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _server_url(settings: Settings) -> AsyncIterator[tuple[str | None, str, Line | None, int | None]]:
    """(base URL or None, how it was found, a failure line or None, the bundled server's context or None)."""
    if settings.llm_url:
        # A pool: check_model asks each of its servers.
        yield settings.llm_urls[0], "PERSONAE_LLM_URL", None, None
        return
    from bots.llm.embedded import INSTALL_HINT, EmbeddedModelServer, embedded_available

    if not embedded_available():
        yield None, "bundled", Line("model server", False, "PERSONAE_LLM_URL is unset and the bundled model is not installed",
                                    f"{INSTALL_HINT}, or set PERSONAE_LLM_URL"), None
        return
    server = EmbeddedModelServer()
    try:
        await server.start()
    except Exception as exc:  # noqa: BLE001
        yield None, "bundled", Line("model server", False, "the bundled model did not start", explain(exc).message.replace("\n", "; ")), None
        return
    try:
        yield server.base_url, "bundled SmolLM2; PERSONAE_LLM_URL is unset", None, server.n_ctx
    finally:
        await server.stop()


async def check_model(settings: Settings) -> AsyncIterator[Line]:
    """The model lines, in order; the later ones are skipped when the server cannot be reached."""
    from bots.compose import model_client

    if settings.llm_url is None:
        from bots.compose import fit_to_bundled_model

        settings = fit_to_bundled_model(settings)  # as `personae run` does with the bundled model
    async with _server_url(settings) as (url, how, failed, bundled_context):
        if failed is not None or url is None:
            yield failed or Line("model server", False, "not configured", "set PERSONAE_LLM_URL")
            for line in from_skipped("the model server is not running"):
                yield line
            return
        urls = settings.llm_urls if settings.llm_url else [url]
        pool = len(urls) > 1
        found: list[tuple[str, Dialect]] = []
        failures: list[tuple[Line, str]] = []
        for number, each in enumerate(urls, 1):
            name = f"model server {number}" if pool else "model server"
            dialect_or_line = await _detect(settings, each, how, name)
            if isinstance(dialect_or_line, Line):
                failures.append((dialect_or_line, each))
                if pool:  # the pool goes on without it: a warning while another answers
                    continue
            else:
                found.append((each, dialect_or_line))
                yield Line(name, True, f"{each} ({how}) answers: {dialect_or_line.kind}")
                line = in_flight_line(settings, each, dialect_or_line)
                if line is not None:
                    yield line
        if not found:
            for line, _ in failures:
                yield line
            why = "what answers is not a model server" if "does not look like" in failures[0][0].found else "the model server cannot be reached"
            for line in from_skipped(why if not pool else "no model server of PERSONAE_LLM_URL answers"):
                yield line
            return
        for line, _ in failures:
            yield Line(line.check, None, f"WARN: {line.found}; the pool goes on without it", line.fix)
        url, dialect = found[0]
        client = model_client(settings, url, concurrency=1, embedded=not settings.llm_url)
        try:
            await client.dialect()
            yield Line("model", True, _model_found(dialect, client.model, bundled=not settings.llm_url))
            yield Line("prompt layout", True, f"{client.layout} ({client.layout_reason})")
            yield context_line(settings, dialect, bundled_context)
            yield guided_line(dialect)
            yield await generation_line(settings, client)
        finally:
            await client.close()


async def _detect(settings: Settings, url: str, how: str, name: str) -> Dialect | Line:
    """The server's dialect, or the failing line saying why there is none."""
    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=url.rstrip("/").removesuffix("/v1"), headers=headers, timeout=CHECK_TIMEOUT_S) as http:
        try:
            return await dialects.detect(http, timeout_s=CHECK_TIMEOUT_S)
        except dialects.Unreachable as exc:
            return Line(name, False, f"{url} ({how}): {exc}",
                        "start the model server, or set PERSONAE_LLM_URL to its base URL" if settings.llm_url else "see the bundled server's log")
        except dialects.NotAModelServer as exc:
            return Line(name, False, f"{url} ({how}) does not look like a model server: {exc}",
                        "set PERSONAE_LLM_URL to the base URL of TGI, vLLM, SGLang or llama.cpp's server (or unset it for the bundled model)")


def in_flight_line(settings: Settings, url: str, dialect: Dialect) -> Line | None:
    """A warning when PERSONAE_LLM_MAX_IN_FLIGHT lets more requests go to a TGI server than its
    max_concurrent_requests takes (TGI refuses the rest as overloaded)."""
    limit = (dialect.info or {}).get("max_concurrent_requests")
    if not isinstance(limit, int) or settings.llm_max_in_flight <= limit:
        return None
    return Line(
        "in flight", None,
        f"WARN: PERSONAE_LLM_MAX_IN_FLIGHT={settings.llm_max_in_flight} is more than {url}'s max_concurrent_requests={limit}",
        f"lower PERSONAE_LLM_MAX_IN_FLIGHT to {limit} (or raise TGI's --max-concurrent-requests)",
    )


def from_skipped(why: str) -> list[Line]:
    return [Line(name, None, f"not checked: {why}") for name in ("model", "prompt layout", "context", "guided JSON", "test generation")]


def _model_found(dialect: Dialect, sent: str, *, bundled: bool = False) -> str:
    served = (dialect.info or {}).get("model_id") or ", ".join(dialect.served_models) or "not reported"
    found = f"serves {served}; personae sends model={sent!r}"
    if dialect.kind == "openai" and not bundled:
        found += " (a plain OpenAI-style server: set PERSONAE_LLM_MODEL if it wants another name)"
    elif dialect.kind == "openai":
        found += " (llama-cpp-python answers with its one model whatever the name)"
    return found


def server_context(dialect: Dialect) -> tuple[int | None, int | None]:
    """(max prompt tokens, max prompt + answer tokens) the server reports, None where it does not."""
    info = dialect.info or {}
    prompt, total = info.get("max_input_tokens"), info.get("max_total_tokens")
    if total is None:
        total = dialect.context_tokens
    return (prompt if isinstance(prompt, int) else None), (total if isinstance(total, int) else None)


def context_line(settings: Settings, dialect: Dialect, bundled_context: int | None) -> Line:
    # The engine keeps a prompt within MAX_INPUT_TOKENS - MAX_TOKENS, so prompt and reply fit MAX_INPUT_TOKENS.
    ours_prompt = settings.max_input_tokens - settings.max_tokens
    ours_total = settings.max_input_tokens
    server_prompt, server_total = server_context(dialect)
    server_total = server_total or bundled_context
    if server_prompt is None and server_total is None:
        return Line("context", None, f"the server does not report its context; ours: prompt <= {ours_prompt}, prompt + reply <= {ours_total}")
    server_side = [
        f"prompt <= {server_prompt}" if server_prompt is not None else "prompt: no separate limit (within the total)",
        f"prompt + answer <= {server_total}" if server_total is not None else "prompt + answer: not reported",
    ]
    found = (
        f"server: {', '.join(server_side)}; "
        f"ours: prompt <= {ours_prompt} (PERSONAE_MAX_INPUT_TOKENS - PERSONAE_MAX_TOKENS), prompt + reply <= {ours_total}, "
        f"appraisal answers <= {settings.appraisal_max_tokens}"
    )
    problems = []
    if server_prompt is not None and ours_prompt > server_prompt:
        problems.append(f"lower PERSONAE_MAX_INPUT_TOKENS to {server_prompt + settings.max_tokens} or less")
    if server_total is not None and ours_total > server_total:
        problems.append(f"lower PERSONAE_MAX_INPUT_TOKENS to {server_total} or less (or raise the server's context)")
    if server_total is not None and settings.appraisal_max_tokens >= server_total // 2:
        problems.append(f"lower PERSONAE_APPRAISAL_MAX_TOKENS below {server_total // 2} (an appraisal prompt needs the rest)")
    return Line("context", not problems, found, "; ".join(problems))


def guided_line(dialect: Dialect) -> Line:
    if dialect.kind == "tgi":
        return Line("guided JSON", True, "yes: appraisals get a regex grammar (free analysis, then the JSON object)")
    if dialect.kind in ("vllm", "sglang", "llamacpp"):
        return Line("guided JSON", True, "yes (json_schema); appraisals go unconstrained so the trained analysis comes first")
    return Line("guided JSON", True, "none: the appraiser reads the last JSON object of each answer")


async def generation_line(settings: Settings, client: Any) -> Line:
    started = time.perf_counter()
    first: float | None = None
    try:
        async with asyncio.timeout(settings.llm_first_token_timeout_s + CHECK_TIMEOUT_S):
            async for _delta in client.stream(PROBE_MESSAGES, max_tokens=1, temperature=0.0):
                if first is None:
                    first = time.perf_counter() - started
    except TimeoutError:
        return Line("test generation", False, "no answer in time", "see the model server's log; PERSONAE_LLM_FIRST_TOKEN_TIMEOUT_S")
    except ModelError as exc:
        return Line("test generation", False, "one token failed", explain(exc).message.replace("\n", "; "))
    if first is None:
        return Line("test generation", True, f"finished without text after {1000 * (time.perf_counter() - started):.0f} ms")
    return Line("test generation", True, f"one token; first token after {1000 * first:.0f} ms")
