"""``Engine.handle``: one chat message in, a streamed in-character reply out, history and state kept.

A person's message is stored the moment it arrives (``accept``), pending, and the reply is stored
with it when complete (``core.turn``); ``recover`` answers what a crash left pending.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable, TypeVar

from core import observe
from core.addressing import Castmate, named, next_speaker, pick
from core.events import ChatEvent, ConversationKey, character_user, is_character_user
from core.flood import ArrivalWindow, Verdict, WaitingTurns
from core.hot import HotState, character_histories_prefix, history_key, lock_key
from core.locks import KeyedLocks
from core.lorebook import LoreSettings
from core.ports import Cache, ChatModel, StateUpdater, Store
from core.prompt import estimate_tokens
from core.reply import (  # noqa: F401 - the adapters' names for these live here
    NOTICE_BUDGET,
    NOTICE_CUT,
    NOTICE_INTERRUPTED,
    NOTICE_RATE,
    NOTICE_STALE,
    NOTICE_STORAGE,
    NOTICE_TOO_LONG,
    NOTICE_UNAVAILABLE,
    Reply,
    ReplyStatus,
)
from core.state import Binding, Exchange, Intake, MessageStatus, RelationshipState
from core.cancelled import raise_if_cancelled
from core.character import Character
from core.text import display_name as clean_display_name
from core.text import message_text
from core.turn import ChatTurn, with_backoff

if TYPE_CHECKING:
    from core.memory import MemoryKeeper

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class EngineConfig:
    """Limits and model settings the engine applies to every turn."""

    max_tokens: int = 96
    temperature: float = 0.7
    stop: tuple[str, ...] = ()
    max_input_tokens: int = 3500
    history_turns: int = 40
    # Whether a card's example dialogue goes to the model as leading turns, for characters that do not
    # say (``examples=on|off`` on the card); off: BeyondDialogue was never trained on such turns.
    card_examples: bool = False
    # A channel is a scene: the share of the input budget the others' lines may take (0: none), read
    # from at most ``scene_lines`` of the channel's newest lines (core.scene).
    scene_share: float = 0.25
    scene_lines: int = 40
    scene_layout: str = "turns"  # core.scene.LAYOUTS: how those lines reach the model
    # Character replies in a row the ``conversation`` trigger allows (core.addressing.next_speaker).
    conversation_turns: int = 2
    lore: LoreSettings = LoreSettings()  # PERSONAE_LORE_TOKENS, PERSONAE_LORE_RECURSION
    rate_limit_messages: int = 20
    rate_limit_window_s: float = 60.0
    cache_ttl_s: float = 3600.0
    turn_deadline_s: float = 90.0
    max_message_chars: int = 4000
    # Turns being answered at once; the rest wait in arrival order before touching storage, so a
    # burst of messages queues here instead of exhausting the database pool.
    max_concurrent_turns: int = 128
    # Turns accepted but not finished, per person (one channel) and in all; past either, a new
    # message gets one notice and is dropped, so a flood cannot fill memory.
    max_waiting_per_person: int = 25
    max_waiting_turns: int = 4096
    # A message left unanswered (a crash) longer than this gets a short notice instead of a reply.
    pending_answer_within_s: float = 600.0
    # How long a reply already shown is retried while the database is away.
    store_retry_s: float = 120.0
    # One storage notice per person per this many seconds while the database is away.
    storage_notice_interval_s: float = 60.0
    # This process's name among replicas: stored on the messages it takes in, so that another replica
    # can take them over when this one's liveness lease (core.hot.replica_key) runs out.
    replica: str = ""
    # Liveness leases' length: after the cache lost them (an outage, a restart that wiped them), no
    # replica is presumed dead until this long has passed, time for every live one to renew.
    replica_lease_s: float = 10.0


class NoStateChange:
    """The state-update step that leaves emotion and intimacy where they are (the card's baselines)."""

    async def after_exchange(self, exchange: Exchange) -> None:
        return None

    async def reply_deleted(self, conversation: ConversationKey, reply_message_id: int) -> None:
        return None

    def as_of_now(self, state: RelationshipState, character: Character) -> RelationshipState:
        return state


@dataclass(frozen=True, slots=True)
class RecoveredTurn:
    """A message a crash left unanswered, and its answer (iterate ``reply``; a notice when too old).

    ``shown_in`` holds the platform id of a reply message that was shown half-way when the crash
    came, if the adapter recorded one (``Engine.showing``): it should be written over (or, when
    ``late``, marked), not left dangling.
    """

    intake: Intake
    reply: Reply
    shown_in: str | None = None
    late: bool = False  # too old to answer: ``reply`` is a short notice


class Engine:
    """Decides whether to answer, keeps one person's turns in order, streams and stores replies."""

    def __init__(
        self,
        store: Store,
        cache: Cache,
        model: ChatModel,
        config: EngineConfig | None = None,
        state_updater: StateUpdater | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.model = model
        self.config = config or EngineConfig()
        self.hot = HotState(store, cache, ttl_s=self.config.cache_ttl_s)
        self.state_updater = state_updater or NoStateChange()
        # Long-term memory (``core.memory.MemoryKeeper``); None: turns that leave the window are gone.
        self.memory: "MemoryKeeper | None" = None
        self._background: set[asyncio.Task[None]] = set()
        # One person's messages in one channel wait here in arrival order, before anything can reorder them.
        self._arrivals = KeyedLocks()
        self._turns = asyncio.Semaphore(self.config.max_concurrent_turns)
        self._waiting = WaitingTurns(self.config.max_waiting_per_person, self.config.max_waiting_turns)
        self._arrival_rate = ArrivalWindow(self.config.rate_limit_messages, self.config.rate_limit_window_s)
        # Messages accepted by an adapter and not yet handed to ``handle``, by delivery.
        self._accepted: dict[tuple[str, str, str], Intake] = {}
        # Messages ``accept`` stored as overheard (for no character), by delivery: their stored id.
        self._overheard: dict[tuple[str, str, str], int] = {}
        # Stored messages whose turn runs in this process (a redelivery of one is not answered twice).
        self._in_flight: set[int] = set()
        # Stored messages a recovery sweep claimed here and will answer next (not yet in flight).
        self._claimed: set[int] = set()
        # When this engine started: a pending message of its replica's name stored before this was
        # taken in by a previous life of the process (killed), not by this one.
        self.started_at = dt.datetime.now(dt.UTC)
        # Until when (monotonic) a missing liveness lease proves nothing (core.recovery.owners_gone).
        self.liveness_doubt_until = 0.0
        self.liveness_epoch: bytes | None = None
        self._turns_running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._deadlines: set[asyncio.Timeout] = set()
        self.cutting = False
        self.closing = False
        self._storage_notices: dict[str, float] = {}

    # -- public API -------------------------------------------------------------------------

    async def accept(self, event: ChatEvent) -> Intake | None:
        """Store the event's message as pending if a character will answer it, before the platform is
        told it was received; None when no character answers it (in a bound channel it is then stored
        as an overheard line of the scene, if it can be). Raises if the database is away."""
        found = await self._intake(event, remember=True)
        if isinstance(found, Intake):
            if found.status is not MessageStatus.PENDING:
                return found  # answered already: nothing for ``handle`` to pick up
            if len(self._accepted) > 10_000:
                self._accepted.clear()  # handed over and never handled: recovery finds them
            self._accepted[_delivery(event)] = found
            return found
        return None

    async def discard(self, event: ChatEvent) -> None:
        """An accepted message the adapter will not hand to ``handle`` (dropped from a flooded line):
        settled now, so that no restart answers it later."""
        accepted = self._accepted.pop(_delivery(event), None)
        if accepted is not None:
            self._waiting.dropped += 1
            await self._settle_unanswered(accepted)
        overheard = self._overheard.pop(_delivery(event), None)
        if overheard is not None:
            # Not said after all (a proxy copied it: the copy is the line): out of the scene too.
            try:
                await self.store.messages.delete_message(overheard)
            except Exception:  # noqa: BLE001 - the database's own errors: the line stays until pruned
                log.warning("could not delete overheard message %s", overheard, exc_info=True)

    def handle(self, event: ChatEvent) -> Reply:
        """The reply to ``event`` (stored on arrival by ``accept`` if not already); nothing runs until it is iterated."""
        return Reply(lambda reply: self._handle(event, reply))

    def regenerate(
        self, conversation: ConversationKey, display_name: str, reply_message_id: int, *, parent_channel_id: str | None = None
    ) -> Reply:
        """A new reply in place of the newest one of ``conversation`` (which must be ``reply_message_id``);
        ``parent_channel_id``: the conversation is in a thread of that channel (its characters play there)."""
        return Reply(lambda reply: self._regenerate(conversation, display_name, reply_message_id, reply, parent_channel_id))

    async def recover(self, platform: str, *, older_than_s: float = 0.0, at_start: bool = False) -> AsyncIterator[RecoveredTurn]:
        """The messages of ``platform`` still pending (stored at least ``older_than_s`` ago), oldest
        first, each with its answer to deliver; answered once even if a redelivery comes meanwhile.
        ``at_start``: messages this replica's name took in a previous life are answered at once."""
        from core.recovery import pending_turns

        async for turn in pending_turns(self, platform, older_than_s=older_than_s, at_start=at_start):
            yield turn

    def answer(self, intake: Intake, *, parent_channel_id: str | None = None, answering: int | None = None) -> Reply:
        """The answer to a message already stored (a recovered one); ``parent_channel_id``: the message
        is in a thread of that channel (its characters play there); ``answering``: the message is
        that stored reply of another character (``follow_up``)."""
        return Reply(lambda reply: self._answer(intake, reply, parent_channel_id, answering))

    def answering(self, intake: Intake) -> bool:
        """Whether this process is answering ``intake`` (or was handed it by an adapter and will)."""
        return intake.id in self._in_flight or _delivery_of(intake) in self._accepted

    def taking(self, intake: Intake) -> bool:
        """``answering``, or claimed here by a recovery sweep and about to be answered."""
        return intake.id in self._claimed or self.answering(intake)

    def claimed(self, intake: Intake, mine: bool = True) -> None:
        """A recovery sweep claimed ``intake`` to answer it here (``mine``), or is done with it."""
        if mine:
            self._claimed.add(intake.id)
        else:
            self._claimed.discard(intake.id)

    async def showing(self, intake: Intake, platform_message_id: str) -> None:
        """Remember the platform message a reply to ``intake`` is being streamed into, so that a
        crash leaves recovery a message to complete instead of a dangling half."""
        from core.recovery import remember_shown

        await remember_shown(self, intake, platform_message_id)

    async def delete_reply(self, conversation: ConversationKey, reply_message_id: int) -> bool:
        """Take back the newest exchange of ``conversation``: delete the reply, mark the person's message
        it answered undone (kept as a delivery record, out of the history and of recovery, so the next
        message starts a turn of its own), and undo the reply's change to the state.

        False (and nothing changed) when ``reply_message_id`` is not the newest reply.
        """
        async with self.cache.hold(lock_key(conversation), ttl=self.config.turn_deadline_s + 5) as held:
            recent = await self.store.messages.recent(conversation, 1)
            if not recent or recent[-1].id != reply_message_id or recent[-1].role != "assistant":
                return False
            if not await self.store.messages.undo_exchange(conversation, reply_message_id):
                return False
            held.stage(history_key(conversation), None, self.config.cache_ttl_s)
        # The characters' answers to each other the reply started went with it: their conversations'
        # cached histories go too, to be read again.
        await self.cache.delete_prefix(character_histories_prefix(conversation.platform))
        await self.state_updater.reply_deleted(conversation, reply_message_id)
        return True

    async def binding_for(self, event: ChatEvent) -> Binding | None:
        """The binding that applies to the event's channel (a thread inherits its parent's)."""
        cast = await self.cast_for(event)
        return cast[0] if cast else None

    @property
    def turns_waiting(self) -> int:
        """Turns accepted and not finished (waiting for their turn or being answered)."""
        return self._waiting.in_all

    @property
    def turns_dropped(self) -> int:
        """Messages dropped since start because too many turns were waiting (each one is logged)."""
        return self._waiting.dropped

    @property
    def turns_running(self) -> int:
        """Turns being answered right now (shutdown waits for them)."""
        return self._turns_running

    def stop_answering(self) -> None:
        """Shutdown begins: messages still arrive and are stored, but are answered after the restart."""
        self.closing = True

    async def finish_turns(self, grace_s: float) -> bool:
        """Let the turns in progress finish within ``grace_s``; then cut the rest short (each stores
        what it has, marked interrupted). True if all finished in time."""
        try:
            async with asyncio.timeout(grace_s):
                await self._idle.wait()
            return True
        except TimeoutError:
            self.cutting = True
            loop = asyncio.get_running_loop()
            for deadline in list(self._deadlines):
                deadline.reschedule(loop.time())
            await self._idle.wait()
            return False

    async def drain(self) -> None:
        """Wait for state updates still running in the background (shutdown, tests)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # -- what turns use ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def cuttable(self, seconds: float) -> AsyncIterator[None]:
        """A deadline of ``seconds`` that shutdown can bring forward (``finish_turns``)."""
        async with asyncio.timeout(seconds) as deadline:
            if self.cutting:
                deadline.reschedule(asyncio.get_running_loop().time())
            self._deadlines.add(deadline)
            try:
                yield
            finally:
                self._deadlines.discard(deadline)

    async def stored(self, write: Callable[[], Awaitable[T]]) -> T:
        """A write of something the person has seen: retried with backoff while the database is away."""
        return await with_backoff(write, give_up_after=self.config.store_retry_s, what="a reply that was shown")

    def in_background(self, work: Awaitable[object], what: str = "state update") -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("%s failed", what)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- one turn ---------------------------------------------------------------------------

    async def answerable(self, event: ChatEvent) -> tuple[str, Binding] | ReplyStatus:
        """The cleaned text and the binding of the character that answers ``event``; else why none does."""
        found = await self._addressee(event)
        return ReplyStatus.IGNORED if isinstance(found, _Unaddressed) else found

    async def _addressee(self, event: ChatEvent) -> tuple[str, Binding] | ReplyStatus | "_Unaddressed":
        """``answerable``, telling a message for no character in a channel with characters apart."""
        text = message_text(event.text)  # the adapters clean too; nothing unclean reaches storage
        if not text:
            return ReplyStatus.IGNORED
        cast = await self.cast_for(event)
        if not cast:
            return ReplyStatus.NO_CHARACTER if event.private else ReplyStatus.IGNORED
        chosen = await self.who_answers(event, text, cast)
        if chosen is None:
            return _Unaddressed(text, cast[0])
        return text, chosen

    async def _overhear(self, event: ChatEvent, found: "_Unaddressed", *, remember: bool) -> None:
        """Store a message said in a bound channel to no character as an overheard line of its scene
        (``MessageStatus.OVERHEARD``): the characters answering others there see it, nothing answers
        it, no history holds it. Under the channel's first bound character and the person's id (so
        /forget takes it); the channel keeps its newest ``scene_lines`` (more are never read). A
        thread of a bound channel is a scene of its own: its lines are kept under the thread. Not in
        a private chat or with no scene share. A failure is logged, never told: no one asked for anything."""
        cfg, binding = self.config, found.binding
        if event.private or binding.private:
            return
        if cfg.scene_share <= 0 or cfg.scene_lines <= 0:
            return
        text = found.text[: cfg.max_message_chars]
        conversation = ConversationKey(binding.character_id, event.platform, event.channel_id, event.user_id)
        try:
            stored = await self.store.messages.overhear(
                conversation, text, estimate_tokens(text), event.message_id, clean_display_name(event.display_name),
                keep=cfg.scene_lines,
            )
        except Exception as exc:  # noqa: BLE001 - the database's own errors: the scene misses one line
            raise_if_cancelled()
            observe.metrics.error("database", exc)
            log.warning("could not store overheard message %s of %s", event.message_id, event.platform, exc_info=True)
            return
        if stored is not None and remember:
            if len(self._overheard) > 10_000:
                self._overheard.clear()
            self._overheard[_delivery(event)] = stored

    async def follow_up(self, reply: Reply, platform_message_id: str) -> Reply | None:
        """With trigger ``conversation``: the answer of the character ``reply`` (shown in platform
        message ``platform_message_id``) addressed by name, or None. That character answers the line
        as it would a person (its feelings toward the speaking character kept apart, under the user
        id ``character:ID``); ``Reply.chain`` counts the replies in a row, at most
        PERSONAE_CONVERSATION_TURNS, so two characters never answer each other forever."""
        c, speaker = reply.conversation, reply.character
        if c is None or speaker is None or reply.reply_message_id is None or not reply.text or self.closing:
            return None
        if reply.status is not ReplyStatus.ANSWERED or reply.chain >= self.config.conversation_turns:
            return None
        cast = await self._cast_at(c.platform, c.channel_id, reply.parent_channel_id)
        if len(cast) < 2 or cast[0].private:
            return None
        mates = [Castmate(m.id, m.name) for b in cast if (m := await self.hot.character(b.character_id)) is not None]
        chosen = next_speaker(
            mates, speaker=speaker.id, reply_text=reply.text, trigger=cast[0].trigger,
            turns_in_a_row=reply.chain, limit=self.config.conversation_turns,
        )
        if chosen is None:
            return None
        conversation = ConversationKey(chosen, c.platform, c.channel_id, character_user(speaker.id))
        text = message_text(reply.text)[: self.config.max_message_chars]
        # Stored only while the line answered is (a /forget, /reset, Regenerate or deleted reply may
        # have taken it, with the chain it started, since it was shown): no copy outlives it.
        intake = await self.store.messages.accept(
            conversation, text, estimate_tokens(text), platform_message_id, speaker.name, owner=self.config.replica or None,
            answering=reply.reply_message_id,
        )
        if intake is None:
            return None
        answer = self.answer(intake, parent_channel_id=reply.parent_channel_id, answering=reply.reply_message_id)
        answer.chain = reply.chain + 1
        return answer

    async def cast_for(self, event: ChatEvent) -> list[Binding]:
        """The characters bound to the event's channel (a thread inherits its parent's), first bound first."""
        return await self._cast_at(event.platform, event.channel_id, event.parent_channel_id)

    async def _cast_at(self, platform: str, channel_id: str, parent_channel_id: str | None) -> list[Binding]:
        """The characters bound to ``channel_id``; when none are, to its parent (a thread's channel)."""
        channels = [channel_id] + ([parent_channel_id] if parent_channel_id else [])
        for cast in await self.hot.casts(platform, *channels):
            if cast:
                return cast
        return []

    async def who_answers(self, event: ChatEvent, text: str, cast: list[Binding]) -> Binding | None:
        """The binding of the character ``event`` is for (``core.addressing.pick``), or None."""
        if event.private:
            return cast[0]
        mates = []
        for binding in cast:
            character = await self.hot.character(binding.character_id)
            if character is not None:
                mates.append(Castmate(character.id, character.name))
        replied_to = None
        if event.reply_to:
            replied_to = await self.store.messages.reply_author(event.platform, event.channel_id, event.reply_to)
        last = None
        if len(mates) > 1 and replied_to is None and named(text, mates) is None:
            last = await self.store.messages.last_partner(event.platform, event.channel_id, event.user_id)
        chosen = pick(
            mates, text=text, trigger=cast[0].trigger, mentioned=event.addressed and replied_to is None,
            replied_to=replied_to, last_partner=last,
        )
        return next((b for b in cast if b.character_id == chosen), None)

    async def shown(self, reply: Reply, platform_message_ids: list[str]) -> None:
        """Remember the platform messages a stored reply was shown in: a person replying to one of
        them is answered by the character that wrote it. Never raises (the reply is shown already)."""
        if reply.conversation is not None and reply.reply_message_id is not None:
            await self.remember_shown(reply.conversation, reply.reply_message_id, platform_message_ids)

    async def remember_shown(self, conversation: ConversationKey, reply_id: int, platform_message_ids: list[str]) -> None:
        """``shown`` for a reply known by its conversation and stored id."""
        if not platform_message_ids:
            return
        try:
            await self.store.messages.mark_shown(reply_id, conversation.platform, conversation.channel_id, platform_message_ids)
        except Exception:  # noqa: BLE001 - the database's own errors: replies to it then go by name or trigger
            log.warning("could not remember where reply %s was shown", reply_id, exc_info=True)

    async def _intake(self, event: ChatEvent, *, remember: bool = False) -> Intake | ReplyStatus | str:
        """The stored message for ``event``, or why there is none: a status, or a notice to show.
        ``remember`` (``accept``): an overheard message is remembered for ``handle`` and ``discard``."""
        cfg = self.config
        if _delivery(event) in self._overheard:
            return ReplyStatus.IGNORED  # ``accept`` stored it as overheard already
        answerable = await self._addressee(event)
        if isinstance(answerable, _Unaddressed):
            await self._overhear(event, answerable, remember=remember)
            return ReplyStatus.IGNORED
        if isinstance(answerable, ReplyStatus):
            return answerable
        text, binding = answerable
        if len(text) > cfg.max_message_chars:
            return NOTICE_TOO_LONG.format(limit=cfg.max_message_chars)
        character = await self.hot.character(binding.character_id)
        if character is None:
            return ReplyStatus.IGNORED
        conversation = ConversationKey(character.id, event.platform, event.channel_id, event.user_id)
        return await self.store.messages.accept(
            conversation, text, estimate_tokens(text), event.message_id, clean_display_name(event.display_name),
            owner=self.config.replica or None,
        )

    async def _handle(self, event: ChatEvent, reply: Reply) -> AsyncIterator[str]:
        person = f"{event.platform}:{event.channel_id}:{event.user_id}"
        arrived = event.sent_at if event.sent_at is not None else time.time()
        reply.queued_at = time.monotonic()
        reply.arrived_at = arrived
        # Judged before the first await, so the bound holds however many arrive at once.
        if self._waiting.full(person):
            async for delta in self._overflow(event, reply, person, arrived):
                yield delta
            return
        self._waiting.enter(person)
        try:
            async with self._arrivals.hold(person):
                async for delta in self._take_in(event, reply, arrived):
                    yield delta
        finally:
            self._waiting.leave(person)

    async def _take_in(self, event: ChatEvent, reply: Reply, arrived: float) -> AsyncIterator[str]:
        """Store the message (unless an adapter did), judge its rate, and answer it."""
        found: Intake | ReplyStatus | str | None = self._accepted.pop(_delivery(event), None)
        if found is None and self._overheard.pop(_delivery(event), None) is not None:
            found = ReplyStatus.IGNORED  # stored as overheard by ``accept``: for no one
        if found is None:
            try:
                async with self._turns:  # a burst queues here too, not in the database pool
                    found = await self._intake(event)
            except Exception as exc:  # noqa: BLE001 - the database's own errors; the notice says what matters
                observe.metrics.error("database", exc)
                log.exception("could not store message %s of %s", event.message_id, event.platform)
                if self.storage_notice_due(f"{event.platform}:{event.user_id}"):
                    reply.status, reply.text = ReplyStatus.NOTICE, NOTICE_STORAGE
                    yield NOTICE_STORAGE
                else:
                    reply.status = ReplyStatus.IGNORED
                return
        if isinstance(found, ReplyStatus):
            reply.status = found
            return
        if isinstance(found, str):
            reply.status, reply.text = ReplyStatus.NOTICE, found
            yield found
            return
        if found.status is MessageStatus.PENDING and found.id in self._claimed and found.id not in self._in_flight:
            # A redelivery of a message a recovery sweep claimed here and answers in its conversation's
            # order: answered now, it would go ahead of the older messages queued before it.
            reply.status = ReplyStatus.DUPLICATE
            return
        if found.status is MessageStatus.PENDING and found.id not in self._in_flight:
            # The person's earlier messages were judged before this one (arrival order), by when they arrived.
            verdict = self._arrival_rate.judge(f"{event.platform}:{event.user_id}", arrived)
            if verdict is not Verdict.ADMIT:
                observe.metrics.rate_limited("arrival")
                await self._settle_unanswered(found)
                async for delta in self._rate_notice(reply, verdict):
                    yield delta
                return
        async for delta in self._answer(found, reply, event.parent_channel_id):
            yield delta

    async def _overflow(self, event: ChatEvent, reply: Reply, person: str, arrived: float) -> AsyncIterator[str]:
        """A message past the bound on waiting turns: one notice to the person, then silence."""
        accepted = self._accepted.pop(_delivery(event), None)
        if accepted is None:
            if self._overheard.pop(_delivery(event), None) is not None:
                reply.status = ReplyStatus.IGNORED
                return
            answerable = await self.answerable(event)
            if isinstance(answerable, ReplyStatus):
                reply.status = answerable
                return
        else:
            await self._settle_unanswered(accepted)  # stored on arrival: recovery must not answer it later
        self._waiting.dropped += 1  # counted here, where it is logged
        observe.metrics.rate_limited("overflow")
        told = self._arrival_rate.tell(f"{event.platform}:{event.user_id}", arrived)
        mine, everyone = self._waiting.waiting(person)
        log.warning(
            "dropped a message from %s: %d of theirs and %d in all waiting "
            "(PERSONAE_MAX_WAITING_PER_PERSON / PERSONAE_MAX_WAITING_TURNS); %d dropped since start",
            person, mine, everyone, self._waiting.dropped,
        )
        async for delta in self._rate_notice(reply, Verdict.NOTICE if told else Verdict.DROP):
            yield delta

    async def _rate_notice(self, reply: Reply, verdict: Verdict) -> AsyncIterator[str]:
        if verdict is Verdict.NOTICE:
            reply.status, reply.text = ReplyStatus.NOTICE, NOTICE_RATE
            yield NOTICE_RATE
        else:
            reply.status = ReplyStatus.RATE_LIMITED

    async def _settle_unanswered(self, intake: Intake) -> None:
        """Mark a stored message that will get no answer (rate limit, overflow) as settled."""
        try:
            await self.store.messages.finish(intake, MessageStatus.NOTICE, None)
        except Exception:  # noqa: BLE001 - the database's own errors: recovery then sends the late notice
            log.exception("could not settle message %s", intake.id)

    async def _answer(
        self, intake: Intake, reply: Reply, parent_channel_id: str | None = None, answering: int | None = None
    ) -> AsyncIterator[str]:
        """Answer a stored message, unless it was answered already or is being answered here."""
        reply.intake = intake
        reply.conversation = intake.conversation
        reply.parent_channel_id = parent_channel_id
        if intake.status is not MessageStatus.PENDING or intake.id in self._in_flight:
            reply.status = ReplyStatus.DUPLICATE
            return
        character = await self.hot.character(intake.conversation.character_id)
        binding = await self._binding_of(intake.conversation, parent_channel_id)
        if character is None or binding is None:
            reply.status = ReplyStatus.IGNORED
            return
        if (answering is not None or is_character_user(intake.conversation.user_id)) and binding.private:
            # A character's answer to another (trigger conversation) whose character is no longer in
            # the channel's cast (removed, unbound meanwhile; or a thread's, recovered without its
            # parent): it says nothing, and its copy of the line goes.
            reply.status = ReplyStatus.IGNORED
            try:
                await self.store.messages.delete_message(intake.id)
            except Exception:  # noqa: BLE001 - the database's own errors: a restart's recovery ignores it again
                log.warning("could not delete follow-up %s of a character no longer in the channel", intake.id, exc_info=True)
            return
        if self.closing:
            reply.status = ReplyStatus.DEFERRED
            return
        reply.character = character
        reply.ensemble = await self._ensemble(binding)
        self._in_flight.add(intake.id)
        queued = reply.queued_at if reply.queued_at is not None else time.monotonic()
        try:
            if getattr(self.cache, "shared", False):
                await self._after_older(intake)
            async with self._turns, self._running():
                observe.metrics.queue_wait(observe.since(queued))
                turn = ChatTurn(
                    self, reply, character, binding, intake.conversation, intake.display_name, intake.text, intake=intake,
                    answering=answering,
                )
                async for delta in turn.run():
                    yield delta
        finally:
            self._in_flight.discard(intake.id)
            self._claimed.discard(intake.id)

    async def _after_older(self, intake: Intake) -> None:
        """With replicas, one person's messages may reach different processes: while an older message
        of the conversation is still pending (being answered elsewhere), wait, so that the turns keep
        their order. Bounded by a lock's lifetime: a message whose replica died is taken over by a
        sweep within a lease, and past the bound this one goes ahead."""
        deadline = time.monotonic() + self.config.turn_deadline_s + 5
        delay = 0.02
        while older := await self.store.messages.pending_before(intake.conversation, intake.id):
            if not any(self._holds_up(i) for i in older):
                return
            if time.monotonic() >= deadline:
                log.warning("an older message of %s is still pending; answering message %s anyway", intake.conversation.cache_key(), intake.id)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    def _holds_up(self, older: Intake) -> bool:
        """Whether a newer message of ``older``'s conversation must wait for it: it is being answered
        (or was claimed by a sweep) here, or another replica holds it (alive, or dead and about to be
        swept). One handed to this process and not begun is ordered by the arrivals lock instead; one
        left behind here, or stored without an owner, is answered by a sweep in its time."""
        if older.id in self._in_flight or older.id in self._claimed:
            return True
        if _delivery_of(older) in self._accepted:
            return False
        return older.owner is not None and older.owner != self.config.replica

    @contextlib.asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        self._turns_running += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._turns_running -= 1
            if self._turns_running == 0:
                self._idle.set()

    def storage_notice_due(self, person: str) -> bool:
        """One storage notice per person per interval: an outage is said once, not per message."""
        now = time.monotonic()
        if now - self._storage_notices.get(person, -1e9) < self.config.storage_notice_interval_s:
            return False
        if len(self._storage_notices) > 10_000:
            self._storage_notices.clear()
        self._storage_notices[person] = now
        return True

    async def _regenerate(
        self, conversation: ConversationKey, display_name: str, reply_message_id: int, reply: Reply,
        parent_channel_id: str | None = None,
    ) -> AsyncIterator[str]:
        reply.conversation = conversation
        reply.parent_channel_id = parent_channel_id
        display_name = clean_display_name(display_name)  # as intake cleans a new message's name
        character = await self.hot.character(conversation.character_id)
        binding = await self._binding_of(conversation, parent_channel_id)
        if character is None or binding is None:
            reply.status = ReplyStatus.NOT_FOUND
            return
        reply.character = character
        reply.ensemble = await self._ensemble(binding)
        recent = await self.store.messages.recent(conversation, 2)
        if len(recent) < 2 or recent[-1].id != reply_message_id or recent[-2].role != "user":
            reply.status = ReplyStatus.NOT_FOUND
            return
        user = recent[-2]
        async with self._running():
            turn = ChatTurn(
                self, reply, character, binding, conversation, display_name, user.content, replace=(user.id, reply_message_id)
            )
            async for delta in turn.run():
                yield delta
        if not binding.private and reply.status in (ReplyStatus.ANSWERED, ReplyStatus.PARTIAL):
            # The characters' answers to each other the old text started were deleted with it
            # (``replace_reply``): their conversations' cached histories go too, to be read again.
            await self.cache.delete_prefix(character_histories_prefix(conversation.platform))

    async def _ensemble(self, binding: Binding) -> bool:
        """Whether several characters play in the binding's channel (one bot speaking for all then
        names the speaker)."""
        if binding.private:
            return False
        (cast,) = await self.hot.casts(binding.platform, binding.channel_id)
        return len(cast) > 1

    async def _binding_of(self, conversation: ConversationKey, parent_channel_id: str | None = None) -> Binding | None:
        """The character's binding where ``conversation`` is: its channel's, or (a thread of a bound
        channel, ``parent_channel_id``) the parent's, whose scene, trigger and cast apply there."""
        cast = await self._cast_at(conversation.platform, conversation.channel_id, parent_channel_id)
        for binding in cast:
            if binding.character_id == conversation.character_id:
                return binding
        # The channel was rebound, or is a thread whose parent is not known here (a recovered or
        # regenerated turn the adapter could not place): use the character's defaults. Whether it is
        # a scene is then unknown: it is not treated as one (``private``).
        return Binding(conversation.platform, "", conversation.channel_id, conversation.character_id, private=True)


@dataclass(frozen=True, slots=True)
class _Unaddressed:
    """A message in a channel with characters that none of them answers: ``binding`` is the first bound."""

    text: str
    binding: Binding


def _delivery(event: ChatEvent) -> tuple[str, str, str]:
    return (event.platform, event.channel_id, event.message_id)


def _delivery_of(intake: Intake) -> tuple[str, str, str]:
    c = intake.conversation
    return (c.platform, c.channel_id, intake.platform_message_id or "")
