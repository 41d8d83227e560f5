"""The bundled model with its server watched: a server that dies is reported in one sentence and
restarted once.

``SupervisedModel`` implements ``core.ports.ChatModel`` over an ``EmbeddedModelServer`` and a client
made for its URL. A watcher waits on the server process; when it ends without being asked to, the
next request (or the one it cut off) fails with a ``ModelError`` whose message is the sentence the
person reads: the bundled model stopped, how, whether it is being restarted, and where its log is.
A restart is a new process on a new port with a new client, so a request still retrying against
the dead server cannot be answered by the new one by accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, Sequence

from bots.llm.embedded import EmbeddedModelServer, describe_exit
from core.errors import ModelError
from core.ports import ChatModel
from core.prompt import estimate_tokens

log = logging.getLogger(__name__)

RESTARTS = 1
# A request that failed while the server was dying waits this long for the process to be seen
# gone, so that it reports the death rather than a refused connection. Only an upper bound: the
# exit is usually noticed at once.
DEATH_NOTICE_WAIT_S = 5.0


class SupervisedModel:
    """A ChatModel on the embedded server that notices the server's death and restarts it ``restarts`` times."""

    def __init__(
        self,
        server: EmbeddedModelServer,
        make_client: Callable[[str], ChatModel],
        *,
        restarts: int = RESTARTS,
    ) -> None:
        self.server = server
        self.restarts = restarts
        self.deaths = 0  # also the server's generation: a request notes it when it starts
        self._make_client = make_client
        self._client: ChatModel | None = None
        self._retired: list[ChatModel] = []  # clients of dead servers; requests may still be retrying on them
        self._watcher: asyncio.Task[None] | None = None
        self._restarting: asyncio.Task[None] | None = None
        self._death = asyncio.Event()  # set when the current process ends
        self._last_death = ""  # the sentence about the newest death
        self._told = True  # whether a request has carried that sentence yet
        self._given_up: str | None = None  # set once no restart is left: every request fails with it
        self._closed = False

    # ---- life -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the server and the client for it."""
        await self.server.start()
        self._attach()

    async def close(self) -> None:
        """Stop watching, close the client, stop the server. Safe to call twice."""
        self._closed = True
        for task in (self._restarting, self._watcher):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        clients = self._retired + ([self._client] if self._client is not None else [])
        self._client, self._retired = None, []
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
        await self.server.stop()

    async def __aenter__(self) -> "SupervisedModel":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """Where the current server answers."""
        return self.server.base_url

    # ---- ChatModel --------------------------------------------------------------------------

    async def stream(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        stop: Sequence[str] = (),
    ) -> AsyncIterator[str]:
        """The client's stream; a server death before or during it becomes the one-sentence ModelError."""
        client, generation, death = await self._usable()
        try:
            deltas = client.stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop)
            async with contextlib.aclosing(deltas):  # type: ignore[type-var]
                async for delta in deltas:
                    yield delta
        except ModelError as exc:
            raise await self._explain(exc, generation, death) from exc

    async def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        json_schema: Mapping[str, Any] | None = None,
        analysis_first: bool = False,
    ) -> str:
        client, generation, death = await self._usable()
        try:
            return await client.complete(
                messages, max_tokens=max_tokens, temperature=temperature, json_schema=json_schema, analysis_first=analysis_first
            )
        except ModelError as exc:
            raise await self._explain(exc, generation, death) from exc

    async def count_tokens(self, text: str) -> int:
        """The client's count; the estimate while there is no server to ask (this never raises)."""
        client = self._client
        if client is None or self._closed or not self._told or self._given_up is not None:
            return estimate_tokens(text)
        return await client.count_tokens(text)

    # ---- supervision ------------------------------------------------------------------------

    def _attach(self) -> None:
        """A new client for the server's current URL, and a watcher on its process."""
        self._client = self._make_client(self.server.base_url)
        self._death = asyncio.Event()
        self._watcher = asyncio.create_task(self._watch(self.server.wait(), self._death), name="embedded-model-watcher")

    async def _watch(self, exited: Awaitable[int], death: asyncio.Event) -> None:
        returncode = await exited
        if self._closed:
            return
        self.deaths += 1
        how = describe_exit(returncode)
        where = self.server.log_path
        log.info("the embedded model server (pid %s) ended: %s; its log: %s", self.server.pid, how, where)
        if self.deaths <= self.restarts:
            self._last_death = f"the bundled model stopped ({how}) and is being restarted; its log is {where}"
            self._restarting = asyncio.create_task(self._restart(), name="embedded-model-restart")
        else:
            self._last_death = self._given_up = (
                f"the bundled model stopped again ({how}) and will not be restarted: restart personae to try "
                f"once more, or set PERSONAE_LLM_URL to use another server; its log is {where}"
            )
        self._told = False
        death.set()

    async def _restart(self) -> None:
        if self._client is not None:
            self._retired.append(self._client)
            self._client = None
        await self.server.stop()  # reaps the dead process
        try:
            await self.server.start()
        except Exception as exc:  # noqa: BLE001 - whatever stops the restart, requests get the sentence
            # The details (the server's own output) are in its log, which the sentence names.
            log.info("the embedded model server could not be restarted: %s", exc)
            self._given_up = (
                "the bundled model stopped and could not be restarted: restart personae, or set "
                f"PERSONAE_LLM_URL to use another server; its log is {self.server.log_path}"
            )
            return
        log.info("the embedded model server is back at %s", self.server.base_url)
        self._attach()

    async def _usable(self) -> tuple[ChatModel, int, asyncio.Event]:
        """The client to use now, the generation it serves and the event its death sets. Raises the
        death sentence once after a death (a restart goes on meanwhile), and for good once no restart
        is left. Waits for a restart in progress."""
        if self._closed:
            raise ModelError("the model client is closed", retryable=False)
        if not self._told:
            self._told = True
            raise ModelError(self._last_death, retryable=False)
        if self._restarting is not None and not self._restarting.done():
            await asyncio.shield(self._restarting)
        if self._given_up is not None:
            raise ModelError(self._given_up, retryable=False)
        if self._client is None:
            raise ModelError("the bundled model is not running", retryable=False)
        return self._client, self.deaths, self._death

    async def _explain(self, exc: ModelError, generation: int, death: asyncio.Event) -> ModelError:
        """``exc``, or the death sentence when the server died under the request."""
        if self.deaths == generation and exc.status is None:
            # Refused, cut off or timed out: perhaps the process is dying and not yet seen gone.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(death.wait(), timeout=DEATH_NOTICE_WAIT_S)
        if self.deaths != generation:
            self._told = True
            return ModelError(self._last_death, retryable=False)
        return exc
