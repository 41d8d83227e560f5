"""Conversation messages: what the model sees as history."""

from __future__ import annotations

import datetime as dt

import asyncpg
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from core.errors import NotFound
from core.events import ConversationKey
from core.state import StoredMessage
from storage.sql import Db, utcnow
from storage.tables import messages as t

_COLUMNS = (t.c.id, t.c.role, t.c.content, t.c.tokens, t.c.created_at, t.c.platform_message_id)


def _in(conversation: ConversationKey):
    return sa.and_(
        t.c.character_id == conversation.character_id,
        t.c.platform == conversation.platform,
        t.c.channel_id == conversation.channel_id,
        t.c.user_id == conversation.user_id,
    )


# The hot-path statements, sent with the driver itself on PostgreSQL (see Db.pg_fetch): one
# multi-row INSERT is one round trip and atomic.
_INSERT_PG = (
    "INSERT INTO messages (character_id, platform, channel_id, user_id, created_at, "
    "role, content, tokens, platform_message_id) VALUES "
)
_USER_ONLY_PG = _INSERT_PG + "($1, $2, $3, $4, $5, 'user', $6, $7, $8) RETURNING id, role"
_EXCHANGE_PG = _INSERT_PG + (
    "($1, $2, $3, $4, $5, 'user', $6, $7, $8), ($1, $2, $3, $4, $5, 'assistant', $9, $10, NULL) RETURNING id, role"
)


class SqlMessageRepository:
    """``core.ports.MessageRepository`` on the ``messages`` table."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def recent(self, conversation: ConversationKey, limit: int) -> list[StoredMessage]:
        if limit <= 0:
            return []
        statement = sa.select(*_COLUMNS).where(_in(conversation)).order_by(t.c.id.desc()).limit(limit)
        async with self._db.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [
            StoredMessage(
                id=row.id,
                role=row.role,
                content=row.content,
                tokens=row.tokens,
                created_at=row.created_at,
                platform_message_id=row.platform_message_id,
            )
            for row in reversed(rows)
        ]

    async def add_exchange(
        self,
        conversation: ConversationKey,
        user: tuple[str, int, str | None],
        reply: tuple[str, int] | None,
    ) -> tuple[int, int | None]:
        # Hot path: one multi-row INSERT ... RETURNING on an autocommit connection is one round trip,
        # and a single statement is atomic, so both rows are stored or neither.
        now = utcnow()
        common = {
            "character_id": conversation.character_id,
            "platform": conversation.platform,
            "channel_id": conversation.channel_id,
            "user_id": conversation.user_id,
            "created_at": now,
        }
        text, tokens, platform_message_id = user
        if self._db.postgres:
            return await self._add_exchange_pg(conversation, user, reply, now)
        rows = [{**common, "role": "user", "content": text, "tokens": tokens, "platform_message_id": platform_message_id}]
        if reply is not None:
            rows.append({**common, "role": "assistant", "content": reply[0], "tokens": reply[1], "platform_message_id": None})
        # Rows go as parameters (SQLAlchemy's "insertmanyvalues": still one INSERT ... VALUES (...), (...)),
        # so the compiled statement is cached instead of built anew for every turn.
        # On SQLite that may become one INSERT per row, so there both go in a transaction.
        statement = sa.insert(t).returning(t.c.id, t.c.role, sort_by_parameter_order=True)
        try:
            async with self._db.connect() if self._db.postgres else self._db.begin() as conn:
                returned = (await conn.execute(statement, rows)).all()
        except IntegrityError:
            raise NotFound(f"character {conversation.character_id} does not exist (was it deleted?)") from None
        # RETURNING order is not promised for multi-row VALUES; the role tells the rows apart.
        ids = {row.role: row.id for row in returned}
        return ids["user"], ids.get("assistant")

    async def _add_exchange_pg(
        self, c: ConversationKey, user: tuple[str, int, str | None], reply: tuple[str, int] | None, now: dt.datetime
    ) -> tuple[int, int | None]:
        args: list[object] = [c.character_id, c.platform, c.channel_id, c.user_id, now, *user]
        if reply is not None:
            args += reply
        try:
            rows = await self._db.pg_fetch(_EXCHANGE_PG if reply is not None else _USER_ONLY_PG, *args)
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(f"character {c.character_id} does not exist (was it deleted?)") from None
        ids = {row["role"]: row["id"] for row in rows}
        return ids["user"], ids.get("assistant")

    async def add_greeting(self, conversation: ConversationKey, content: str, tokens: int) -> int:
        c = conversation
        statement = sa.insert(t).values(
            character_id=c.character_id, platform=c.platform, channel_id=c.channel_id, user_id=c.user_id,
            role="assistant", content=content, tokens=tokens, platform_message_id=None, created_at=utcnow(),
        ).returning(t.c.id)
        try:
            async with self._db.connect() as conn:
                return (await conn.execute(statement)).scalar_one()
        except IntegrityError:
            raise NotFound(f"character {c.character_id} does not exist (was it deleted?)") from None

    async def delete_message(self, message_id: int) -> bool:
        async with self._db.connect() as conn:
            result = await conn.execute(sa.delete(t).where(t.c.id == message_id))
        return result.rowcount > 0

    async def replace_reply(self, message_id: int, content: str, tokens: int) -> bool:
        statement = (
            sa.update(t)
            .where(t.c.id == message_id, t.c.role == "assistant")
            .values(content=content, tokens=tokens)
        )
        async with self._db.connect() as conn:
            result = await conn.execute(statement)
        return result.rowcount > 0

    async def delete_conversation(self, conversation: ConversationKey) -> int:
        async with self._db.connect() as conn:
            result = await conn.execute(sa.delete(t).where(_in(conversation)))
        return result.rowcount
