"""`personae doctor`: one table that checks the configuration end to end."""

from __future__ import annotations

import socket
from pathlib import Path

from bots.doctor import run_doctor
from bots.llm.vllm_double import VLLMServer
from bots.settings import Settings
from storage import migrate
from tests.cli_process import personae
from tests.conftest import throwaway_postgres
from tests.tgi_server import TGIServer


def settings(tmp_path: Path, **values) -> Settings:
    values.setdefault("database_url", f"sqlite+aiosqlite:///{tmp_path / 'personae.db'}")
    return Settings(_env_file=None, **values)


async def doctor(s: Settings) -> tuple[bool, dict[str, str]]:
    printed: list[str] = []
    ok = await run_doctor(s, echo=printed.append)
    (table,) = printed
    rows: dict[str, str] = {}
    last = ""
    for line in table.splitlines():
        if line.lstrip().startswith("->"):
            rows[last] += "\n" + line.strip()
        else:
            last = line[:16].strip()
            rows[last] = line[16:].strip()
    return ok, rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_against_tgi_every_line_passes_and_names_the_server_and_model(tmp_path: Path) -> None:
    async with TGIServer() as tgi:
        ok, rows = await doctor(settings(tmp_path, llm_url=tgi.base_url))
        generated = [b for b in tgi.bodies("/v1/completions") if b.get("max_tokens") == 1]
    assert ok
    assert rows["model server"].startswith(f"ok    {tgi.base_url} (PERSONAE_LLM_URL) answers: tgi")
    assert "serves yuyouyu/Mistral-Nemo-BD-RP" in rows["model"]
    assert "server: prompt <= 4096, prompt + answer <= 4608" in rows["context"] and rows["context"].startswith("ok")
    assert rows["prompt layout"] == (
        "ok    training (auto: the server's model_id 'yuyouyu/Mistral-Nemo-BD-RP' is a BeyondDialogue model, trained on this layout)"
    )
    assert "regex grammar" in rows["guided JSON"]
    assert rows["test generation"].startswith("ok    one token; first token after ")
    assert len(generated) == 1  # the one-token generation really went out


async def test_a_server_context_smaller_than_ours_fails_and_says_which_setting_to_lower(tmp_path: Path) -> None:
    async with TGIServer(max_input_tokens=1024, max_total_tokens=2048) as tgi:
        ok, rows = await doctor(settings(tmp_path, llm_url=tgi.base_url))
    assert not ok
    assert rows["context"].startswith("FAIL")
    assert "lower PERSONAE_MAX_INPUT_TOKENS to 1120 or less" in rows["context"]


async def test_against_vllm_the_served_name_and_its_max_model_len_are_shown(tmp_path: Path) -> None:
    async with VLLMServer(served_model_name="bd-rp", max_model_len=3000) as vllm:
        ok, rows = await doctor(settings(tmp_path, llm_url=vllm.base_url, redis_url="redis://127.0.0.1:6379/0"))
    assert not ok  # 3500 tokens of prompt and reply do not fit in 3000
    assert rows["model server"].endswith("answers: vllm")
    assert "personae sends model='bd-rp'" in rows["model"]
    assert "prompt + answer <= 3000" in rows["context"] and "lower PERSONAE_MAX_INPUT_TOKENS to 3000 or less" in rows["context"]
    assert rows["cache"] == "ok    redis://127.0.0.1:6379/0"
    assert rows["prompt layout"].startswith("ok    training (auto: the served model 'bd-rp'")
    assert rows["test generation"].startswith("ok")


async def test_an_unreachable_server_fails_and_the_lines_after_it_are_not_checked(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    ok, rows = await doctor(settings(tmp_path, llm_url=url))
    assert not ok
    assert rows["model server"].startswith(f"FAIL  {url} (PERSONAE_LLM_URL)")
    assert "-> start the model server, or set PERSONAE_LLM_URL" in rows["model server"]
    assert rows["test generation"] == "-     not checked: the model server cannot be reached"
    assert rows["database"].startswith("ok") and "created and migrated at the first start" in rows["database"]


async def test_an_unmigrated_postgresql_fails_until_db_upgrade(tmp_path: Path) -> None:
    async with TGIServer() as tgi, throwaway_postgres() as url:
        ok, rows = await doctor(settings(tmp_path, database_url=url, llm_url=tgi.base_url))
        assert not ok
        assert rows["database"].startswith("FAIL") and "at revision none (empty), head is" in rows["database"]
        assert "-> run `personae db upgrade`" in rows["database"]
        assert "postgres@" not in rows["database"] or ":" not in rows["database"].split("@")[0].split("//")[-1]
        await migrate.upgrade(url)
        ok, rows = await doctor(settings(tmp_path, database_url=url, llm_url=tgi.base_url))
        assert ok and rows["database"].endswith("(head)")


async def test_on_a_fresh_clone_the_bundled_model_is_started_and_checked(tmp_path: Path) -> None:
    finished = await personae("doctor", home=tmp_path)
    assert "model server     ok    http://127.0.0.1:" in finished.output, finished.output
    assert "(bundled SmolLM2; PERSONAE_LLM_URL is unset) answers: openai" in finished.output
    assert "test generation  ok    one token; first token after" in finished.output
    assert "prompt layout    ok    chat (auto: the served model 'SmolLM2-135M-Instruct' is not a BeyondDialogue model" in finished.output
    # The bundled server reads 2048 tokens: the budget is fitted to it, as `personae run` fits it.
    assert "server: prompt: no separate limit (within the total), prompt + answer <= 2048; ours: prompt <= 1952" in finished.output
    # The README's PERSONAE_LLM_MODEL row says this server gets `tgi` and why that works.
    assert "personae sends model='tgi' (llama-cpp-python answers with its one model whatever the name)" in finished.output
    assert finished.code == 0, finished.output


def test_the_prompt_budget_is_fitted_to_the_bundled_model_only() -> None:
    from bots.compose import fit_to_bundled_model

    assert fit_to_bundled_model(Settings(_env_file=None)).max_input_tokens == 2048
    assert fit_to_bundled_model(Settings(_env_file=None, max_input_tokens=1500)).max_input_tokens == 1500
    assert fit_to_bundled_model(Settings(_env_file=None, llm_url="http://127.0.0.1:8080")).max_input_tokens == 3500


async def test_a_web_server_that_is_not_a_model_server_fails(tmp_path: Path) -> None:
    # `python -m http.server` at PERSONAE_LLM_URL: it answers, but with no /info and no model list.
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        ok, rows = await doctor(settings(tmp_path, llm_url=url))
    finally:
        server.shutdown()
        server.server_close()
    assert not ok
    assert rows["model server"].startswith(f"FAIL  {url} (PERSONAE_LLM_URL) does not look like a model server")
    assert "-> set PERSONAE_LLM_URL to the base URL of TGI" in rows["model server"]
    assert rows["model"] == "-     not checked: what answers is not a model server"


async def test_a_host_no_one_can_resolve_is_named(tmp_path: Path) -> None:
    ok, rows = await doctor(settings(tmp_path, llm_url="http://no-such-host.invalid:8080"))
    assert not ok
    assert "cannot resolve host no-such-host.invalid" in rows["model server"]


async def test_each_server_of_a_pool_is_checked_and_one_answering_is_enough(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with TGIServer(max_concurrent_requests=8) as tgi:
        ok, rows = await doctor(settings(tmp_path, llm_url=f"{dead},{tgi.base_url}", llm_max_in_flight=16))
        assert ok, rows
        assert rows["model server 1"].startswith(f"-     WARN: {dead} (PERSONAE_LLM_URL)"), rows
        assert rows["model server 2"].startswith(f"ok    {tgi.base_url} (PERSONAE_LLM_URL) answers: tgi"), rows
        assert "PERSONAE_LLM_MAX_IN_FLIGHT=16 is more than" in rows["in flight"] and "max_concurrent_requests=8" in rows["in flight"], rows
        assert rows["test generation"].startswith("ok"), rows
    ok, rows = await doctor(settings(tmp_path, llm_url=f"{dead},{dead}/other"))
    assert not ok
    assert rows["model server 1"].startswith("FAIL") and rows["model server 2"].startswith("FAIL"), rows
