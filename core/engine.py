"""``Engine.handle``: one chat message in, a streamed in-character reply out, history and state kept."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import AsyncIterator, Awaitable, Callable

from core.character import Character
from core.errors import ModelError
from core.flood import ArrivalWindow, ReplyBudget, Verdict, WaitingTurns
from core.events import ChatEvent, ConversationKey, PersonKey, Trigger
from core.hot import HotState, dedupe_key, encode_history, encode_state, history_key, lock_key, rate_key, state_key
from core.locks import KeyedLocks
from core.ports import AdmitRequest, Cache, ChatModel, StateUpdater, Store
from core.card_dialogue import parse_examples, pick_greeting
from core.prompt import Turn, build_messages, estimate_tokens, render_system_prompt
from core.state import Binding, Exchange, RelationshipState
from core.text import clean_text

log = logging.getLogger(__name__)

NOTICE_UNAVAILABLE = "(The story pauses here: the model server is not answering. Please try again in a moment.)"
NOTICE_CUT = " …(the reply was cut short: the model server stopped answering)"
NOTICE_RATE = "(You are sending messages faster than I can answer. Please wait a minute.)"
NOTICE_BUDGET = " …"  # ends a reply cut at the token budget, shown and stored alike
NOTICE_TOO_LONG = "(That message is too long for me: please keep it under {limit:,} characters.)"


class ReplyStatus(StrEnum):
    PENDING = "pending"
    ANSWERED = "answered"  # a complete reply
    PARTIAL = "partial"  # some text, then the model server failed; a notice ends it
    FAILED = "failed"  # the model server failed before any text; the text is a notice
    NOTICE = "notice"  # no model call: a rate-limit or message-too-long notice
    RATE_LIMITED = "rate_limited"  # over the limit after the notice: silence
    DUPLICATE = "duplicate"  # a redelivered message: no reply
    IGNORED = "ignored"  # not for this bot (unbound channel, not addressed, empty)
    NO_CHARACTER = "no_character"  # a private chat where the person has not picked a character
    NOT_FOUND = "not_found"  # regenerate: there is no newest reply to replace


@dataclass(slots=True)
class EngineConfig:
    """Limits and model settings the engine applies to every turn."""

    max_tokens: int = 96
    temperature: float = 0.7
    stop: tuple[str, ...] = ()
    max_input_tokens: int = 3500
    history_turns: int = 40
    rate_limit_messages: int = 20
    rate_limit_window_s: float = 60.0
    dedupe_ttl_s: float = 86400.0
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


class Reply:
    """The answer to one event: iterate it for text deltas; afterwards ``status``, ``text`` and ids say what happened."""

    def __init__(self, run: Callable[["Reply"], AsyncIterator[str]]) -> None:
        self._run = run
        self.status = ReplyStatus.PENDING
        self.text = ""
        self.character: Character | None = None
        self.conversation: ConversationKey | None = None
        self.user_message_id: int | None = None
        self.reply_message_id: int | None = None
        # Set before the first delta on first contact: the character's greeting, shown before the reply.
        self.greeting: str | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._run(self)

    async def collect(self) -> str:
        """Run the turn to the end and return the whole text."""
        async for _ in self:
            pass
        return self.text


class NoStateChange:
    """The state-update step that leaves emotion and intimacy where they are (the card's baselines)."""

    async def after_exchange(self, exchange: Exchange) -> None:
        return None

    async def reply_deleted(self, conversation: ConversationKey, reply_message_id: int) -> None:
        return None

    def as_of_now(self, state: RelationshipState, character: Character) -> RelationshipState:
        return state


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
        self._background: set[asyncio.Task[None]] = set()
        # One person's messages in one channel wait here in arrival order, before anything can reorder them.
        self._arrivals = KeyedLocks()
        self._turns = asyncio.Semaphore(self.config.max_concurrent_turns)
        self._waiting = WaitingTurns(self.config.max_waiting_per_person, self.config.max_waiting_turns)
        self._arrival_rate = ArrivalWindow(self.config.rate_limit_messages, self.config.rate_limit_window_s)

    # -- public API -------------------------------------------------------------------------

    def handle(self, event: ChatEvent) -> Reply:
        """The reply to ``event``; nothing runs until it is iterated."""
        return Reply(lambda reply: self._handle(event, reply))

    def regenerate(self, conversation: ConversationKey, display_name: str, reply_message_id: int) -> Reply:
        """A new reply in place of the newest one of ``conversation`` (which must be ``reply_message_id``)."""
        return Reply(lambda reply: self._regenerate(conversation, display_name, reply_message_id, reply))

    async def delete_reply(self, conversation: ConversationKey, reply_message_id: int) -> bool:
        """Take back the newest reply of ``conversation``: delete it and undo its change to the state.

        False (and nothing changed) when ``reply_message_id`` is not the newest reply.
        """
        async with self.cache.hold(lock_key(conversation), ttl=self.config.turn_deadline_s + 5) as held:
            recent = await self.store.messages.recent(conversation, 1)
            if not recent or recent[-1].id != reply_message_id or recent[-1].role != "assistant":
                return False
            await self.store.messages.delete_message(reply_message_id)
            held.stage(history_key(conversation), None, self.config.cache_ttl_s)
        await self.state_updater.reply_deleted(conversation, reply_message_id)
        return True

    async def binding_for(self, event: ChatEvent) -> Binding | None:
        """The binding that applies to the event's channel (a thread inherits its parent's)."""
        channels = [event.channel_id] + ([event.parent_channel_id] if event.parent_channel_id else [])
        for binding in await self.hot.bindings(event.platform, *channels):
            if binding is not None:
                return binding
        return None

    @property
    def turns_waiting(self) -> int:
        """Turns accepted and not finished (waiting for their turn or being answered)."""
        return self._waiting.in_all

    @property
    def turns_dropped(self) -> int:
        """Messages dropped since start because too many turns were waiting (each one is logged)."""
        return self._waiting.dropped

    async def drain(self) -> None:
        """Wait for state updates still running in the background (shutdown, tests)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # -- one turn ---------------------------------------------------------------------------

    async def _handle(self, event: ChatEvent, reply: Reply) -> AsyncIterator[str]:
        person = f"{event.platform}:{event.channel_id}:{event.user_id}"
        arrived = event.sent_at if event.sent_at is not None else time.time()
        # Judged before the first await, so the bound holds however many arrive at once.
        if self._waiting.full(person):
            async for delta in self._overflow(event, reply, person, arrived):
                yield delta
            return
        self._waiting.enter(person)
        try:
            async with self._arrivals.hold(person):
                async for delta in self._admit_and_answer(event, reply, arrived):
                    yield delta
        finally:
            self._waiting.leave(person)

    async def _answerable(self, event: ChatEvent, reply: Reply) -> tuple[str, Binding] | None:
        """The cleaned text and the binding when the character answers ``event``; else None (status set)."""
        text = clean_text(event.text).strip()  # the adapters clean too; nothing unclean reaches storage
        if not text:
            reply.status = ReplyStatus.IGNORED
            return None
        binding = await self.binding_for(event)
        if binding is None:
            reply.status = ReplyStatus.NO_CHARACTER if event.private else ReplyStatus.IGNORED
            return None
        if binding.trigger is Trigger.MENTION and not (event.addressed or event.private):
            reply.status = ReplyStatus.IGNORED
            return None
        return text, binding

    async def _overflow(self, event: ChatEvent, reply: Reply, person: str, arrived: float) -> AsyncIterator[str]:
        """A message past the bound on waiting turns: one notice to the person, then silence."""
        if await self._answerable(event, reply) is None:
            return
        self._waiting.dropped += 1  # counted here, where it is logged
        told = self._arrival_rate.tell(f"{event.platform}:{event.user_id}", arrived)
        verdict = Verdict.NOTICE if told else Verdict.DROP
        mine, everyone = self._waiting.waiting(person)
        log.warning(
            "dropped a message from %s: %d of theirs and %d in all waiting "
            "(PERSONAE_MAX_WAITING_PER_PERSON / PERSONAE_MAX_WAITING_TURNS); %d dropped since start",
            person, mine, everyone, self._waiting.dropped,
        )
        async for delta in self._rate_notice(reply, verdict):
            yield delta

    async def _rate_notice(self, reply: Reply, verdict: Verdict) -> AsyncIterator[str]:
        if verdict is Verdict.NOTICE:
            reply.status, reply.text = ReplyStatus.NOTICE, NOTICE_RATE
            yield NOTICE_RATE
        else:
            reply.status = ReplyStatus.RATE_LIMITED

    async def _admit_and_answer(self, event: ChatEvent, reply: Reply, arrived: float) -> AsyncIterator[str]:
        answerable = await self._answerable(event, reply)
        if answerable is None:
            return
        text, binding = answerable
        # The person's earlier messages were judged before this one (arrival order), by when they arrived.
        verdict = self._arrival_rate.judge(f"{event.platform}:{event.user_id}", arrived)
        if verdict is not Verdict.ADMIT:
            async for delta in self._rate_notice(reply, verdict):
                yield delta
            return
        async with self._turns:
            async for delta in self._answer(event, binding, text, reply):
                yield delta

    async def _answer(self, event: ChatEvent, binding: Binding, text: str, reply: Reply) -> AsyncIterator[str]:
        cfg = self.config
        if len(text) > cfg.max_message_chars:
            reply.status = ReplyStatus.NOTICE
            reply.text = NOTICE_TOO_LONG.format(limit=cfg.max_message_chars)
            yield reply.text
            return
        character = await self.hot.character(binding.character_id)
        if character is None:
            reply.status = ReplyStatus.IGNORED
            return
        reply.character = character
        conversation = ConversationKey(character.id, event.platform, event.channel_id, event.user_id)
        reply.conversation = conversation
        # The cache admits the event (dedupe key, rate count) in the same round trip that locks the
        # conversation. The database has the last word on redeliveries (the cache may have lost its
        # key): its answer is awaited before the model is asked, and meanwhile the lock is taken.
        admit = AdmitRequest(
            dedupe_key(event.platform, event.channel_id, event.message_id),
            cfg.dedupe_ttl_s,
            rate_key(event.platform, event.user_id),
            cfg.rate_limit_window_s,
        )
        first_delivery = asyncio.ensure_future(
            self.store.events.mark_processed(event.platform, f"{event.channel_id}:{event.message_id}")
        )
        try:
            async for delta in self._turn(
                reply, character, binding, conversation, event.display_name, text, event.message_id, first_delivery, admit
            ):
                yield delta
        finally:
            if not first_delivery.done():
                # Let the insert finish rather than cancel it midway (a statement cut off in a driver
                # thread can leave its connection holding SQLite's write lock).
                self._in_background(first_delivery, "recording a processed event")

    async def _turn(
        self,
        reply: Reply,
        character: Character,
        binding: Binding,
        conversation: ConversationKey,
        display_name: str,
        text: str,
        platform_message_id: str | None,
        first_delivery: Awaitable[bool] | None = None,
        admit: AdmitRequest | None = None,
        replace: tuple[int, int] | None = None,
    ) -> AsyncIterator[str]:
        """Lock the conversation, stream the reply, store it; ``replace`` = (user id, reply id) to regenerate."""
        cfg = self.config
        person = PersonKey(character.id, conversation.platform, conversation.user_id)
        s_key, h_key = state_key(person), history_key(conversation)
        async with self.cache.hold(
            lock_key(conversation), ttl=cfg.turn_deadline_s + 5, read=(s_key, h_key), admit=admit
        ) as held:
            if held.admission is not None:
                if not held.admission.first:
                    reply.status = ReplyStatus.DUPLICATE
                    return
                if held.admission.count > cfg.rate_limit_messages:
                    if held.admission.count == cfg.rate_limit_messages + 1:
                        reply.status, reply.text = ReplyStatus.NOTICE, NOTICE_RATE
                        yield NOTICE_RATE
                    else:
                        reply.status = ReplyStatus.RATE_LIMITED
                    return
            state, state_from_db = await self.hot.state(person, character, held.values[0])
            if state_from_db:
                held.stage(s_key, encode_state(state), cfg.cache_ttl_s)
            state = self.state_updater.as_of_now(state, character)  # idle emotions drift back toward the baseline
            history, _ = await self.hot.history(conversation, cfg.history_turns, held.values[1])
            if first_delivery is not None and not await first_delivery:
                reply.status = ReplyStatus.DUPLICATE
                return
            if replace is not None:
                if len(history) < 2 or history[-1][0] != replace[1] or history[-2][0] != replace[0]:
                    reply.status = ReplyStatus.NOT_FOUND
                    return
                history = history[:-2]
            elif not history and (greeting := pick_greeting(character, display_name)):
                # First contact: the character's greeting opens the conversation.
                tokens = estimate_tokens(greeting)
                greeting_id = await self.store.messages.add_greeting(conversation, greeting, tokens)
                history = [(greeting_id, "assistant", greeting, tokens)]
                reply.greeting = greeting
            scene = binding.scene if binding.scene is not None else character.profile.scene
            system = render_system_prompt(
                character.profile,
                chat_role=display_name,
                scene=scene,
                emotion=state.emotion,
                relationship=state.intimacy,
            )
            examples = parse_examples(character.examples, char=character.name, user=display_name) if character.examples else []
            messages, user_tokens = await self._fit(system, examples, HotState.turns(history), text)
            parts: list[str] = []
            failure: ModelError | None = None
            budget = ReplyBudget(cfg.max_tokens)
            try:
                async with asyncio.timeout(cfg.turn_deadline_s):
                    stream = self.model.stream(messages, max_tokens=cfg.max_tokens, temperature=cfg.temperature, stop=cfg.stop)
                    async with contextlib.aclosing(stream):  # type: ignore[type-var]
                        async for delta in stream:
                            delta = budget.take(clean_text(delta))
                            if delta:
                                parts.append(delta)
                                yield delta
                            if budget.spent:
                                # The server ignored max_tokens: stop reading; what was shown is what is stored.
                                log.warning(
                                    "the model server sent more than max_tokens=%d for %s; reply cut",
                                    cfg.max_tokens, conversation.cache_key(),
                                )
                                parts.append(NOTICE_BUDGET)
                                yield NOTICE_BUDGET
                                break
            except ModelError as exc:
                failure = exc
            except TimeoutError:
                failure = ModelError(
                    f"no complete reply within the {cfg.turn_deadline_s:g} s turn deadline", retryable=True
                )
            answer = "".join(parts).strip()
            if failure is not None:
                log.warning("model failure for %s: %s", conversation.cache_key(), failure)
                notice = NOTICE_CUT if answer else NOTICE_UNAVAILABLE
                reply.status = ReplyStatus.PARTIAL if answer else ReplyStatus.FAILED
                yield notice
                reply.text = "".join(parts) + notice
            else:
                reply.status = ReplyStatus.ANSWERED if answer else ReplyStatus.FAILED
                reply.text = answer
                if not answer:
                    reply.text = NOTICE_UNAVAILABLE
                    yield NOTICE_UNAVAILABLE
            stored_reply = (answer, estimate_tokens(answer)) if answer else None
            if replace is None:
                user_id, reply_id = await self.store.messages.add_exchange(
                    conversation, (text, user_tokens, platform_message_id), stored_reply
                )
                new = [(user_id, "user", text, user_tokens)]
                if reply_id is not None:
                    new.append((reply_id, "assistant", answer, stored_reply[1]))  # type: ignore[index]
            else:
                user_id, reply_id = replace
                if stored_reply is None:
                    # Keep the old reply when the new one failed.
                    reply.reply_message_id = reply_id
                    reply.user_message_id = user_id
                    held.stage(h_key, None, cfg.cache_ttl_s)
                    return
                await self.store.messages.replace_reply(reply_id, *stored_reply)
                new = [(user_id, "user", text, user_tokens), (reply_id, "assistant", answer, stored_reply[1])]
            reply.user_message_id, reply.reply_message_id = user_id, reply_id
            window = (history + new)[-cfg.history_turns :]
            held.stage(h_key, encode_history(window), cfg.cache_ttl_s)
        if reply_id is not None:
            exchange = Exchange(
                character_id=character.id,
                platform=conversation.platform,
                channel_id=conversation.channel_id,
                user_id=conversation.user_id,
                display_name=display_name,
                scene=scene,
                state_before=state,
                history=tuple((role, content) for _, role, content, _ in history),
                user_text=text,
                reply_text=answer,
                user_message_id=user_id,
                reply_message_id=reply_id,
                regenerated=replace is not None,
            )
            self._in_background(self.state_updater.after_exchange(exchange))

    async def _fit(
        self, system: str, examples: list[Turn], history: list[Turn], text: str
    ) -> tuple[list[dict[str, str]], int]:
        """The messages for the model within the input budget, and the new text's token count.

        The estimate over-counts, so when it fits nothing is asked of the model server; only a
        prompt near the budget is counted exactly (``/tokenize`` on TGI).
        """
        budget = self.config.max_input_tokens - self.config.max_tokens
        user_tokens = estimate_tokens(text)
        estimated = estimate_tokens(system) + user_tokens + sum(
            t.tokens or estimate_tokens(t.content) for t in (*examples, *history)
        )
        if estimated <= budget:
            return build_messages(system, history, text, examples=examples), user_tokens
        exact = dict(zip((system, text), await asyncio.gather(self.model.count_tokens(system), self.model.count_tokens(text))))
        user_tokens = exact[text]
        messages = build_messages(
            system, history, text, examples=examples, budget=budget,
            count=lambda s: exact[s] if s in exact else estimate_tokens(s),
        )
        return messages, user_tokens

    async def _regenerate(
        self, conversation: ConversationKey, display_name: str, reply_message_id: int, reply: Reply
    ) -> AsyncIterator[str]:
        reply.conversation = conversation
        character = await self.hot.character(conversation.character_id)
        binding = await self._binding_of(conversation)
        if character is None or binding is None:
            reply.status = ReplyStatus.NOT_FOUND
            return
        reply.character = character
        recent = await self.store.messages.recent(conversation, 2)
        if len(recent) < 2 or recent[-1].id != reply_message_id or recent[-2].role != "user":
            reply.status = ReplyStatus.NOT_FOUND
            return
        user = recent[-2]
        async for delta in self._turn(
            reply, character, binding, conversation, display_name, user.content, None, None, None, replace=(user.id, reply_message_id)
        ):
            yield delta

    async def _binding_of(self, conversation: ConversationKey) -> Binding | None:
        (binding,) = await self.hot.bindings(conversation.platform, conversation.channel_id)
        if binding is not None and binding.character_id == conversation.character_id:
            return binding
        # The channel was rebound or is a thread of a bound channel: use the character's defaults.
        return Binding(conversation.platform, "", conversation.channel_id, conversation.character_id)

    def _in_background(self, work: Awaitable[object], what: str = "state update") -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("%s failed", what)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
