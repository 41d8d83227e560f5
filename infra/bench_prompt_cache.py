"""The bundled model's prompt cache, measured: a chat that alternates replies and appraisals (two
different system prompts, as `make chat` does with the model appraiser) on the embedded llama.cpp
server, once with the cache and once without. Prints the server's CPU seconds, its resident memory
and whether the answers were the same (temperature 0).

    .venv/bin/python infra/bench_prompt_cache.py [--turns 4]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bots.llm.embedded import EmbeddedModelServer  # noqa: E402

ROLE = "I want you to answer questions as if you are Hamlet, prince of Denmark, at Elsinore. " * 40
APPRAISER = "Read the character's last reply and rate each of the six feelings from 0 to 10. " * 30


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def _rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


class _Uncached(EmbeddedModelServer):
    def _command(self) -> list[str]:
        command = super()._command()
        at = command.index("--cache")
        del command[at : at + 4]  # --cache True --cache_size N
        return command


async def _one(server_class: type[EmbeddedModelServer], turns: int, log: Path) -> tuple[float, int, list[str]]:
    server = server_class(n_threads=1, n_threads_batch=1, log_path=log)
    await server.start()
    answers: list[str] = []
    history: list[dict[str, str]] = []
    try:
        pid = server._process.pid  # type: ignore[union-attr]
        before = _cpu_seconds(pid)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=600) as http:
            for turn in range(turns):
                history.append({"role": "user", "content": f"Line {turn}: good evening, my lord. How do you fare?"})
                for system, messages in ((ROLE, history), (APPRAISER, [{"role": "user", "content": f"The reply to rate: line {turn}"}])):
                    body = {"messages": [{"role": "system", "content": system}, *messages], "max_tokens": 16, "temperature": 0}
                    response = await http.post("/v1/chat/completions", json=body)
                    response.raise_for_status()
                    answers.append(response.json()["choices"][0]["message"]["content"])
                    if system is ROLE:
                        history.append({"role": "assistant", "content": answers[-1]})
        return _cpu_seconds(pid) - before, _rss_mb(pid), answers
    finally:
        await server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=4)
    args = parser.parse_args()
    log = Path("/tmp/personae-bench-prompt-cache.log")
    cached = await _one(EmbeddedModelServer, args.turns, log)
    uncached = await _one(_Uncached, args.turns, log)
    requests = 2 * args.turns
    print(f"{requests} requests, alternating a role prompt and an appraisal prompt, one thread each")
    print(f"with the prompt cache:    {cached[0]:6.1f} s of server CPU, {cached[1]} MB resident")
    print(f"without the prompt cache: {uncached[0]:6.1f} s of server CPU, {uncached[1]} MB resident")
    print(f"same answers: {'yes' if cached[2] == uncached[2] else 'no'}")


if __name__ == "__main__":
    asyncio.run(main())
