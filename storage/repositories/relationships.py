"""Relationship states (emotions and intimacy per person) with optimistic versioning, and their audit."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from core.emotions import EmotionState
from core.errors import NotFound
from core.events import PersonKey
from core.state import RelationshipState, StateChange
from storage.sql import Db, utcnow
from storage.tables import EMOTION_COLUMNS
from storage.tables import relationship_states as t
from storage.tables import state_changes as audit

_COLUMNS = (t.c.character_id, t.c.platform, t.c.user_id, *(t.c[e] for e in EMOTION_COLUMNS), t.c.intimacy, t.c.version, t.c.updated_at)


def _state(row: sa.Row) -> RelationshipState:
    return RelationshipState(
        character_id=row.character_id,
        platform=row.platform,
        user_id=row.user_id,
        emotion=EmotionState(**{e: row._mapping[e] for e in EMOTION_COLUMNS}),
        intimacy=row.intimacy,
        version=row.version,
        updated_at=row.updated_at,
    )


def _values(state: RelationshipState) -> dict:
    return {**state.emotion.as_dict(), "intimacy": state.intimacy, "version": state.version, "updated_at": state.updated_at}


def _is(key: PersonKey | StateChange | RelationshipState):
    return sa.and_(t.c.character_id == key.character_id, t.c.platform == key.platform, t.c.user_id == key.user_id)


class SqlRelationshipRepository:
    """``core.ports.RelationshipRepository`` on ``relationship_states`` and ``state_changes``."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def get(self, key: PersonKey) -> RelationshipState | None:
        async with self._db.connect() as conn:
            row = (await conn.execute(sa.select(*_COLUMNS).where(_is(key)))).first()
        return _state(row) if row else None

    async def get_or_create(self, initial: RelationshipState) -> RelationshipState:
        select = sa.select(*_COLUMNS).where(_is(initial))
        # ON CONFLICT DO NOTHING rather than catching the unique violation: it waits for a racing
        # insert to commit and aborts nothing, on both backends.
        insert = (
            self._db.insert(t)
            .values(character_id=initial.character_id, platform=initial.platform, user_id=initial.user_id,
                    **{**_values(initial), "version": 0})
            .on_conflict_do_nothing(index_elements=[t.c.character_id, t.c.platform, t.c.user_id])
            .returning(*_COLUMNS)
        )
        try:
            async with self._db.connect() as conn:
                # Read first: the state usually exists, and a conflicting INSERT would burn a serial id.
                row = (await conn.execute(select)).first()
                if row is None:
                    row = (await conn.execute(insert)).first() or (await conn.execute(select)).one()
        except IntegrityError:
            raise NotFound(f"character {initial.character_id} does not exist (was it deleted?)") from None
        return _state(row)

    async def update(self, change: StateChange) -> bool:
        before, after = change.before, change.after
        if after.version != before.version + 1:
            raise ValueError(f"after.version must be {before.version + 1}, not {after.version}")
        update = sa.update(t).where(_is(change), t.c.version == before.version).values(**_values(after))
        audit_values = {
            "character_id": change.character_id,
            "platform": change.platform,
            "user_id": change.user_id,
            "before": before.to_json(),
            "after": after.to_json(),
            "appraiser": change.appraiser,
            "message_id": change.message_id,
            "reason": change.reason,
            "created_at": utcnow(),
        }
        if self._db.postgres:
            return await self._update_in_one_statement(update, audit_values)
        async with self._db.begin() as conn:
            if (await conn.execute(update)).rowcount != 1:
                return False
            await conn.execute(sa.insert(audit).values(**audit_values))
        return True

    async def _update_in_one_statement(self, update: sa.Update, audit_values: dict) -> bool:
        """PostgreSQL: the versioned UPDATE feeds the audit INSERT in one statement (one round trip, atomic)."""
        updated = update.returning(t.c.id).cte("updated")
        names = list(audit_values)
        rows = sa.select(*(sa.literal(audit_values[n], audit.c[n].type) for n in names)).select_from(updated)
        statement = sa.insert(audit).add_cte(updated).from_select(names, rows).returning(audit.c.id)
        async with self._db.connect() as conn:
            return (await conn.execute(statement)).first() is not None

    async def changes(self, key: PersonKey, limit: int = 20) -> list[StateChange]:
        statement = (
            sa.select(audit)
            .where(audit.c.character_id == key.character_id, audit.c.platform == key.platform, audit.c.user_id == key.user_id)
            .order_by(audit.c.id.desc())
            .limit(max(limit, 0))
        )
        async with self._db.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [
            StateChange(
                character_id=row.character_id,
                platform=row.platform,
                user_id=row.user_id,
                before=RelationshipState.from_json(row.character_id, row.platform, row.user_id, row.before),
                after=RelationshipState.from_json(row.character_id, row.platform, row.user_id, row.after),
                appraiser=row.appraiser,
                message_id=row.message_id,
                reason=row.reason,
            )
            for row in rows
        ]
