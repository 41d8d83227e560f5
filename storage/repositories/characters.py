"""Characters: the stored card and the profile read from it."""

from __future__ import annotations

import unicodedata
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from core.cards import is_public, profile_from_card
from core.character import Character
from core.errors import Conflict, NotFound
from storage.sql import Db, utcnow
from storage.tables import characters as t

_COLUMNS = (t.c.id, t.c.card)


def name_key(name: str) -> str:
    """The form of a name that uniqueness is checked on: NFKC-normalised and case-folded."""
    return unicodedata.normalize("NFKC", name.strip()).casefold()


def _character(row: sa.Row) -> Character:
    card = row.card
    return Character(id=row.id, profile=profile_from_card(card), card=card, public=is_public(card))


class SqlCharacterRepository:
    """``core.ports.CharacterRepository`` on the ``characters`` table."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def add(self, card: dict[str, Any]) -> Character:
        profile = profile_from_card(card)
        now = utcnow()
        statement = (
            sa.insert(t)
            .values(name=profile.name, name_key=name_key(profile.name), card=card, created_at=now, updated_at=now)
            .returning(t.c.id)
        )
        try:
            async with self._db.connect() as conn:
                character_id = (await conn.execute(statement)).scalar_one()
        except IntegrityError:
            raise Conflict(f"there is already a character named {profile.name!r} (names ignore case)") from None
        return Character(id=character_id, profile=profile, card=card, public=is_public(card))

    async def get(self, character_id: int) -> Character | None:
        async with self._db.connect() as conn:
            row = (await conn.execute(sa.select(*_COLUMNS).where(t.c.id == character_id))).first()
        return _character(row) if row else None

    async def get_by_name(self, name: str) -> Character | None:
        async with self._db.connect() as conn:
            row = (await conn.execute(sa.select(*_COLUMNS).where(t.c.name_key == name_key(name)))).first()
        return _character(row) if row else None

    async def list(self) -> list[Character]:
        async with self._db.connect() as conn:
            rows = (await conn.execute(sa.select(*_COLUMNS).order_by(t.c.name_key, t.c.id))).all()
        return [_character(row) for row in rows]

    async def replace(self, character_id: int, card: dict[str, Any]) -> Character:
        profile = profile_from_card(card)
        statement = (
            sa.update(t)
            .where(t.c.id == character_id)
            .values(name=profile.name, name_key=name_key(profile.name), card=card, updated_at=utcnow())
            .returning(t.c.id)
        )
        try:
            async with self._db.connect() as conn:
                row = (await conn.execute(statement)).first()
        except IntegrityError:
            raise Conflict(f"there is already another character named {profile.name!r} (names ignore case)") from None
        if row is None:
            raise NotFound(f"character {character_id} does not exist (was it deleted?)")
        return Character(id=character_id, profile=profile, card=card, public=is_public(card))

    async def delete(self, character_id: int) -> bool:
        # Bindings, states, audit rows and messages go with it through ON DELETE CASCADE.
        async with self._db.connect() as conn:
            result = await conn.execute(sa.delete(t).where(t.c.id == character_id))
        return result.rowcount > 0
