"""Characters: the stored card, the profile read from it, and the avatar image kept beside it.

The avatar can be megabytes: ``get``, ``get_by_name`` and ``list`` never select it; ``avatar`` does.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from core.cards import is_public, profile_from_card
from core.character import Character
from core.errors import Conflict, InvalidInput, NotFound
from storage.sql import Db, utcnow
from storage.tables import characters as t

_COLUMNS = (t.c.id, t.c.card)  # never the avatar: these reads are on the chat path
_AVATAR_EXT_CHARS = 8


def name_key(name: str) -> str:
    """The form of a name that uniqueness is checked on: NFKC-normalised and case-folded."""
    return unicodedata.normalize("NFKC", name.strip()).casefold()


def _avatar_values(avatar: bytes | None, avatar_ext: str | None) -> dict[str, Any]:
    """The avatar columns to write, checked: both given or neither, a short lower-case extension."""
    if avatar is None:
        if avatar_ext is not None:
            raise InvalidInput("an avatar extension was given without an avatar")
        return {}
    if not avatar:
        raise InvalidInput("the avatar is empty")
    ext = (avatar_ext or "").lower()
    if not (ext.isascii() and ext.isalnum() and len(ext) <= _AVATAR_EXT_CHARS):
        raise InvalidInput(f"the avatar's file extension must be 1-{_AVATAR_EXT_CHARS} letters or digits, not {avatar_ext!r}")
    return {"avatar": bytes(avatar), "avatar_ext": ext}


def _character(row: sa.Row) -> Character:
    card = row.card
    return Character(id=row.id, profile=profile_from_card(card), card=card, public=is_public(card))


class SqlCharacterRepository:
    """``core.ports.CharacterRepository`` on the ``characters`` table."""

    def __init__(self, db: Db) -> None:
        self._db = db

    async def add(self, card: dict[str, Any], avatar: bytes | None = None, avatar_ext: str | None = None) -> Character:
        profile = profile_from_card(card)
        now = utcnow()
        statement = (
            sa.insert(t)
            .values(
                name=profile.name, name_key=name_key(profile.name), card=card, created_at=now, updated_at=now,
                **_avatar_values(avatar, avatar_ext),
            )
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

    async def replace(
        self, character_id: int, card: dict[str, Any], avatar: bytes | None = None, avatar_ext: str | None = None
    ) -> Character:
        profile = profile_from_card(card)
        statement = (
            sa.update(t)
            .where(t.c.id == character_id)
            .values(
                name=profile.name, name_key=name_key(profile.name), card=card, updated_at=utcnow(),
                **_avatar_values(avatar, avatar_ext),  # nothing given: the stored avatar stays
            )
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

    async def avatar(self, character_id: int) -> tuple[bytes, str] | None:
        async with self._db.connect() as conn:
            row = (
                await conn.execute(sa.select(t.c.avatar, t.c.avatar_ext).where(t.c.id == character_id))
            ).first()
        if row is None or row.avatar is None:
            return None
        return bytes(row.avatar), row.avatar_ext or "bin"

    async def delete(self, character_id: int) -> bool:
        # Bindings, states, audit rows and messages go with it through ON DELETE CASCADE.
        async with self._db.connect() as conn:
            result = await conn.execute(sa.delete(t).where(t.c.id == character_id))
        return result.rowcount > 0
