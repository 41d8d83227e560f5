"""Builders for the storage tests, and a TCP proxy that can cut Redis off mid-test."""

from __future__ import annotations

import asyncio
from typing import Any

from core.cards import new_card
from core.emotions import EmotionState
from core.events import ConversationKey, PersonKey
from core.state import RelationshipState, StateChange


def card(name: str = "Hamlet", **changes: Any) -> dict[str, Any]:
    return new_card(name=name, world="Denmark", traits=["brooding", "witty"], mbti="INFP", style=["poetic"], **changes)


def state(character_id: int, user_id: str = "u1", *, version: int = 0, happiness: int = 0, intimacy: int = 3) -> RelationshipState:
    return RelationshipState(character_id, "discord", user_id, EmotionState(happiness=happiness), intimacy, version=version)


def change(before: RelationshipState, *, happiness: int, appraiser: str = "test", message_id: int | None = None) -> StateChange:
    after = RelationshipState(
        before.character_id, before.platform, before.user_id, EmotionState(happiness=happiness), before.intimacy,
        version=before.version + 1,
    )
    return StateChange(before.character_id, before.platform, before.user_id, before, after, appraiser, message_id, f"to {happiness}")


def conversation(character_id: int, user_id: str = "u1", channel_id: str = "c1") -> ConversationKey:
    return ConversationKey(character_id, "discord", channel_id, user_id)


def person(character_id: int, user_id: str = "u1") -> PersonKey:
    return PersonKey(character_id, "discord", user_id)


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a server; ``stop`` cuts every connection, as an outage would."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers -= {writer, up_writer}
