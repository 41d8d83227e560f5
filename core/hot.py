"""Hot copies of what a turn reads: bindings, characters, states and recent history.

Reads go to the cache first and to the database on a miss (then fill the cache); the database stays
the source of truth. Key names live here and nowhere else.
"""

from __future__ import annotations

import json
import time

from core import observe
from core.character import Character
from core.events import CHARACTER_USER, ConversationKey, PersonKey, Trigger
from core.ports import Cache, Store
from core.model_input import history_window
from core.prompt import Turn
from core.state import Binding, RelationshipState

_UNBOUND = b"-"  # cached "no binding here", so unbound channels cost no database read


def binding_key(platform: str, channel_id: str) -> str:
    return f"b:{platform}:{channel_id}"


def person_prefixes(platform: str, user_id: str) -> tuple[str, ...]:
    """Key prefixes of everything hot about one person (their keys start with the person)."""
    return f"s:{platform}:{user_id}:", f"h:{platform}:{user_id}:", f"m:{platform}:{user_id}:"


def character_histories_prefix(platform: str) -> str:
    """Key prefix of the histories of the characters' conversations with each other (trigger
    ``conversation``): forgetting a person deletes the lines their replies started there."""
    return f"h:{platform}:{CHARACTER_USER}"


def rate_key(platform: str, user_id: str) -> str:
    return f"r:{platform}:{user_id}"


def state_key(person: PersonKey) -> str:
    return f"s:{person.platform}:{person.user_id}:{person.character_id}"


def history_key(conversation: ConversationKey) -> str:
    c = conversation
    return f"h:{c.platform}:{c.user_id}:{c.character_id}:{c.channel_id}"


def memory_key(conversation: ConversationKey) -> str:
    """A conversation's long-term memories (``core.memory``)."""
    c = conversation
    return f"m:{c.platform}:{c.user_id}:{c.character_id}:{c.channel_id}"


def shown_key(message_id: int) -> str:
    """The platform message a reply to stored message ``message_id`` is being streamed into."""
    return f"w:{message_id}"


def lock_key(conversation: ConversationKey) -> str:
    return f"l:{conversation.cache_key()}"


def replica_key(replica: str) -> str:
    """Held by a live replica (its liveness lease); gone when it died or stopped."""
    return f"replica:{replica}"


def leader_key(role: str) -> str:
    """Held by the one replica elected for ``role`` (e.g. Telegram long polling)."""
    return f"leader:{role}"


def encode_binding(binding: Binding | None) -> bytes:
    return encode_cast([] if binding is None else [binding])


def encode_cast(cast: list[Binding]) -> bytes:
    """A channel's bindings (its cast: one per character, oldest first); empty: unbound."""
    if not cast:
        return _UNBOUND
    return json.dumps(
        [[b.chat_id, b.character_id, b.trigger.value, b.scene, b.private] for b in cast]
    ).encode()


def decode_cast(platform: str, channel_id: str, raw: bytes) -> list[Binding]:
    if raw == _UNBOUND:
        return []
    value = json.loads(raw)
    rows = value if value and isinstance(value[0], list) else [value]  # one binding, as cached before scenes
    return [
        Binding(platform, chat_id, channel_id, character_id, Trigger(trigger), scene, private)
        for chat_id, character_id, trigger, scene, private in rows
    ]


def decode_binding(platform: str, channel_id: str, raw: bytes) -> Binding | None:
    cast = decode_cast(platform, channel_id, raw)
    return cast[0] if cast else None


def encode_state(state: RelationshipState) -> bytes:
    return json.dumps(state.to_json()).encode()


def decode_state(person: PersonKey, raw: bytes) -> RelationshipState:
    return RelationshipState.from_json(person.character_id, person.platform, person.user_id, json.loads(raw))




def encode_history(entries: list[tuple[int, str, str, int]], from_start: bool) -> bytes:
    """A history window and whether it starts at the start of the conversation."""
    return json.dumps({"start": from_start, "entries": entries}, ensure_ascii=False).encode()


def decode_history(raw: bytes) -> tuple[list[tuple[int, str, str, int]], bool] | None:
    """The window and its start mark; None for a window cached without the mark (read the database)."""
    value = json.loads(raw)
    if not isinstance(value, dict):
        return None
    return [tuple(e) for e in value["entries"]], bool(value["start"])  # type: ignore[misc]


class HotState:
    """Cache-aside access to the records a turn needs, plus a short-lived local character cache."""

    def __init__(
        self, store: Store, cache: Cache, *, ttl_s: float, character_ttl_s: float = 10.0, binding_ttl_s: float = 5.0
    ) -> None:
        self.store = store
        self.cache = cache
        self.ttl_s = ttl_s
        self._character_ttl = character_ttl_s
        self._characters: dict[int, tuple[float, Character]] = {}
        # Bindings change rarely and are read on every message, bound or not: a few seconds of
        # local copy spare the cache a round trip (another process sees a change within that time).
        self._binding_ttl = binding_ttl_s
        self._bindings: dict[tuple[str, str], tuple[float, tuple[Binding, ...]]] = {}

    async def bindings(self, platform: str, *channel_ids: str) -> list[Binding | None]:
        """The first binding of each of several channels (a thread and its parent), or None."""
        return [cast[0] if cast else None for cast in await self.casts(platform, *channel_ids)]

    async def casts(self, platform: str, *channel_ids: str) -> list[list[Binding]]:
        """Every binding of each of several channels: local copy, then cache, then database."""
        now = time.monotonic()
        local = [self._bindings.get((platform, c)) for c in channel_ids]
        if all(hit is not None and hit[0] > now for hit in local):
            return [list(hit[1]) for hit in local]  # type: ignore[index]
        found = await self._shared_casts(platform, channel_ids)
        if len(self._bindings) > 10_000:
            self._bindings.clear()
        for channel_id, cast in zip(channel_ids, found):
            self._bindings[(platform, channel_id)] = (now + self._binding_ttl, tuple(cast))
        return found

    async def _shared_casts(self, platform: str, channel_ids: tuple[str, ...]) -> list[list[Binding]]:
        keys = [binding_key(platform, c) for c in channel_ids]
        raws = await self.cache.get_many(keys)
        out: list[list[Binding]] = []
        fill: dict[str, bytes] = {}
        for key, channel_id, raw in zip(keys, channel_ids, raws):
            observe.metrics.cache_lookup("binding", raw is not None)
            if raw is not None:
                out.append(decode_cast(platform, channel_id, raw))
                continue
            cast = await self.store.bindings.list(platform, channel_id)
            fill[key] = encode_cast(cast)
            out.append(cast)
        if fill:
            await self.cache.set_many(fill, self.ttl_s)
        return out

    async def forget_binding(self, platform: str, channel_id: str) -> None:
        self._bindings.pop((platform, channel_id), None)
        await self.cache.delete(binding_key(platform, channel_id))

    async def character(self, character_id: int) -> Character | None:
        now = time.monotonic()
        hit = self._characters.get(character_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        character = await self.store.characters.get(character_id)
        if character is None:
            self._characters.pop(character_id, None)
        else:
            if len(self._characters) > 1000:
                self._characters.clear()
            self._characters[character_id] = (now + self._character_ttl, character)
        return character

    def forget_character(self, character_id: int) -> None:
        self._characters.pop(character_id, None)

    async def state(self, person: PersonKey, character: Character, raw: bytes | None = None) -> tuple[RelationshipState, bool]:
        """The person's state (created at the card's baselines on first contact); True if read from the database."""
        observe.metrics.cache_lookup("state", raw is not None)
        if raw is not None:
            return decode_state(person, raw), False
        stored = await self.store.relationships.get_or_create(
            RelationshipState(
                character_id=person.character_id,
                platform=person.platform,
                user_id=person.user_id,
                emotion=character.profile.emotion,
                intimacy=character.profile.relationship,
            )
        )
        return stored, True

    async def read_state(self, person: PersonKey, character: Character) -> RelationshipState:
        raw = (await self.cache.get_many([state_key(person)]))[0]
        state, from_db = await self.state(person, character, raw)
        if from_db:
            await self.cache.set_many({state_key(person): encode_state(state)}, self.ttl_s)
        return state

    async def history(
        self, conversation: ConversationKey, limit: int, raw: bytes | None = None
    ) -> tuple[list[tuple[int, str, str, int]], bool]:
        """The last ``limit`` (id, role, content, tokens) entries oldest first, and True when they
        start at the conversation's start (one more entry is read to know: no guess from the count)."""
        observe.metrics.cache_lookup("history", raw is not None)
        if raw is not None and (cached := decode_history(raw)) is not None:
            return cached
        rows = await self.store.messages.recent(conversation, limit + 1)
        return history_window([(m.id, m.role, m.content, m.tokens) for m in rows], limit)

    async def forget_conversation(self, conversation: ConversationKey) -> None:
        await self.cache.delete(history_key(conversation))

    @staticmethod
    def turns(entries: list[tuple[int, str, str, int]]) -> list[Turn]:
        return [Turn(role, content, tokens) for _, role, content, tokens in entries]
