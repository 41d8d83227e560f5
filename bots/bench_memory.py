"""The memory probe: a fact told in turn 3, asked about in turn 80, with long-term memory and without.

Every turn goes through the engine as the bots run it (SQLite in memory, the in-process cache). The
replies of turns 1-79 and the condensing answers come from the TGI double, so the run is the same
each time: the double condenses as a careful model would (each thing the person tells becomes a
fact; small talk becomes nothing). Turn 80's prompt, exactly as the engine built it, then goes to
the model that answers (``--answer bundled``: SmolLM2-135M through llama.cpp, greedy; or any server
with ``--answer-url``, e.g. BD-RP on TGI), and the
probe counts an answer as right when it names the fact's key word. ``--condenser bundled`` lets the
bundled model condense too (the whole path with a real model; slow on CPU).

Prints figures; asserts nothing. Run: ``python -m bots.bench_memory [--answer bundled] [--condenser bundled]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from bots.llm.tgi_double import TGIServer
from core.memory import MEMORY_SYSTEM
from core.prompt import estimate_tokens

# (what the person tells in turn 3, the question of turn 80, the word a right answer names)
PROBES = (
    ("By the way, my sister's name is Ingrid.", "Do you remember my sister's name?", "ingrid"),
    ("I should tell you: my dog is called Biscuit.", "What is my dog called, do you remember?", "biscuit"),
    ("I was born in Bergen, by the sea.", "Where was I born, do you remember?", "bergen"),
    ("My favourite flower is the violet.", "Which flower do I like best?", "violet"),
    ("I promised to bring you a red apple tomorrow.", "What did I promise to bring you?", "apple"),
)
FILLERS = (
    "The wind is cold tonight.",
    "Tell me more about the castle.",
    "What do you think of the guards?",
    "The stars are bright above the sea.",
    "I walked along the walls today.",
    "Do you hear the bells?",
)
# Each small-talk line gets its own reply, so that the history is not one line repeated.
FILLER_REPLIES = (
    "(pulls his cloak closer) Aye, it bites to the bone.",
    "(gestures at the towers) Its stones have seen more grief than joy.",
    "(lowers his voice) They watch, and they whisper.",
    "(looks up) They burn as if nothing below them mattered.",
    "(smiles faintly) And did the walls tell you their secrets?",
    "(tilts his head) They toll for someone, as they always do.",
)
ASK_AT = 80
WITHIN_WINDOW = 8  # asked while turn 3 is still in the history window
TOLD_AT = 3


def is_condensing(body: Mapping[str, Any]) -> bool:
    messages = body.get("messages") or []
    if messages:
        return messages[0].get("content") == MEMORY_SYSTEM
    return str(body.get("inputs", "")).startswith(MEMORY_SYSTEM)


def careful_condenser(body: Mapping[str, Any]) -> str:
    """The double's answers: replies get a neutral line; a condensing task gets one fact per thing
    the person told that is not small talk."""
    if not is_condensing(body):
        said = body["messages"][-1]["content"] if body.get("messages") else ""
        return FILLER_REPLIES[FILLERS.index(said)] if said in FILLERS else "(nods slowly) Go on, I am listening."
    task = body["messages"][-1]["content"] if body.get("messages") else body["inputs"]
    dialogue = task.split("[Conversation]\n", 1)[-1]
    facts = []
    for line in dialogue.splitlines():
        name, _, text = line.partition(": ")
        if name == "Elena" and text.strip() not in FILLERS:
            facts.append({"kind": "fact", "text": f"Elena said: {text.strip()}"})
    return json.dumps({"memories": facts})


@dataclass(slots=True)
class Run:
    memory: bool
    ask_at: int = ASK_AT
    in_prompt: int = 0
    right: int = 0
    answered: int = 0
    memory_tokens: list[int] = field(default_factory=list)
    condensings: int = 0
    condensing_prompt_tokens: list[int] = field(default_factory=list)
    unreadable: int = 0
    answers: list[str] = field(default_factory=list)


async def probe(
    told: str, asked: str, key: str, *, double: TGIServer, answer_url: str | None, condenser_url: str | None, run: Run
) -> None:
    memory = run.memory
    from bots.compose import wire
    from bots.llm.client import ModelClient
    from bots.settings import Settings
    from core.cards import new_card
    from core.commands import Actor, Place
    from core.events import ChatEvent, Platform
    from storage.cache import MemoryCache
    from storage.database import SqlStore

    from bots.llm.embedded import CONTEXT_TOKENS

    settings = Settings(
        database_url="sqlite+aiosqlite://", llm_url=double.base_url, memory="on" if memory else "off",
        max_input_tokens=CONTEXT_TOKENS, rate_limit_messages=10_000, appraiser="none",
    )
    store = await SqlStore.open(settings.database_url)
    cache = MemoryCache()
    client = ModelClient(double.base_url, timeout_s=30.0, concurrency=4, retries=1)
    condensing_client = ModelClient(condenser_url, timeout_s=600.0, concurrency=1, retries=1) if condenser_url else None
    app = wire(settings, store, cache, client, memory_model=condensing_client)
    try:
        name = "Hamlet"
        await store.characters.add(new_card(
            name=name, world="8th Century Danish Royalty", traits=["brooding", "loyal"], mbti="INFJ",
            style=["poetic", "earnest"], scene="Elsinore at night, on the castle walls.",
        ))
        admin = Actor(Platform.CONSOLE, "admin", "Admin", is_admin=True)
        place = Place(Platform.CONSOLE, "bench", "bench-channel")
        assert (await app.commands.bind(admin, place, name)).ok

        def event(text: str) -> ChatEvent:
            return ChatEvent(Platform.CONSOLE, "bench", "bench-channel", "elena", "Elena", uuid.uuid4().hex, text)

        for turn in range(1, run.ask_at):
            text = told if turn == TOLD_AT else FILLERS[turn % len(FILLERS)]
            [_ async for _ in app.engine.handle(event(text))]
        await app.engine.drain()
        before = len(double.requests)
        [_ async for _ in app.engine.handle(event(asked))]
        await app.engine.drain()  # a condensing the last turn started is done before the answer is asked
        bodies = [r.body for r in double.requests[before:] if isinstance(r.body, dict) and not is_condensing(r.body) and r.body.get("stream")]
        messages = bodies[-1]["messages"]
        system = messages[0]["content"]
        if key in " ".join(m["content"] for m in messages).lower():
            run.in_prompt += 1
        marker = "What Hamlet remembers of Elena: "
        run.memory_tokens.append(estimate_tokens(system.split(marker, 1)[1].split("\n", 1)[0]) if marker in system else 0)
        keeper = app.engine.memory
        if keeper is not None:
            run.condensings += keeper.condensed
            run.unreadable += keeper.failed
        for r in double.requests:
            if isinstance(r.body, dict) and is_condensing(r.body):
                run.condensing_prompt_tokens.append(estimate_tokens(json.dumps(r.body["messages"], ensure_ascii=False)))
        if answer_url is not None:
            answerer = ModelClient(answer_url, timeout_s=120.0, concurrency=1, retries=1, first_token_timeout_s=600.0, layout="auto")
            try:
                text = "".join([d async for d in answerer.stream(messages, max_tokens=48, temperature=0.0)])
            finally:
                await answerer.close()
            run.answered += 1
            run.answers.append(text.strip().replace("\n", " ")[:120])
            if re.search(rf"\b{key}", text.lower()):
                run.right += 1
    finally:
        await app.engine.drain()
        await client.close()
        if condensing_client is not None:
            await condensing_client.close()
        await store.close()


async def condense_check(url: str) -> None:
    """Each probe's fact among four lines of small talk, as one condensing task straight to ``url``:
    how many answers can be read, how long each took."""
    from bots.llm.client import ModelClient
    from core.memory import BadAnswer, condensing_task, memory_schema, read_memories

    client = ModelClient(url, timeout_s=300.0, concurrency=1, retries=0, first_token_timeout_s=600.0, layout="auto")
    readable = 0
    try:
        for told, _, key in PROBES:
            lines: list[tuple[str, str]] = []
            for n in range(5):
                lines += [("Elena", told if n == 2 else FILLERS[n]), ("Hamlet", FILLER_REPLIES[n])]
            task = condensing_task("en", char="Hamlet", user="Elena", known=[], lines=lines)
            started = time.monotonic()
            answer = await client.complete(
                [{"role": "system", "content": MEMORY_SYSTEM}, {"role": "user", "content": task}],
                max_tokens=256, temperature=0.2, json_schema=memory_schema(),
            )
            try:
                found = read_memories(answer)
                readable += 1
                verdict = f"read: {found}"
            except BadAnswer as exc:
                verdict = f"unreadable: {exc}"
            print(f"    [{key}] {time.monotonic() - started:.1f} s, {verdict}; answer {answer[:100]!r}")
    finally:
        await client.close()
    print(f"condensing answers readable: {readable}/{len(PROBES)}")


async def main_async(args: argparse.Namespace) -> None:
    bundled = None
    if args.condense_check:
        from bots.llm.embedded import EmbeddedModelServer

        bundled = EmbeddedModelServer()
        await bundled.start()
        try:
            await condense_check(bundled.base_url)
        finally:
            await bundled.stop()
        return
    if args.answer == "bundled" or args.condenser == "bundled":
        from bots.llm.embedded import EmbeddedModelServer

        bundled = EmbeddedModelServer()
        await bundled.start()
    answer_url = args.answer_url or (bundled.base_url if args.answer == "bundled" and bundled else None)
    condenser_url = bundled.base_url if args.condenser == "bundled" and bundled else None
    probes = PROBES[: args.probes]
    try:
        runs = [Run(False), Run(True)]
        if answer_url is not None:
            runs.insert(0, Run(False, ask_at=WITHIN_WINDOW))  # the ceiling: the fact still in the history
        for run in runs:
            started = time.monotonic()
            for told, asked, key in probes:
                async with TGIServer(reply=careful_condenser) as double:
                    await probe(told, asked, key, double=double, answer_url=answer_url, condenser_url=condenser_url, run=run)
            took = time.monotonic() - started
            n = len(probes)
            print(f"memory {'on ' if run.memory else 'off'}: fact in turn {run.ask_at}'s prompt {run.in_prompt}/{n}", end="")
            if run.answered:
                print(f"; answers naming it {run.right}/{run.answered}", end="")
            per = run.condensings / n
            tokens = sum(run.memory_tokens) / n
            print(f"; memory tokens in the scene {tokens:.0f}; condensings per conversation {per:.1f}", end="")
            if run.unreadable:
                print(f" (+{run.unreadable / n:.1f} failed: no usable answer)", end="")
            if run.condensing_prompt_tokens:
                mean = sum(run.condensing_prompt_tokens) / len(run.condensing_prompt_tokens)
                print(f" (prompt ~{mean:.0f} tokens each, estimate)", end="")
            print(f"; {took:.1f} s")
            if args.show_answers:
                for (told, asked, key), answer in zip(probes, run.answers):
                    print(f"    [{key}] {answer}")
    finally:
        if bundled is not None:
            await bundled.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answer", choices=("none", "bundled"), default="none", help="who answers turn 80 (none: check the prompt only)")
    parser.add_argument(
        "--answer-url", help="a model server that answers turn 80 instead (e.g. BD-RP on TGI; the layout is chosen as the bots choose it)"
    )
    parser.add_argument("--condenser", choices=("double", "bundled"), default="double", help="who condenses (double: scripted, deterministic)")
    parser.add_argument("--probes", type=int, default=len(PROBES), help=f"how many of the {len(PROBES)} facts to probe")
    parser.add_argument("--condense-check", action="store_true", help="only send five condensing tasks to the bundled model and count the readable answers")
    parser.add_argument("--show-answers", action="store_true", help="print each answer of turn 80")
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
