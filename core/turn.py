"""One turn of a conversation in short named steps: admit, load, look around, compose, generate, persist, after.

A ``ChatTurn`` answers one stored message (or regenerates the newest reply) while holding the
conversation's lock; ``run`` walks the steps and yields the reply's text as it streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable, TypeVar

from core import observe
from core.card_dialogue import pick_greeting
from core.cards import examples_switch
from core.character import Character
from core.errors import ModelError, PersonaeError
from core.events import ConversationKey, PersonKey, is_character_user
from core.flood import ReplyBudget
from core.hot import HotState, encode_history, encode_state, history_key, lock_key, memory_key, rate_key, state_key
from core.ports import AdmitRequest, Held
from core.slots import MODEL_CHANNEL, SLOT_CLOCK, SlotClock, channel_of
from core.model_input import model_messages
from core.scene import SceneLine, scene_around, scene_budget
from core.prompt import estimate_tokens
from core.reply import NOTICE_BUDGET, NOTICE_CUT, NOTICE_INTERRUPTED, NOTICE_RATE, NOTICE_UNAVAILABLE, Reply, ReplyStatus
from core.state import Binding, Exchange, Intake, MessageStatus, RelationshipState
from core.text import clean_text

if TYPE_CHECKING:
    from core.engine import Engine

log = logging.getLogger(__name__)

Entry = tuple[int, str, str, int]  # (message id, role, content, tokens): a history entry
T = TypeVar("T")


class ChatTurn:
    """The answer to ``intake`` (a stored message), or with ``replace`` = (message id, reply id) a new
    reply in place of the newest one. ``answering``: the stored id of the character's reply that
    ``intake`` is (trigger ``conversation``), when the caller knows it."""

    def __init__(
        self,
        engine: "Engine",
        reply: Reply,
        character: Character,
        binding: Binding,
        conversation: ConversationKey,
        display_name: str,
        text: str,
        *,
        intake: Intake | None = None,
        replace: tuple[int, int] | None = None,
        answering: int | None = None,
    ) -> None:
        self.engine = engine
        self.config = engine.config
        self.reply = reply
        self.character = character
        self.binding = binding
        self.conversation = conversation
        self.display_name = display_name
        self.text = text
        self.intake = intake
        self.replace = replace
        self.answering = answering
        self.person = PersonKey(character.id, conversation.platform, conversation.user_id)
        self.state: RelationshipState | None = None
        self.history: list[Entry] = []
        self.greeting: str | None = None
        self.from_start = True  # the history window starts at the conversation's start (a leading reply is the greeting)
        self.scene: str | None = None
        self.scene_lines: list[SceneLine] = []  # the channel's lines around this conversation (core.scene)
        self.memories: list = []  # what the character remembers of the person here (``core.memory``)
        self.window_from_start = True  # after the reply: the history window still reaches the start
        self.answer = ""
        self.user_tokens = estimate_tokens(text)

    async def run(self) -> AsyncIterator[str]:
        """Lock the conversation, then walk the steps; the state update runs after the lock is released."""
        cfg = self.config
        keys = (state_key(self.person), history_key(self.conversation))
        if self.engine.memory is not None:
            keys += (memory_key(self.conversation),)
        admit = None
        if self.intake is not None:
            # The database keeps the record of deliveries (the stored message); the cache counts the rate.
            admit = AdmitRequest(None, 0.0, rate_key(self.conversation.platform, self.conversation.user_id), cfg.rate_limit_window_s)
        # The turn's id in log lines: the stored message it answers (for a regenerate, the one it answers again).
        turn = self.intake.id if self.intake is not None else self.replace[0] if self.replace is not None else None
        with observe.in_turn(self.conversation.cache_key(), turn):
            async with self.engine.cache.hold(lock_key(self.conversation), ttl=cfg.turn_deadline_s + 5, read=keys, admit=admit) as held:
                notice = await self.admit(held)
                if notice is not None:
                    if notice:
                        yield notice
                    return
                if not await self.load(held):
                    return
                await self.look_around()
                messages = await self.compose()
                async with contextlib.aclosing(self.generate(messages)) as deltas:
                    async for delta in deltas:
                        if not await held.still_held():
                            self.lock_lost()
                            return
                        yield delta
                if not await held.still_held():
                    self.lock_lost()
                    return
                stored = await self.persist(held)
            if stored:
                self.after()

    def lock_lost(self) -> None:
        """The conversation's lock was lost mid-reply (this process was paused past its lease): the
        replica that took the message over answers it; this reply is neither shown further nor stored."""
        log.warning("the lock of %s was lost mid-reply; this reply stops, another replica answers", self.conversation.cache_key())
        self.reply.status = ReplyStatus.LOST
        self.reply.text = ""

    # -- the steps ---------------------------------------------------------------------------

    async def admit(self, held: Held) -> str | None:
        """None to go on; a notice to show (or "" for silence) when the person is over the rate limit."""
        cfg, reply = self.config, self.reply
        if held.admission is None or held.admission.count <= cfg.rate_limit_messages:
            return None
        assert self.intake is not None
        observe.metrics.rate_limited("admission")
        await self.engine.store.messages.finish(self.intake, MessageStatus.NOTICE, None)
        if held.admission.count == cfg.rate_limit_messages + 1:
            reply.status, reply.text = ReplyStatus.NOTICE, NOTICE_RATE
            return NOTICE_RATE
        reply.status = ReplyStatus.RATE_LIMITED
        return ""

    async def load(self, held: Held) -> bool:
        """The person's state and the recent history; False (status set) when there is nothing to answer."""
        cfg, hot, reply = self.config, self.engine.hot, self.reply
        state, from_db = await hot.state(self.person, self.character, held.values[0])
        if from_db:
            held.stage(state_key(self.person), encode_state(state), cfg.cache_ttl_s)
        self.state = self.engine.state_updater.as_of_now(state, self.character)  # idle emotions drift back
        history, self.from_start = await hot.history(self.conversation, cfg.history_turns, held.values[1])
        if self.intake is not None and any(entry[0] == self.intake.id for entry in history):
            reply.status = ReplyStatus.DUPLICATE  # answered while this turn waited for the lock
            return False
        if self.replace is not None:
            user_id, reply_id = self.replace
            if len(history) < 2 or history[-1][0] != reply_id or history[-2][0] != user_id:
                reply.status = ReplyStatus.NOT_FOUND
                return False
            history = history[:-2]
        elif not history and not is_character_user(self.conversation.user_id) and (
            greeting := pick_greeting(self.character, self.display_name)
        ):
            # First contact with a person: the character's greeting opens the conversation (stored
            # with the reply). An answer to another character's line (user ``character:ID``) has none.
            self.greeting = greeting
            history = [(0, "assistant", greeting, estimate_tokens(greeting))]
            reply.greeting = greeting
        self.history = history
        if self.engine.memory is not None:
            self.memories = await self.engine.memory.recall(self.conversation, held.values[2], held)
        return True

    async def look_around(self) -> None:
        """In a channel that is a scene: the newest lines of its other conversations (other people,
        other characters, this character's replies to others) from before the message answered,
        within PERSONAE_SCENE_SHARE of the input budget. Never in a private chat. Answering another
        character's reply, that reply is the turn's text: it is left out of the lines."""
        cfg = self.config
        self.scene_lines = await scene_around(
            self.engine.store, self.engine.hot, self.character, self.binding, self.conversation, self.history,
            before_id=self.intake.id if self.intake is not None else self.replace[0] if self.replace is not None else None,
            share=scene_budget(cfg.scene_share, cfg.max_input_tokens - cfg.max_tokens), limit=cfg.scene_lines,
            answering=await self._answering(),
        )

    async def _answering(self) -> int | None:
        """The stored id of the character's reply this turn answers (trigger ``conversation``): given
        by ``Engine.follow_up``, or (a turn recovered after a crash) found by the platform message
        the reply was shown in, which the follow-up was stored under. None for a person's message,
        and when the reply's platform message was not remembered (``Engine.shown`` failed)."""
        if self.answering is not None or self.intake is None or self.binding.private or self.config.scene_share <= 0:
            return self.answering
        if not is_character_user(self.conversation.user_id) or not self.intake.platform_message_id:
            return None
        c = self.conversation
        return await self.engine.store.messages.shown_reply(c.platform, c.channel_id, self.intake.platform_message_id)

    async def compose(self) -> list[dict[str, str]]:
        """The model's messages (``core.model_input.model_messages``): the system prompt, the card's
        examples if they are on, the history from the greeting's opening line, the new text."""
        character = self.character
        self.scene = self.binding.scene if self.binding.scene is not None else character.profile.scene
        return await self._fit()

    async def generate(self, messages: list[dict[str, str]]) -> AsyncIterator[str]:
        """Stream the reply within the turn deadline; a failure or a shutdown cut ends it with a notice."""
        cfg, reply = self.config, self.reply
        parts: list[str] = []
        failure: str | None = None
        budget = ReplyBudget(cfg.max_tokens)
        # The model budget's fair shares are per channel: say whose request this is (its appraisal,
        # started from this task, inherits it).
        MODEL_CHANNEL.set(channel_of(self.conversation.platform, self.conversation.channel_id))
        clock = SlotClock()
        SLOT_CLOCK.set(clock)
        asked = time.monotonic()
        first: float | None = None
        try:
            async with self.engine.cuttable(cfg.turn_deadline_s):
                stream = self.engine.model.stream(messages, max_tokens=cfg.max_tokens, temperature=cfg.temperature, stop=cfg.stop)
                async with contextlib.aclosing(stream):  # type: ignore[type-var]
                    async for delta in stream:
                        if first is None and delta:
                            first = time.monotonic()
                            # From the model slot taken (waiting for it is personae_model_slot_wait_seconds).
                            observe.metrics.model_first_token(first - (clock.taken or asked))
                        delta = budget.take(clean_text(delta))
                        if delta:
                            parts.append(delta)
                            yield delta
                        if budget.spent:
                            # The server ignored max_tokens: stop reading; what was shown is what is stored.
                            log.warning(
                                "the model server sent more than max_tokens=%d for %s; reply cut",
                                cfg.max_tokens, self.conversation.cache_key(),
                            )
                            parts.append(NOTICE_BUDGET)
                            yield NOTICE_BUDGET
                            break
        except ModelError as exc:
            failure = str(exc)
            reply.problem = failure
            observe.metrics.error("model", exc)
        except TimeoutError as exc:
            failure = "shutdown" if self.engine.cutting else f"no complete reply within the {cfg.turn_deadline_s:g} s turn deadline"
            if not self.engine.cutting:
                observe.metrics.error("turn_deadline", exc)
        if first is not None and budget.deltas > 1:
            # The pace after the first token: deltas past the first over the time they took.
            took = time.monotonic() - first
            if took > 0:
                observe.metrics.model_tokens_per_second((budget.deltas - 1) / took)
        self.answer = "".join(parts).strip()
        if failure is not None:
            log.warning("model failure for %s: %s", self.conversation.cache_key(), failure)
            notice = NOTICE_INTERRUPTED if failure == "shutdown" else NOTICE_CUT
            notice = notice if self.answer else NOTICE_UNAVAILABLE
            reply.status = ReplyStatus.PARTIAL if self.answer else ReplyStatus.FAILED
            yield notice
            reply.text = "".join(parts) + notice
        else:
            reply.status = ReplyStatus.ANSWERED if self.answer else ReplyStatus.FAILED
            reply.text = self.answer
            if not self.answer:
                reply.text = NOTICE_UNAVAILABLE
                yield NOTICE_UNAVAILABLE

    async def persist(self, held: Held) -> bool:
        """Store the reply (the message marked answered in the same transaction); True if a reply was stored."""
        cfg, reply, store = self.config, self.reply, self.engine.store
        stored_reply = (self.answer, estimate_tokens(self.answer)) if self.answer else None
        h_key = history_key(self.conversation)
        new: list[Entry]
        if self.replace is not None:
            user_id, reply_id = self.replace
            reply.user_message_id, reply.reply_message_id = user_id, reply_id
            if stored_reply is None:
                held.stage(h_key, None, cfg.cache_ttl_s)  # the old reply stays
                return False
            await self.engine.stored(lambda: store.messages.replace_reply(reply_id, *stored_reply))
            new = [(user_id, "user", self.text, self.user_tokens), (reply_id, "assistant", self.answer, stored_reply[1])]
        else:
            assert self.intake is not None
            status = MessageStatus.ANSWERED if stored_reply else MessageStatus.FAILED
            greeting = (self.greeting, self.history[0][3]) if self.greeting is not None else None
            ids = await self.engine.stored(lambda: store.messages.finish(self.intake, status, stored_reply, greeting))  # type: ignore[arg-type]
            if ids is None:
                log.warning("message %s was answered elsewhere meanwhile; this reply is not stored", self.intake.id)
                held.stage(h_key, None, cfg.cache_ttl_s)
                return False
            user_id, reply_id, greeting_id = ids
            if greeting_id is not None:
                self.history = [(greeting_id, *self.history[0][1:])] + self.history[1:]
            reply.user_message_id, reply.reply_message_id = user_id, reply_id
            new = [(user_id, "user", self.text, self.user_tokens)]
            if reply_id is not None:
                new.append((reply_id, "assistant", self.answer, stored_reply[1]))  # type: ignore[index]
        window = self.history + new
        from_start = self.from_start and len(window) <= cfg.history_turns
        window = window[len(window) - cfg.history_turns :] if len(window) > cfg.history_turns else window
        self.window_from_start = from_start
        held.stage(h_key, encode_history(window, from_start), cfg.cache_ttl_s)
        return reply.reply_message_id is not None

    def after(self) -> None:
        """Move the character's feelings in the background, off the reply's path."""
        assert self.state is not None and self.reply.user_message_id is not None
        c = self.conversation
        exchange = Exchange(
            character_id=self.character.id,
            platform=c.platform,
            channel_id=c.channel_id,
            user_id=c.user_id,
            display_name=self.display_name,
            scene=self.scene,
            state_before=self.state,
            history=tuple((role, content) for _, role, content, _ in self.history),
            user_text=self.text,
            reply_text=self.answer,
            user_message_id=self.reply.user_message_id,
            reply_message_id=self.reply.reply_message_id,  # type: ignore[arg-type]
            regenerated=self.replace is not None,
        )
        self.engine.in_background(self.engine.state_updater.after_exchange(exchange))
        memory = self.engine.memory
        if memory is not None and not self.window_from_start:
            # Turns have left the history window: condense them into memories, off the reply's path.
            self.engine.in_background(memory.after_turn(c, self.character, self.display_name), what="memory condensing")

    # -- helpers -----------------------------------------------------------------------------

    def _inputs(self) -> dict:
        """Everything ``model_messages`` is given for this turn but the budget."""
        character, state = self.character, self.state
        assert state is not None
        switch = examples_switch(character.card)
        return dict(
            user=self.display_name,
            text=self.text,
            history=HotState.turns(self.history),
            scene=self.scene,
            emotion=state.emotion,
            intimacy=state.intimacy,
            examples=character.examples,
            use_examples=self.config.card_examples if switch is None else switch,
            # A leading reply is the greeting only when the window reaches the conversation's start
            # (known exactly: ``HotState.history``); otherwise it is a reply cut from its message.
            from_start=self.from_start,
            scene_lines=self.scene_lines,
            scene_layout=self.config.scene_layout,
            lore=self.config.lore,
            memories=self.engine.memory.for_prompt(self.memories, self.text) if self.engine.memory is not None else (),
        )

    async def _fit(self) -> list[dict[str, str]]:
        """The messages for the model within the input budget.

        The estimate over-counts, so when it fits nothing is asked of the model server; only a
        prompt near the budget is counted exactly (``/tokenize`` on TGI).
        """
        cfg, text, model, profile = self.config, self.text, self.engine.model, self.character.profile
        inputs = self._inputs()
        budget = cfg.max_input_tokens - cfg.max_tokens
        messages = model_messages(profile, **inputs)
        if sum(estimate_tokens(m["content"]) for m in messages) <= budget:
            return messages
        system = messages[0]["content"]
        exact = dict(zip((system, text), await asyncio.gather(model.count_tokens(system), model.count_tokens(text))))
        self.user_tokens = exact[text]
        return model_messages(
            profile, **inputs, budget=budget, count=lambda s: exact[s] if s in exact else estimate_tokens(s)
        )


async def with_backoff(write: Callable[[], Awaitable[T]], *, give_up_after: float, what: str) -> T:
    """Run ``write()`` until it succeeds, waiting longer each time (the database may be restarting);
    after ``give_up_after`` seconds the last error is raised. Domain errors are not retried."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after
    delay = 0.2
    warned = False
    while True:
        try:
            return await write()
        except PersonaeError:
            raise
        except Exception as exc:  # noqa: BLE001 - the database's own errors are storage's business
            if loop.time() + delay > deadline:
                raise
            if not warned:
                log.warning("could not store %s (%s: %s); retrying until the database is back", what, type(exc).__name__, exc)
                warned = True
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)
