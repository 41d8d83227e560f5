"""Conversation messages: what the model sees as history."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from core.errors import NotFound
from core.events import CHARACTER_USER, ConversationKey
from core.state import ChannelLine, Intake, MessageStatus, StoredMessage
from storage.sql import Db, utcnow
from storage.tables import messages as t
from storage.tables import reply_messages as shown_t

_COLUMNS = (t.c.id, t.c.role, t.c.content, t.c.tokens, t.c.created_at, t.c.platform_message_id)


def _in(conversation: ConversationKey, table: sa.TableClause | sa.Alias = t):
    return sa.and_(
        table.c.character_id == conversation.character_id,
        table.c.platform == conversation.platform,
        table.c.channel_id == conversation.channel_id,
        table.c.user_id == conversation.user_id,
    )


# The replies a chain starts from (``chains_from``), on an alias of their own: the statements they
# are nested in read ``messages`` too, which must not correlate with them.
_started = t.alias("started")


def _replies(where: sa.ColumnElement[bool]) -> sa.Select:
    return sa.select(_started.c.id).where(where, _started.c.role == "assistant")


# What the model sees as history: not a message still being answered, nor one a notice answered.
_IN_HISTORY = sa.or_(t.c.status.is_(None), t.c.status.in_((MessageStatus.ANSWERED.value, MessageStatus.FAILED.value)))
# A line said in a bound channel to no character: in the channel's scene, in no history.
_OVERHEARD = t.c.status == MessageStatus.OVERHEARD.value
_INTAKE_COLUMNS = (
    t.c.id, t.c.character_id, t.c.platform, t.c.channel_id, t.c.user_id, t.c.content, t.c.tokens,
    t.c.platform_message_id, t.c.display_name, t.c.created_at, t.c.status, t.c.claimed_by,
)


# A row joins its conversation's history as its newest: one more than the highest ``seq`` there
# (the id is arrival order; a message stored while an older one is answered joins after its reply).
# Turns of one conversation run one at a time (its lock), so two rows rarely race for a place; if
# they do, they tie and the id decides.
_m = t.alias("m")


def _next_seq(conversation: ConversationKey, step: int = 1):
    c = conversation
    return (
        sa.select(sa.func.coalesce(sa.func.max(_m.c.seq), 0) + step)
        .where(
            _m.c.character_id == c.character_id, _m.c.platform == c.platform,
            _m.c.channel_id == c.channel_id, _m.c.user_id == c.user_id,
        )
        .scalar_subquery()
    )


# The hot-path statements, sent with the driver itself on PostgreSQL (see Db.pg_fetch): one
# multi-row INSERT is one round trip and atomic.
_INSERT_PG = (
    "INSERT INTO messages (character_id, platform, channel_id, user_id, created_at, "
    "role, content, tokens, platform_message_id, seq) VALUES "
)
_LAST_SEQ_PG = (
    "(SELECT coalesce(max(seq), 0) FROM messages WHERE character_id = $1 AND platform = $2::varchar "
    "AND channel_id = $3::varchar AND user_id = $4::varchar)"
)
_USER_ONLY_PG = _INSERT_PG + f"($1, $2, $3, $4, $5, 'user', $6, $7, $8, {_LAST_SEQ_PG} + 1) RETURNING id, role"
_EXCHANGE_PG = _INSERT_PG + (
    f"($1, $2, $3, $4, $5, 'user', $6, $7, $8, {_LAST_SEQ_PG} + 1), "
    f"($1, $2, $3, $4, $5, 'assistant', $9, $10, NULL, {_LAST_SEQ_PG} + 2) RETURNING id, role"
)
# Store a message as pending, or find the stored one (a redelivery): one statement either way. The
# second SELECT reads the snapshot from before the INSERT, so it sees only a row that was there.
_ACCEPT_PG = (
    "WITH new AS (INSERT INTO messages (character_id, platform, channel_id, user_id, created_at, role, content, "
    "tokens, platform_message_id, display_name, status, claimed_by) VALUES ($1, $2, $3, $4, $5, 'user', $6, $7, $8, $9, "
    "'pending', $10) "
    "ON CONFLICT (platform, channel_id, platform_message_id) DO NOTHING RETURNING id, character_id, user_id, content, "
    "tokens, display_name, created_at, status, claimed_by) "
    "SELECT true AS first, * FROM new UNION ALL "
    "SELECT false, id, character_id, user_id, content, tokens, display_name, created_at, status, claimed_by FROM messages "
    "WHERE platform = $2 AND channel_id = $3 AND platform_message_id = $8 AND NOT EXISTS (SELECT 1 FROM new)"
)
# ``_ACCEPT_PG`` for a character's answer to another's line (trigger ``conversation``): stored only
# while that line (the stored reply $11) is there, locked FOR SHARE until the statement commits, so
# that a /forget, /reset, Regenerate or deleted reply, which lock it FOR UPDATE before deleting the
# chains it started (``delete_chains``), either finds the copy or makes this store nothing.
_ACCEPT_ANSWERING_PG = (
    "WITH line AS (SELECT id FROM messages WHERE id = $11::bigint AND role = 'assistant' FOR SHARE), "
    "new AS (INSERT INTO messages (character_id, platform, channel_id, user_id, created_at, role, content, "
    "tokens, platform_message_id, display_name, status, claimed_by) SELECT $1::integer, $2::varchar, $3::varchar, "
    "$4::varchar, $5::timestamptz, 'user', $6::text, $7::integer, $8::varchar, $9::varchar, 'pending', $10::varchar "
    "FROM line "
    "ON CONFLICT (platform, channel_id, platform_message_id) DO NOTHING RETURNING id, character_id, user_id, content, "
    "tokens, display_name, created_at, status, claimed_by) "
    "SELECT true AS first, * FROM new UNION ALL "
    "SELECT false, id, character_id, user_id, content, tokens, display_name, created_at, status, claimed_by FROM messages "
    "WHERE platform = $2 AND channel_id = $3 AND platform_message_id = $8 AND NOT EXISTS (SELECT 1 FROM new) "
    "AND EXISTS (SELECT 1 FROM line)"
)
# Settle a pending message and store its reply: one statement, so both happen or neither does, and
# only while the message is still pending (a second answer stores nothing). The message joins the
# history then (its ``seq``), its reply right after it.
_SETTLE_PG = (
    "UPDATE messages SET status = $2, seq = (SELECT coalesce(max(m.seq), 0) + 1 FROM messages m "
    "WHERE m.character_id = messages.character_id AND m.platform = messages.platform "
    "AND m.channel_id = messages.channel_id AND m.user_id = messages.user_id) "
    "WHERE id = $1 AND status = 'pending' RETURNING id"
)
_SETTLE_WITH_REPLY_PG = (
    "WITH settled AS (" + _SETTLE_PG.replace("RETURNING id", "RETURNING character_id, platform, channel_id, user_id, seq") + ") "
    "INSERT INTO messages (character_id, platform, channel_id, user_id, created_at, role, content, tokens, seq) "
    "SELECT character_id, platform, channel_id, user_id, $3, 'assistant', $4, $5, seq + 1 FROM settled RETURNING id"
)


class SqlMessageRepository:
    """``core.ports.MessageRepository`` on the ``messages`` table."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def recent(self, conversation: ConversationKey, limit: int) -> list[StoredMessage]:
        if limit <= 0:
            return []
        statement = (
            sa.select(*_COLUMNS).where(_in(conversation), _IN_HISTORY).order_by(t.c.seq.desc(), t.c.id.desc()).limit(limit)
        )
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

    async def position(self, conversation: ConversationKey, message_id: int) -> int:
        seq = sa.select(_m.c.seq).where(_m.c.id == message_id).scalar_subquery()
        statement = (
            sa.select(sa.func.count())
            .select_from(t)
            .where(_in(conversation), _IN_HISTORY, t.c.role == "user", t.c.seq <= seq)
        )
        async with self._db.connect() as conn:
            return int((await conn.execute(statement)).scalar_one())

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
        rows = [{**common, "role": "user", "content": text, "tokens": tokens, "platform_message_id": platform_message_id, "step": 1}]
        if reply is not None:
            rows.append({**common, "role": "assistant", "content": reply[0], "tokens": reply[1], "platform_message_id": None, "step": 2})
        # Rows go as parameters (SQLAlchemy's "insertmanyvalues": still one INSERT ... VALUES (...), (...)),
        # so the compiled statement is cached instead of built anew for every turn.
        # On SQLite that may become one INSERT per row, so there both go in a transaction.
        last = _next_seq(conversation, 0)
        statement = (
            sa.insert(t)
            .values(seq=last + sa.bindparam("step", type_=sa.Integer))
            .returning(t.c.id, t.c.role, sort_by_parameter_order=True)
        )
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
        import asyncpg  # PostgreSQL only: a SQLite database never loads the driver

        args: list[object] = [c.character_id, c.platform, c.channel_id, c.user_id, now, *user]
        if reply is not None:
            args += reply
        try:
            rows = await self._db.pg_fetch(_EXCHANGE_PG if reply is not None else _USER_ONLY_PG, *args)
        except asyncpg.ForeignKeyViolationError:
            raise NotFound(f"character {c.character_id} does not exist (was it deleted?)") from None
        ids = {row["role"]: row["id"] for row in rows}
        return ids["user"], ids.get("assistant")

    async def accept(
        self, conversation: ConversationKey, text: str, tokens: int, platform_message_id: str, display_name: str,
        owner: str | None = None, *, answering: int | None = None,
    ) -> Intake | None:
        c = conversation
        now = utcnow()
        if self._db.postgres:
            import asyncpg

            args = [c.character_id, c.platform, c.channel_id, c.user_id, now, text, tokens, platform_message_id, display_name, owner]
            try:
                if answering is None:
                    rows = await self._db.pg_fetch(_ACCEPT_PG, *args)
                else:
                    rows = await self._db.pg_fetch(_ACCEPT_ANSWERING_PG, *args, answering)
            except asyncpg.ForeignKeyViolationError:
                raise NotFound(f"character {c.character_id} does not exist (was it deleted?)") from None
            if not rows:
                return None  # the line answered is gone
            row = rows[0]
            return Intake(
                id=row["id"],
                conversation=ConversationKey(row["character_id"], c.platform, c.channel_id, row["user_id"]),
                text=row["content"], tokens=row["tokens"], platform_message_id=platform_message_id,
                display_name=row["display_name"] or display_name, created_at=row["created_at"],
                status=MessageStatus(row["status"] or MessageStatus.ANSWERED), first=row["first"],
                owner=row["claimed_by"],
            )
        values = dict(
            character_id=c.character_id, platform=c.platform, channel_id=c.channel_id, user_id=c.user_id,
            created_at=now, role="user", content=text, tokens=tokens, platform_message_id=platform_message_id,
            display_name=display_name, status=MessageStatus.PENDING.value, claimed_by=owner,
        )
        if answering is None:
            insert = self._db.insert(t).values(**values)
        else:
            # Only while the line answered is there, in the same statement (SQLite: one writer at a time).
            line = sa.select(*(sa.literal(v, t.c[k].type).label(k) for k, v in values.items())).where(
                sa.exists().where(_m.c.id == answering, _m.c.role == "assistant")
            )
            insert = self._db.insert(t).from_select(list(values), line)
        insert = insert.on_conflict_do_nothing(
            index_elements=[t.c.platform, t.c.channel_id, t.c.platform_message_id]
        ).returning(t.c.id)
        try:
            async with self._db.connect() as conn:
                new_id = (await conn.execute(insert)).scalar()
                if new_id is not None:
                    return Intake(new_id, c, text, tokens, platform_message_id, display_name, now, owner=owner)
                found = (
                    await conn.execute(
                        sa.select(*_INTAKE_COLUMNS).where(
                            t.c.platform == c.platform,
                            t.c.channel_id == c.channel_id,
                            t.c.platform_message_id == platform_message_id,
                        )
                    )
                ).one_or_none()
        except IntegrityError:
            raise NotFound(f"character {c.character_id} does not exist (was it deleted?)") from None
        if found is None:
            return None  # the line answered is gone
        return _intake(found, first=False)

    async def finish(
        self, intake: Intake, status: MessageStatus, reply: tuple[str, int] | None, greeting: tuple[str, int] | None = None
    ) -> tuple[int, int | None, int | None] | None:
        if greeting is not None:
            return await self._finish_first_contact(intake, status, reply, greeting)
        if self._db.postgres:
            if reply is None:
                rows = await self._db.pg_fetch(_SETTLE_PG, intake.id, status.value)
                return (intake.id, None, None) if rows else None
            rows = await self._db.pg_fetch(_SETTLE_WITH_REPLY_PG, intake.id, status.value, utcnow(), *reply)
            return (intake.id, rows[0]["id"], None) if rows else None
        async with self._db.begin() as conn:
            if not await _settle(conn, intake, status):
                return None
            reply_id = await _insert_reply(conn, intake.conversation, reply) if reply is not None else None
        return intake.id, reply_id, None

    async def _finish_first_contact(
        self, intake: Intake, status: MessageStatus, reply: tuple[str, int] | None, greeting: tuple[str, int]
    ) -> tuple[int, int | None, int | None] | None:
        """The greeting opens the conversation, so it joins the history before the message (its
        ``seq``), the message keeping its row (and id) and the reply coming after it."""
        async with self._db.begin() as conn:
            pending = sa.and_(t.c.id == intake.id, t.c.status == MessageStatus.PENDING.value)
            # Lock the message first (PostgreSQL: a second finish waits here, then finds it settled).
            if (await conn.execute(sa.update(t).where(pending).values(status=MessageStatus.PENDING.value))).rowcount == 0:
                return None
            greeting_id = await _insert_reply(conn, intake.conversation, greeting)
            if not await _settle(conn, intake, status):
                return None
            reply_id = await _insert_reply(conn, intake.conversation, reply) if reply is not None else None
        return intake.id, reply_id, greeting_id

    async def overhear(
        self, conversation: ConversationKey, text: str, tokens: int, platform_message_id: str, display_name: str, keep: int
    ) -> int | None:
        c = conversation
        insert = (
            self._db.insert(t)
            .values(
                character_id=c.character_id, platform=c.platform, channel_id=c.channel_id, user_id=c.user_id,
                created_at=utcnow(), role="user", content=text, tokens=tokens, platform_message_id=platform_message_id,
                display_name=display_name, status=MessageStatus.OVERHEARD.value,
            )
            .on_conflict_do_nothing(index_elements=[t.c.platform, t.c.channel_id, t.c.platform_message_id])
            .returning(t.c.id)
        )
        in_channel = (t.c.platform == c.platform, t.c.channel_id == c.channel_id, _OVERHEARD)
        # The oldest of the channel's newest ``keep`` overheard lines (NULL while there are fewer):
        # read on the partial index ix_messages_overheard, ``keep`` entries at most.
        oldest_kept = (
            sa.select(_m.c.id)
            .where(_m.c.platform == c.platform, _m.c.channel_id == c.channel_id, _m.c.status == MessageStatus.OVERHEARD.value)
            .order_by(_m.c.id.desc())
            .offset(max(keep, 1) - 1)
            .limit(1)
            .scalar_subquery()
        )
        try:
            async with self._db.begin() as conn:
                new_id = (await conn.execute(insert)).scalar()
                if new_id is not None:
                    await conn.execute(sa.delete(t).where(*in_channel, t.c.id < oldest_kept))
        except IntegrityError:
            raise NotFound(f"character {c.character_id} does not exist (was it deleted?)") from None
        return new_id

    async def pending(self, platform: str, after_id: int = 0, limit: int = 100) -> list[Intake]:
        statement = (
            sa.select(*_INTAKE_COLUMNS)
            .where(t.c.platform == platform, t.c.status == MessageStatus.PENDING.value, t.c.id > after_id)
            .order_by(t.c.id)
            .limit(limit)
        )
        async with self._db.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [_intake(row, first=False) for row in rows]

    async def pending_before(self, conversation: ConversationKey, message_id: int, limit: int = 20) -> list[Intake]:
        statement = (
            sa.select(*_INTAKE_COLUMNS)
            .where(_in(conversation), t.c.id < message_id, t.c.status == MessageStatus.PENDING.value)
            .order_by(t.c.id)
            .limit(limit)
        )
        async with self._db.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [_intake(row, first=False) for row in rows]

    async def claim(self, message_id: int, owner_was: str | None, owner: str) -> bool:
        was = t.c.claimed_by.is_(None) if owner_was is None else t.c.claimed_by == owner_was
        statement = (
            sa.update(t)
            .where(t.c.id == message_id, t.c.status == MessageStatus.PENDING.value, was)
            .values(claimed_by=owner)
        )
        async with self._db.connect() as conn:
            result = await conn.execute(statement)
        return result.rowcount > 0

    async def add_greeting(self, conversation: ConversationKey, content: str, tokens: int) -> int:
        c = conversation
        statement = sa.insert(t).values(
            character_id=c.character_id, platform=c.platform, channel_id=c.channel_id, user_id=c.user_id,
            role="assistant", content=content, tokens=tokens, platform_message_id=None, created_at=utcnow(),
            seq=_next_seq(c),
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

    async def undo_exchange(self, conversation: ConversationKey, reply_message_id: int) -> bool:
        async with self._db.begin() as conn:
            this_reply = _replies(sa.and_(_started.c.id == reply_message_id, _in(conversation, _started)))
            await delete_chains(conn, this_reply, postgres=self._db.postgres)
            gone = (
                await conn.execute(
                    sa.delete(t)
                    .where(t.c.id == reply_message_id, t.c.role == "assistant", _in(conversation))
                    .returning(t.c.seq)
                )
            ).all()
            if not gone:
                return False
            seq = gone[0].seq
            # The person's messages this reply answered: those after the reply before it (history order).
            before = (
                sa.select(sa.func.coalesce(sa.func.max(_m.c.seq), 0))
                .where(
                    _m.c.character_id == conversation.character_id, _m.c.platform == conversation.platform,
                    _m.c.channel_id == conversation.channel_id, _m.c.user_id == conversation.user_id,
                    _m.c.role == "assistant", _m.c.seq < seq,
                )
                .scalar_subquery()
            )
            await conn.execute(
                sa.update(t)
                .where(_in(conversation), t.c.role == "user", t.c.seq < seq, t.c.seq > before, _IN_HISTORY)
                .values(status=MessageStatus.UNDONE.value)
            )
        return True

    async def replace_reply(self, message_id: int, content: str, tokens: int) -> bool:
        statement = (
            sa.update(t)
            .where(t.c.id == message_id, t.c.role == "assistant")
            .values(content=content, tokens=tokens)
        )
        async with self._db.begin() as conn:
            # The answers the old text got (trigger conversation) answered words no longer said.
            this_reply = _replies(_started.c.id == message_id)
            await delete_chains(conn, this_reply, postgres=self._db.postgres)
            result = await conn.execute(statement)
        return result.rowcount > 0

    async def channel_lines(
        self, platform: str, channel_id: str, *, before_id: int | None = None, exclude: ConversationKey | None = None,
        limit: int = 40,
    ) -> list[ChannelLine]:
        if limit <= 0:
            return []
        where = [t.c.platform == platform, t.c.channel_id == channel_id, sa.or_(_IN_HISTORY, _OVERHEARD)]
        # A character's copy of the line it answered is that line's reply (it is one line of the room,
        # read once): left out while the reply is recorded as shown in the platform message the copy
        # was stored under (a lookup on reply_messages' key, only for the characters' own rows).
        shown = shown_t.alias("copied")
        where.append(sa.not_(sa.and_(
            t.c.role == "user", t.c.user_id.startswith(CHARACTER_USER, autoescape=True),
            sa.exists().where(
                shown.c.platform == t.c.platform, shown.c.channel_id == t.c.channel_id,
                shown.c.platform_message_id == t.c.platform_message_id,
            ),
        )))
        if before_id is not None:
            where.append(t.c.id < before_id)
        if exclude is not None:
            # Overheard lines are the room's, whoever's key they are stored under: the person's own too.
            where.append(
                sa.or_(_OVERHEARD, sa.not_(sa.and_(t.c.character_id == exclude.character_id, t.c.user_id == exclude.user_id)))
            )
        statement = (
            sa.select(t.c.id, t.c.character_id, t.c.user_id, t.c.role, t.c.content, t.c.tokens, t.c.display_name)
            .where(*where)
            .order_by(t.c.id.desc())
            .limit(limit)
        )
        async with self._db.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [
            ChannelLine(row.id, row.character_id, row.user_id, row.role, row.content, row.tokens, row.display_name)
            for row in reversed(rows)
        ]

    async def last_partner(self, platform: str, channel_id: str, user_id: str) -> int | None:
        statement = (
            sa.select(t.c.character_id)
            .where(t.c.platform == platform, t.c.channel_id == channel_id, t.c.user_id == user_id, t.c.role == "user", _IN_HISTORY)
            .order_by(t.c.id.desc())
            .limit(1)
        )
        async with self._db.connect() as conn:
            return (await conn.execute(statement)).scalar()

    async def mark_shown(self, reply_message_id: int, platform: str, channel_id: str, platform_message_ids: list[str]) -> None:
        if not platform_message_ids:
            return
        rows = [
            {"platform": platform, "channel_id": channel_id, "platform_message_id": pid, "message_id": reply_message_id}
            for pid in dict.fromkeys(platform_message_ids)
        ]
        insert = self._db.insert(shown_t)
        statement = insert.on_conflict_do_update(
            index_elements=[shown_t.c.platform, shown_t.c.channel_id, shown_t.c.platform_message_id],
            set_={"message_id": insert.excluded.message_id},
        )
        try:
            async with self._db.begin() as conn:
                await conn.execute(statement, rows)
        except IntegrityError:
            return  # the reply is gone (undone, forgotten): nothing to remember

    async def reply_author(self, platform: str, channel_id: str, platform_message_id: str) -> int | None:
        statement = (
            sa.select(t.c.character_id)
            .select_from(shown_t.join(t, t.c.id == shown_t.c.message_id))
            .where(
                shown_t.c.platform == platform, shown_t.c.channel_id == channel_id,
                shown_t.c.platform_message_id == platform_message_id,
            )
        )
        async with self._db.connect() as conn:
            return (await conn.execute(statement)).scalar()

    async def shown_reply(self, platform: str, channel_id: str, platform_message_id: str) -> int | None:
        statement = sa.select(shown_t.c.message_id).where(
            shown_t.c.platform == platform, shown_t.c.channel_id == channel_id,
            shown_t.c.platform_message_id == platform_message_id,
        )
        async with self._db.connect() as conn:
            return (await conn.execute(statement)).scalar()

    async def delete_conversation(self, conversation: ConversationKey) -> int:
        async with self._db.begin() as conn:
            # First the characters' answers to each other its replies started (found through where
            # those replies were shown, which goes with them).
            its_replies = _replies(_in(conversation, _started))
            followed = await delete_chains(conn, its_replies, postgres=self._db.postgres)
            # The person's overheard lines stored under this key are the channel's, not this thread's.
            result = await conn.execute(sa.delete(t).where(_in(conversation), sa.or_(t.c.status.is_(None), sa.not_(_OVERHEARD))))
        return result.rowcount + followed


def _answers_line_shown_in(line: sa.Alias, shown_in: sa.Alias) -> sa.ColumnElement[bool]:
    """``line`` is a character's answer to the line shown in platform message ``shown_in``."""
    return sa.and_(
        line.c.platform == shown_in.c.platform, line.c.channel_id == shown_in.c.channel_id,
        line.c.platform_message_id == shown_in.c.platform_message_id, line.c.role == "user",
        line.c.user_id.startswith(CHARACTER_USER, autoescape=True),
    )


def _reply_to(user_row: sa.Alias, reply: sa.Alias) -> sa.ColumnElement[bool]:
    """``reply`` is the stored reply to ``user_row`` (settled with it: the next ``seq`` of its conversation)."""
    return sa.and_(
        reply.c.character_id == user_row.c.character_id, reply.c.platform == user_row.c.platform,
        reply.c.channel_id == user_row.c.channel_id, reply.c.user_id == user_row.c.user_id,
        reply.c.role == "assistant", reply.c.seq == user_row.c.seq + 1,
    )


def follow_ups_of(platform: str, user_id: str) -> sa.Select:
    """The ids of the messages of the character conversations a person's replies started (trigger
    ``conversation``): ``chains_from`` the person's replies."""
    return chains_from(replies_of_person(platform, user_id))


def replies_of_person(platform: str, user_id: str) -> sa.Select:
    person_reply = t.alias("person_reply")
    return sa.select(person_reply.c.id).where(
        person_reply.c.platform == platform, person_reply.c.user_id == user_id, person_reply.c.role == "assistant"
    )


def chains_from(replies: sa.Select) -> sa.Select:
    """The ids of the messages of the character conversations the replies ``replies`` (a SELECT of
    message ids) started (trigger ``conversation``): a character's answer to another's line is a user
    row of conversation ``character:ID``, stored with the platform message that line was shown in
    (``reply_messages``), and its reply comes right after it (``seq`` + 1). From the replies' shown
    messages the chain goes on through each answer's own shown messages, so follow-ups of follow-ups
    come too."""
    shown, line = shown_t.alias("shown"), t.alias("line")
    chain = (
        sa.select(line.c.id)
        .select_from(shown.join(line, _answers_line_shown_in(line, shown)))
        .where(shown.c.message_id.in_(replies))
        # Nested in the statement that reads it: a DELETE starting with WITH gets no row count from SQLite's driver.
        .cte("chain", recursive=True, nesting=True)
    )
    asked, answer, shown_next, next_line = t.alias("asked"), t.alias("answer"), shown_t.alias("shown_next"), t.alias("next_line")
    chain = chain.union(
        sa.select(next_line.c.id).select_from(
            chain.join(asked, asked.c.id == chain.c.id)
            .join(answer, _reply_to(asked, answer))
            .join(shown_next, shown_next.c.message_id == answer.c.id)
            .join(next_line, _answers_line_shown_in(next_line, shown_next))
        )
    )
    asked, answer = t.alias("asked_last"), t.alias("answer_last")
    replies_found = sa.select(answer.c.id).select_from(chain.join(asked, asked.c.id == chain.c.id).join(answer, _reply_to(asked, answer)))
    return sa.select(chain.c.id).union(replies_found)


async def delete_chains(conn: sa.ext.asyncio.AsyncConnection, replies: sa.Select, *, postgres: bool) -> int:
    """Delete the chains the replies ``replies`` started (``chains_from``), in the caller's
    transaction, before the replies themselves go (the chain is found through where they were shown,
    which goes with them); the number of messages deleted.

    On PostgreSQL the replies and every message of their chains are locked first (FOR UPDATE), a
    new answer's copy being stored only while the line it answers can be locked FOR SHARE
    (``accept``'s ``answering``): no copy of a line can be stored from then until the transaction
    ends, so none outlives it. SQLite runs one writer at a time."""
    if postgres:
        await conn.execute(sa.select(t.c.id).where(t.c.id.in_(replies)).with_for_update())
        locked: set[int] = set()
        while True:  # a copy committed before a line was locked is found by the next round
            found = set((await conn.execute(
                sa.select(t.c.id).where(t.c.id.in_(chains_from(replies))).with_for_update()
            )).scalars())
            if found <= locked:
                break
            locked |= found
    return (await conn.execute(sa.delete(t).where(t.c.id.in_(chains_from(replies))))).rowcount


def _intake(row: sa.Row, *, first: bool) -> Intake:
    return Intake(
        id=row.id,
        conversation=ConversationKey(row.character_id, row.platform, row.channel_id, row.user_id),
        text=row.content,
        tokens=row.tokens,
        platform_message_id=row.platform_message_id,
        display_name=row.display_name or "",
        created_at=row.created_at,
        status=MessageStatus(row.status or MessageStatus.ANSWERED),
        first=first,
        owner=row.claimed_by,
    )


async def _settle(conn: sa.ext.asyncio.AsyncConnection, intake: Intake, status: MessageStatus) -> bool:
    """Settle a pending message: it joins the history as its newest row."""
    result = await conn.execute(
        sa.update(t)
        .where(t.c.id == intake.id, t.c.status == MessageStatus.PENDING.value)
        .values(status=status.value, seq=_next_seq(intake.conversation))
    )
    return result.rowcount > 0


async def _insert_reply(conn: sa.ext.asyncio.AsyncConnection, c: ConversationKey, reply: tuple[str, int]) -> int:
    statement = (
        sa.insert(t)
        .values(
            character_id=c.character_id, platform=c.platform, channel_id=c.channel_id, user_id=c.user_id,
            created_at=utcnow(), role="assistant", content=reply[0], tokens=reply[1], seq=_next_seq(c),
        )
        .returning(t.c.id)
    )
    return (await conn.execute(statement)).scalar_one()
