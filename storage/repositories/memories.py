"""Long-term memories per conversation scope, and each conversation's condensed mark."""

from __future__ import annotations

from typing import Sequence

import sqlalchemy as sa

from core.events import ConversationKey
from core.memory import Line, Memory, NewMemory
from core.state import MessageStatus
from storage.sql import Db, utcnow
from storage.tables import memories as t
from storage.tables import memory_marks as marks
from storage.tables import messages as msg

_COLUMNS = (t.c.id, t.c.kind, t.c.text, t.c.seq_from, t.c.seq_to, t.c.tokens, t.c.created_at)


def _in(table: sa.Table, conversation: ConversationKey):
    c = conversation
    return sa.and_(
        table.c.character_id == c.character_id, table.c.platform == c.platform,
        table.c.channel_id == c.channel_id, table.c.user_id == c.user_id,
    )


# The history as the model sees it (``storage.repositories.messages``): answered or failed
# messages of the person, and the character's replies.
_IN_HISTORY = sa.or_(msg.c.status.is_(None), msg.c.status.in_((MessageStatus.ANSWERED.value, MessageStatus.FAILED.value)))


def _memory(row: sa.Row) -> Memory:
    return Memory(row.id, row.kind, row.text, row.seq_from, row.seq_to, row.tokens, row.created_at)


class SqlMemoryRepository:
    """``core.ports.MemoryRepository`` on ``memories`` and ``memory_marks``."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def list(self, conversation: ConversationKey) -> list[Memory]:
        statement = sa.select(*_COLUMNS).where(_in(t, conversation)).order_by(t.c.id)
        async with self._db.connect() as conn:
            return [_memory(row) for row in (await conn.execute(statement)).all()]

    async def of_person(self, character_id: int, platform: str, user_id: str) -> dict[str, list[Memory]]:
        statement = (
            sa.select(t.c.channel_id, *_COLUMNS)
            .where(t.c.character_id == character_id, t.c.platform == platform, t.c.user_id == user_id)
            .order_by(t.c.channel_id, t.c.id)
        )
        out: dict[str, list[Memory]] = {}
        async with self._db.connect() as conn:
            for row in (await conn.execute(statement)).all():
                out.setdefault(row.channel_id, []).append(_memory(row))
        return out

    async def uncondensed(self, conversation: ConversationKey, keep: int, limit: int) -> tuple[int, list[Line]]:
        async with self._db.connect() as conn:
            mark = await conn.scalar(sa.select(marks.c.through_seq).where(_in(marks, conversation))) or 0
            where = [_in(msg, conversation), _IN_HISTORY, msg.c.seq > mark]
            if keep > 0:
                # The oldest message still in the window: what comes before it has left.
                oldest_kept = await conn.scalar(
                    sa.select(msg.c.seq).where(_in(msg, conversation), _IN_HISTORY)
                    .order_by(msg.c.seq.desc(), msg.c.id.desc()).offset(keep - 1).limit(1)
                )
                if oldest_kept is None:
                    return mark, []  # the whole conversation fits in the window
                where.append(msg.c.seq < oldest_kept)
            rows = (
                await conn.execute(
                    sa.select(msg.c.seq, msg.c.role, msg.c.content).where(*where).order_by(msg.c.seq, msg.c.id).limit(max(limit, 0))
                )
            ).all()
        return mark, [Line(row.seq, row.role, row.content) for row in rows]

    async def condensed(
        self, conversation: ConversationKey, mark: int, through: int, add: Sequence[NewMemory], remove: Sequence[int]
    ) -> bool:
        c = conversation
        now = utcnow()
        async with self._db.begin() as conn:
            if mark == 0:
                inserted = await conn.execute(
                    self._db.insert(marks)
                    .values(character_id=c.character_id, platform=c.platform, channel_id=c.channel_id, user_id=c.user_id,
                            through_seq=through, updated_at=now)
                    .on_conflict_do_nothing(index_elements=[marks.c.character_id, marks.c.platform, marks.c.channel_id, marks.c.user_id])
                )
                moved = inserted.rowcount == 1
                if not moved:  # another condensing stored a mark first: this one moves it only if it is still 0
                    moved = await self._move(conn, c, mark, through, now)
            else:
                moved = await self._move(conn, c, mark, through, now)
            if not moved:
                return False  # the transaction ends without writing anything else
            if remove:
                await conn.execute(sa.delete(t).where(_in(t, c), t.c.id.in_(list(remove))))
            if add:
                await conn.execute(
                    sa.insert(t),
                    [
                        dict(character_id=c.character_id, platform=c.platform, channel_id=c.channel_id, user_id=c.user_id,
                             kind=m.kind, text=m.text, tokens=m.tokens, seq_from=m.seq_from, seq_to=m.seq_to, created_at=now)
                        for m in add
                    ],
                )
        return True

    @staticmethod
    async def _move(conn, c: ConversationKey, mark: int, through: int, now) -> bool:
        result = await conn.execute(
            sa.update(marks).where(_in(marks, c), marks.c.through_seq == mark).values(through_seq=through, updated_at=now)
        )
        return result.rowcount == 1

    async def delete(self, conversation: ConversationKey, memory_id: int) -> bool:
        async with self._db.connect() as conn:
            result = await conn.execute(sa.delete(t).where(_in(t, conversation), t.c.id == memory_id))
        return result.rowcount == 1

    async def reset(self, conversation: ConversationKey) -> None:
        async with self._db.connect() as conn:
            await conn.execute(sa.delete(marks).where(_in(marks, conversation)))
