"""Several model servers behind one ``core.ports.ChatModel`` (PERSONAE_LLM_URL listing several).

Each request goes to the healthy server with the fewest requests in flight from this pool. A
server that fails (it cannot be reached, answers 5xx, or times out twice running) is taken out, and
a background probe with backoff asks it ``/v1/models`` until it answers, then puts it back. A
server taken out for timeouts is probed with a one-token reply instead (a hung server may still
answer ``/v1/models``), and its backoff starts where the last take-out left it until it has served
``SETTLE_TURNS`` requests. A busy answer (429/503) sends the request to the next server at once
(the client waits out its ``Retry-After`` only when no other server is left) and cools the busy one
down for its ``Retry-After`` (else a growing backoff). A request that failed before its first text
goes to the next server (one that could not connect is not retried on the same server while another
is healthy); while every server is out, requests still try them all (a probe may lag behind a recovery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Sequence

from bots.llm.client import ModelClient, ServerBusy, ServerNotReached
from core.errors import ModelError

log = logging.getLogger(__name__)

PROBE_FIRST_S = 1.0
PROBE_LONGEST_S = 30.0
TIMEOUTS_OUT = 2  # timeouts in a row that take a server out
PROBE_REPLY_TIMEOUT_S = 10.0  # the most the one-token probe of a server taken out for timeouts waits
SETTLE_TURNS = 3  # requests a server serves after coming back before its backoff starts afresh


class ModelPool:
    def __init__(
        self,
        clients: Sequence[ModelClient],
        *,
        probe_first_s: float = PROBE_FIRST_S,
        probe_longest_s: float = PROBE_LONGEST_S,
        timeouts_out: int = TIMEOUTS_OUT,
        probe_reply_timeout_s: float = PROBE_REPLY_TIMEOUT_S,
        settle_turns: int = SETTLE_TURNS,
    ) -> None:
        if not clients:
            raise ValueError("a model pool needs at least one server")
        self.clients = list(clients)
        self.probe_first_s = probe_first_s
        self.probe_longest_s = probe_longest_s
        self.timeouts_out = timeouts_out
        self.probe_reply_timeout_s = probe_reply_timeout_s
        self.settle_turns = settle_turns
        self.busy = [0] * len(self.clients)  # requests in flight per server, from this pool
        self.sent = [0] * len(self.clients)  # requests sent per server, ever
        self._timeouts = [0] * len(self.clients)
        self._outs = [0] * len(self.clients)  # take-outs since the server last settled (its backoff step)
        self._served = [0] * len(self.clients)  # requests served since it last came back
        self._busy_streak = [0] * len(self.clients)  # busy answers in a row
        self._cool_until = [0.0] * len(self.clients)  # monotonic time a busy server is left alone until
        self._probes: dict[int, asyncio.Task[None]] = {}
        self.where = ", ".join(c.where for c in self.clients)
        for index, client in enumerate(self.clients):
            # A request that did not reach a server goes to the next one at once, not after
            # PERSONAE_LLM_RETRIES tries; the last healthy one still retries.
            client.elsewhere = lambda index=index: any(self.healthy(i) for i in range(len(self.clients)) if i != index)

    def __getattr__(self, name: str) -> Any:
        # What callers read of one client (layout, model, dialect, ...): the first server's.
        if name.startswith("__") or name == "clients":
            raise AttributeError(name)
        return getattr(self.clients[0], name)

    def healthy(self, index: int) -> bool:
        return index not in self._probes

    def cooling(self, index: int) -> bool:
        """Whether the server answered busy and is left alone for its ``Retry-After`` (or a backoff)."""
        return self._cool_until[index] > time.monotonic()

    def backoff_s(self, index: int) -> float:
        """The first wait of the server's next probe (or busy cool-down): grows with each take-out."""
        return min(self.probe_first_s * 2 ** max(0, self._outs[index] - 1), self.probe_longest_s)

    def _choose(self, tried: set[int]) -> int | None:
        left = [i for i in range(len(self.clients)) if i not in tried]
        up = [i for i in left if self.healthy(i) and not self.cooling(i)] or [i for i in left if self.healthy(i)] or left
        if not up:
            return None
        return min(up, key=lambda i: (self.busy[i], self.sent[i]))

    # ---- ChatModel --------------------------------------------------------------------------

    async def stream(
        self, messages: Sequence[Mapping[str, str]], *, max_tokens: int, temperature: float, stop: Sequence[str] = ()
    ) -> AsyncIterator[str]:
        tried: set[int] = set()
        while True:
            index = self._pick(tried)
            client = self.clients[index]
            yielded = False
            try:
                stream = client.stream(
                    messages, max_tokens=max_tokens, temperature=temperature, stop=stop, busy_resends=self._last(tried)
                )
                async with contextlib.aclosing(stream):  # type: ignore[type-var]
                    async for delta in stream:
                        yielded = True
                        yield delta
                self._succeeded(index)
                return
            except ModelError as exc:
                if not self._failed(index, exc) or yielded or len(tried) == len(self.clients):
                    raise
            finally:
                self.busy[index] -= 1

    async def complete(self, messages: Sequence[Mapping[str, str]], **options: Any) -> str:
        return await self._each(lambda client, last: client.complete(messages, **options, busy_resends=last))

    async def count_tokens(self, text: str) -> int:
        index = self._choose(set())
        return await self.clients[index or 0].count_tokens(text)

    async def close(self) -> None:
        for task in self._probes.values():
            task.cancel()
        await asyncio.gather(*self._probes.values(), return_exceptions=True)
        self._probes.clear()
        for client in self.clients:
            await client.close()

    # ---- health -----------------------------------------------------------------------------

    def _pick(self, tried: set[int]) -> int:
        index = self._choose(tried)
        if index is None:  # not reached: callers stop once every server was tried
            raise ModelError("no model server is left to try (PERSONAE_LLM_URL)", retryable=True)
        tried.add(index)
        self.busy[index] += 1
        self.sent[index] += 1
        return index

    def _last(self, tried: set[int]) -> bool:
        """Whether no usable server is left untried (then the client may wait out a busy answer)."""
        return not any(
            self.healthy(i) and not self.cooling(i) for i in range(len(self.clients)) if i not in tried
        )

    async def _each(self, call: Callable[[ModelClient, bool], Awaitable[str]]) -> str:
        tried: set[int] = set()
        while True:
            index = self._pick(tried)
            try:
                answer = await call(self.clients[index], self._last(tried))
                self._succeeded(index)
                return answer
            except ModelError as exc:
                if not self._failed(index, exc) or len(tried) == len(self.clients):
                    raise
            finally:
                self.busy[index] -= 1

    def _succeeded(self, index: int) -> None:
        self._timeouts[index] = 0
        self._busy_streak[index] = 0
        self._served[index] += 1
        if self._served[index] >= self.settle_turns:
            self._outs[index] = 0  # it has served a while: a later take-out starts from the first backoff

    def _failed(self, index: int, error: ModelError) -> bool:
        """Note a failure; True when it is the server's (then the request may go to another)."""
        if isinstance(error, ServerBusy):
            self._cool_down(index, error)  # busy, not broken: left alone for a while, no probe
            return True
        if isinstance(error, ServerNotReached) or (error.status is not None and error.status >= 500):
            self._take_out(index, error)
            return True
        if error.status is None and error.retryable:  # a timeout or a connection cut off
            self._timeouts[index] += 1
            if self._timeouts[index] >= self.timeouts_out:
                self._take_out(index, error, reply=True)
            return True
        return False  # the request itself was refused (4xx): no other server would take it

    def _cool_down(self, index: int, error: ServerBusy) -> None:
        if len(self.clients) == 1:
            return
        self._busy_streak[index] += 1
        self._served[index] = 0
        wait = error.retry_after_s
        if wait is None:
            wait = min(self.probe_first_s * 2 ** (self._busy_streak[index] - 1), self.probe_longest_s)
        wait = min(wait, self.probe_longest_s)
        self._cool_until[index] = max(self._cool_until[index], time.monotonic() + wait)
        log.info("model server %s is busy (%s); requests go elsewhere for %.1f s", self.clients[index].where, error, wait)

    def _take_out(self, index: int, error: ModelError, *, reply: bool = False) -> None:
        if index in self._probes or len(self.clients) == 1:
            return
        self._outs[index] += 1
        self._served[index] = 0
        log.warning("model server %s is taken out (%s); probing it until it answers", self.clients[index].where, error)
        self._probes[index] = asyncio.get_running_loop().create_task(self._probe(index, reply=reply))

    async def _probe(self, index: int, *, reply: bool = False) -> None:
        """Until the server answers: ``/v1/models``, or with ``reply`` (taken out for timeouts) a one-token reply."""
        delay = self.backoff_s(index)
        client = self.clients[index]
        while True:
            await asyncio.sleep(delay)
            if reply:
                timeout_s = min(self.probe_reply_timeout_s, client.first_token_timeout_s)
                if await client.generates(timeout_s):
                    break
            elif await client.reachable():
                break
            delay = min(delay * 2, self.probe_longest_s)
        self._timeouts[index] = 0
        self._probes.pop(index, None)
        log.warning("model server %s answers again; it is back in", client.where)
