"""``Feelings``: the state-update step. After a reply was delivered it appraises the exchange, moves
the person's emotions and intimacy by the dynamics, and writes the new version with an audit row.

Writes are optimistic: the versioned update fails when someone else wrote first, and then the
state is read again and the change computed anew, so no update is lost. Each write happens under
the conversation's lock, the same one turns take, so a turn never puts an older copy back into the
cache after a newer one was written. A regenerated reply first undoes, from the audit trail, what
the reply it replaces did. A ``cadence`` (``core.cadence``) says which exchanges are appraised at
all; a skipped one moves nothing and asks no model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Callable

from core import observe
from core.cadence import Cadence, EveryExchange
from core.character import Character
from core.dynamics import Dynamics, describe_change, same_feelings
from core.events import ConversationKey, PersonKey
from core.hot import HotState, encode_state, lock_key, state_key
from core.locks import KeyedLocks
from core.ports import Appraiser, Cache, Store
from core.state import Exchange, RelationshipState, StateChange

log = logging.getLogger(__name__)

UNDO = "undo"
MAX_ATTEMPTS = 50  # versioned writes before giving up (each retry means another writer landed)
UNDO_SEARCH = 50  # audit rows searched for the change a regenerated reply made


class Feelings:
    """``core.ports.StateUpdater`` that appraises exchanges (``appraiser``) and applies ``dynamics``."""

    def __init__(
        self,
        store: Store,
        cache: Cache,
        hot: HotState,
        appraiser: Appraiser,
        dynamics: Dynamics | None = None,
        *,
        cache_ttl_s: float = 3600.0,
        lock_ttl_s: float = 95.0,
        cadence: Cadence | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.hot = hot
        self.appraiser = appraiser
        self.dynamics = dynamics or Dynamics()
        self.cadence: Cadence = cadence or EveryExchange()
        self.cache_ttl_s = cache_ttl_s
        self.lock_ttl_s = lock_ttl_s
        # The updates for one reply run in order: a regenerated reply's undo waits for the
        # appraisal of the reply it replaces to land first.
        self._replies = KeyedLocks()

    def as_of_now(self, state: RelationshipState, character: Character) -> RelationshipState:
        return self.dynamics.as_of_now(state, character.profile.emotion)

    async def after_exchange(self, exchange: Exchange) -> None:
        async with self._replies.hold(f"{exchange.platform}:{exchange.reply_message_id}"):
            character = await self.hot.character(exchange.character_id)
            if character is None:
                return
            conversation = ConversationKey(exchange.character_id, exchange.platform, exchange.channel_id, exchange.user_id)
            if exchange.regenerated:
                await self.undo(conversation, exchange.reply_message_id, f"undo: reply {exchange.reply_message_id} was regenerated")
            if not await self.cadence.due(exchange, character):
                log.debug("reply %s: not appraised (PERSONAE_APPRAISAL_CADENCE=%s)", exchange.reply_message_id, self.cadence.name)
                return
            started = time.monotonic()
            try:
                appraisal = await self.appraiser.appraise(exchange, character)
            except Exception as exc:
                observe.metrics.error("appraisal", exc)
                raise
            finally:
                observe.metrics.appraisal(getattr(self.appraiser, "name", "other"), observe.since(started))
            if appraisal is None or appraisal.empty:
                return
            baseline = character.profile.emotion

            def move(stored: RelationshipState) -> RelationshipState | None:
                after = self.dynamics.apply(stored, appraisal, baseline)
                return None if same_feelings(after, stored) else after

            await self._write(conversation, exchange.reply_message_id, move, appraisal.appraiser, appraisal.reason)

    async def reply_deleted(self, conversation: ConversationKey, reply_message_id: int) -> None:
        """The newest reply was deleted: its change to the state goes with it."""
        async with self._replies.hold(f"{conversation.platform}:{reply_message_id}"):
            await self.undo(conversation, reply_message_id, f"undo: reply {reply_message_id} was deleted")

    async def undo(self, conversation: ConversationKey, reply_message_id: int, reason: str) -> bool:
        """Put the state back to what it was before reply ``reply_message_id`` changed it (as a new
        version); False when that reply changed nothing or was already undone."""
        person = PersonKey(conversation.character_id, conversation.platform, conversation.user_id)
        for change in await self.store.relationships.changes(person, limit=UNDO_SEARCH):
            if change.message_id == reply_message_id:
                if change.appraiser == UNDO:
                    return False
                target = change.before
                break
        else:
            return False

        def restore(stored: RelationshipState) -> RelationshipState:
            return replace(stored, emotion=target.emotion, intimacy=target.intimacy, updated_at=target.updated_at)

        return await self._write(conversation, reply_message_id, restore, UNDO, reason) is not None

    async def _write(
        self,
        conversation: ConversationKey,
        message_id: int,
        compute: Callable[[RelationshipState], RelationshipState | None],
        appraiser: str,
        reason: str,
    ) -> RelationshipState | None:
        """Apply ``compute`` to the stored state and write the result as the next version with its
        audit row (naming ``message_id``), retrying on a version conflict; refresh the cache copy.
        None if nothing was written."""
        person = PersonKey(conversation.character_id, conversation.platform, conversation.user_id)
        key = state_key(person)
        written: RelationshipState | None = None
        async with self.cache.hold(lock_key(conversation), ttl=self.lock_ttl_s) as held:
            for _ in range(MAX_ATTEMPTS):
                stored = await self.store.relationships.get(person)
                if stored is None:
                    return None  # forgotten (or the character deleted) meanwhile: nothing to move
                after = compute(stored)
                if after is None:
                    return None
                after = replace(after, version=stored.version + 1)
                change = StateChange(
                    character_id=person.character_id,
                    platform=person.platform,
                    user_id=person.user_id,
                    before=stored,
                    after=after,
                    appraiser=appraiser,
                    message_id=message_id,
                    reason=f"{reason}; {describe_change(stored, after)}" if reason else describe_change(stored, after),
                )
                if await self.store.relationships.update(change):
                    held.stage(key, encode_state(after), self.cache_ttl_s)
                    written = after
                    break
            else:
                log.error("state of %s: %d writers in a row got there first; this update was dropped", person.cache_key(), MAX_ATTEMPTS)
                return None
        # /forget may have deleted the state between the write and the cache refresh: leave no copy
        # behind. A writer from another channel (another lock) may have landed after this one and its
        # copy may have reached the cache first: then drop the copy, and the next turn reads the database.
        now = await self.store.relationships.get(person)
        if now is None or now.version != written.version:
            await self.cache.delete(key)
        return written if now is not None else None
