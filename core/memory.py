"""Long-term memory: what a character keeps of a person once turns leave the history window.

Memories are kept per conversation scope: (character, platform, channel, person). A private chat's
memories stay in the private chat; a group channel's stay in that channel.

- **Condensing** (``MemoryKeeper.after_turn``, in the background like the appraisal): when at least
  ``batch`` messages have left the history window (``PERSONAE_HISTORY_TURNS``) since the last
  condensing, the model reads them and answers short memories in the character's language: facts
  the person told, events of the story, how the relationship changed. The new memories and the
  conversation's condensed mark (the last ``seq`` condensed) are written in one transaction that
  only succeeds if the mark has not moved meanwhile: nothing is condensed twice, and a failed model
  call leaves the mark where it was (the same turns are tried again later, nothing lost).
- **Merge and prune**: a new memory that says nearly what an older one of its kind says replaces
  it; past the budget (``PERSONAE_MEMORY_TOKENS``) the oldest events go first, then the oldest
  relationship notes, then the oldest facts.
- **Recall** (``select``): the memories whose words overlap the new message, and the newest ones,
  within ``PERSONAE_MEMORY_PROMPT_TOKENS``, go into the scene text (``core.scene_text``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Sequence

from core import observe
from core.character import Character
from core.errors import ModelError
from core.events import ConversationKey
from core.hot import lock_key, memory_key
from core.json_answer import last_json_object
from core.ports import Cache, ChatModel, Held, Store
from core.prompt import dialogue_lines, estimate_tokens
from core.text import clean_text, one_line, one_line_name

log = logging.getLogger(__name__)

KINDS = ("fact", "event", "relationship")
MAX_MEMORY_CHARS = 300  # one memory: a sentence or two
MAX_NEW_PER_ANSWER = 12  # memories read from one answer at most
UTTERANCE_CHARS = 600  # an utterance longer than this is cut in the condensing task
CUT_MARK = "…"
SIMILAR = 0.6  # word overlap (Jaccard) at which a new memory replaces an older one of its kind
PRUNE_ORDER = ("event", "relationship", "fact")  # what goes first when over the budget
MEMORY_SYSTEM = "You are a helpful assistant."
# The task's own tokens around the dialogue and the answer's layout, for the fitting estimate.
_LAYOUT_TOKENS = 8


@dataclass(frozen=True, slots=True)
class Memory:
    """One thing a character remembers of a person, with the turns it came from (``seq`` range)."""

    id: int
    kind: str
    text: str
    seq_from: int
    seq_to: int
    tokens: int
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class NewMemory:
    kind: str
    text: str
    seq_from: int
    seq_to: int
    tokens: int


@dataclass(frozen=True, slots=True)
class Line:
    """A stored message waiting to be condensed: its place in the history, role and text."""

    seq: int
    role: str
    content: str


# -- the condensing task --------------------------------------------------------------------------

TASK_EN = (
    "Below is part of a role-play conversation between {char} and {user}. Write down what {char} should "
    "remember about {user} for later conversations, as short memories of one sentence each, in English, "
    "naming {user} by name:\n"
    '- "fact": something {user} told about themselves (name, likes and dislikes, plans, promises, people and places in their life);\n'
    '- "event": something that happened in the story;\n'
    '- "relationship": how the relationship between {char} and {user} changed, and why.\n'
    "Leave out small talk and what {char} already remembers. Answer with one JSON object only: "
    '{{"memories": [{{"kind": "fact", "text": "..."}}]}}, with an empty list if nothing is worth remembering.\n\n'
    "[Already remembered]\n{known}\n\n[Conversation]\n{dialogue}"
)
TASK_ZH = (
    "下面是{char}与{user}之间的一段角色扮演对话。请写下{char}在以后的对话中应当记住的关于{user}的事，"
    "每条记忆一句话，用中文，直接写出{user}的名字：\n"
    "- \"fact\"：{user}讲述的关于自己的事（名字、喜好、计划、承诺、生活中的人和地方）；\n"
    "- \"event\"：故事中发生的事；\n"
    "- \"relationship\"：{char}与{user}的关系如何变化，以及原因。\n"
    "略去闲聊和{char}已经记得的事。只回答一个JSON对象："
    '{{"memories": [{{"kind": "fact", "text": "..."}}]}}，没有值得记住的事就给空列表。\n\n'
    "[已记得]\n{known}\n\n[对话]\n{dialogue}"
)
NOTHING_KNOWN = {"en": "(nothing yet)", "zh": "（暂无）"}


def memory_schema() -> dict[str, Any]:
    """The guided-JSON schema of the answer (TGI wants ``properties`` at the top)."""
    item = {
        "type": "object",
        "properties": {"kind": {"type": "string", "enum": list(KINDS)}, "text": {"type": "string"}},
        "required": ["kind", "text"],
    }
    return {"type": "object", "properties": {"memories": {"type": "array", "items": item}}, "required": ["memories"]}


def condensing_task(
    language: str, *, char: str, user: str, known: Sequence[Memory], lines: Sequence[tuple[str, str]]
) -> str:
    """The task for the model: the (name, text) ``lines`` to condense, with what is ``known`` already."""
    template = TASK_ZH if language == "zh" else TASK_EN
    key = "zh" if language == "zh" else "en"
    remembered = "\n".join(f"- {one_line(m.text)}" for m in known) or NOTHING_KNOWN[key]
    cut = [(name, text if len(text) <= UTTERANCE_CHARS else text[:UTTERANCE_CHARS].rstrip() + CUT_MARK) for name, text in lines]
    return template.format(char=one_line_name(char), user=one_line_name(user), known=remembered, dialogue=dialogue_lines(cut))


class BadAnswer(ValueError):
    """A condensing answer that cannot be used; the message says why."""


def read_memories(answer: str) -> list[tuple[str, str]]:
    """The (kind, text) memories of an answer; BadAnswer when it holds no ``{"memories": [...]}``.

    Items of an unknown kind or without text are skipped; texts are cleaned, made one line and
    cut to ``MAX_MEMORY_CHARS``.
    """
    found = last_json_object(answer)
    if found is None:
        raise BadAnswer("has no usable JSON object at its end")
    items = found.get("memories")
    if not isinstance(items, list):
        raise BadAnswer("has no list of memories")
    out: list[tuple[str, str]] = []
    for item in items[:MAX_NEW_PER_ANSWER]:
        if not isinstance(item, dict):
            continue
        kind, text = item.get("kind"), item.get("text")
        if kind not in KINDS or not isinstance(text, str):
            continue
        text = one_line(clean_text(text)).strip()
        if len(text) > MAX_MEMORY_CHARS:
            text = text[: MAX_MEMORY_CHARS - 1].rstrip() + CUT_MARK
        if text:
            out.append((kind, text))
    return out


# -- words, merging, pruning, recall ----------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+")
STOPWORDS = frozenset(
    "the and for are but not you your yours with this that these those have has had was were will would "
    "what when where which who whom why how can could should shall may might must about into from onto "
    "they them their there then than she her hers him his its our ours out over under again just very "
    "also some any all each every much many more most other such only own same too yes did does doing "
    "done been being let lets me my mine we us it is am an as at be by do go if in no of on or so to up".split()
)


def words(text: str) -> set[str]:
    """The words of ``text`` that say something: lower-cased, a plural ``s`` dropped, stop words and
    one- and two-letter words left out; Chinese text as overlapping character pairs."""
    out: set[str] = set()
    lowered = text.lower()
    for run in _HAN.findall(lowered):
        out.update(run[i : i + 2] for i in range(max(1, len(run) - 1)))
    for word in _WORD.findall(_HAN.sub(" ", lowered)):
        if len(word) < 3 or word in STOPWORDS:
            continue
        if len(word) > 4 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        out.add(word)
    return out


def similarity(a: str, b: str) -> float:
    wa, wb = words(a), words(b)
    if not wa or not wb:
        return 1.0 if a.strip().lower() == b.strip().lower() else 0.0
    return len(wa & wb) / len(wa | wb)


def merge(existing: Sequence[Memory], new: Sequence[NewMemory]) -> tuple[list[NewMemory], list[int]]:
    """``new`` without repeats among themselves, and the ids of existing memories they replace (a
    new memory that says nearly what an older one of its kind says takes its place)."""
    kept: list[NewMemory] = []
    for memory in new:
        if any(m.kind == memory.kind and similarity(m.text, memory.text) >= SIMILAR for m in kept):
            continue
        kept.append(memory)
    replaced = [
        m.id for m in existing if any(n.kind == m.kind and similarity(n.text, m.text) >= SIMILAR for n in kept)
    ]
    return kept, replaced


def prune(memories: Sequence[Memory], budget: int) -> list[int]:
    """The ids to delete so that ``memories`` (oldest first) fit in ``budget`` tokens: the oldest
    events first, then the oldest relationship notes, then the oldest facts."""
    total = sum(m.tokens for m in memories)
    drop: list[int] = []
    for kind in PRUNE_ORDER:
        for memory in memories:
            if total <= budget:
                return drop
            if memory.kind == kind:
                drop.append(memory.id)
                total -= memory.tokens
    return drop


def select(memories: Sequence[Memory], text: str, budget: int) -> list[Memory]:
    """The memories for a prompt about ``text``, within ``budget`` tokens, oldest first.

    Each memory scores its words shared with ``text`` (two points each) plus its recency (up to one
    point, the newest most); the best go in while they fit.
    """
    if budget <= 0 or not memories:
        return []
    asked = words(text)
    count = len(memories)
    scored = []
    for index, memory in enumerate(memories):
        overlap = len(asked & words(memory.text))
        recency = (index + 1) / count
        scored.append((2.0 * overlap + recency, index, memory))
    chosen: list[tuple[int, Memory]] = []
    spent = 0
    for _, index, memory in sorted(scored, key=lambda s: (-s[0], -s[1])):
        if spent + memory.tokens > budget:
            continue
        chosen.append((index, memory))
        spent += memory.tokens
    return [m for _, m in sorted(chosen, key=lambda c: c[0])]


# -- the cache copy ---------------------------------------------------------------------------------


def encode_memories(memories: Sequence[Memory]) -> bytes:
    return json.dumps(
        [[m.id, m.kind, m.text, m.seq_from, m.seq_to, m.tokens, m.created_at.timestamp()] for m in memories],
        ensure_ascii=False,
    ).encode()


def decode_memories(raw: bytes) -> list[Memory]:
    return [
        Memory(i, kind, text, a, b, tokens, dt.datetime.fromtimestamp(at, dt.UTC))
        for i, kind, text, a, b, tokens, at in json.loads(raw)
    ]


# -- the keeper -----------------------------------------------------------------------------------


@dataclass(slots=True)
class MemoryConfig:
    history_turns: int = 40  # the history window (PERSONAE_HISTORY_TURNS): what leaves it is condensed
    budget_tokens: int = 800  # kept per person and scope (PERSONAE_MEMORY_TOKENS)
    prompt_tokens: int = 200  # in the scene at most (PERSONAE_MEMORY_PROMPT_TOKENS)
    batch: int = 10  # messages out of the window before a condensing (PERSONAE_MEMORY_BATCH)
    max_lines: int = 60  # messages one condensing reads at most
    max_tokens: int = 512  # the answer's budget (PERSONAE_MEMORY_MAX_TOKENS)
    temperature: float = 0.2
    max_input_tokens: int = 3500  # the model server's input budget (PERSONAE_MAX_INPUT_TOKENS)
    cache_ttl_s: float = 3600.0
    lock_ttl_s: float = 95.0
    concurrency: int = 4  # condensings in flight in this process


class MemoryKeeper:
    """Condenses turns that left the history window into memories, and recalls them for a prompt."""

    def __init__(self, store: Store, cache: Cache, model: ChatModel, config: MemoryConfig | None = None) -> None:
        self.store = store
        self.cache = cache
        self.model = model
        self.config = config or MemoryConfig()
        self._running: set[str] = set()  # conversations being condensed in this process
        self._failed: dict[str, int] = {}  # conversation -> turns to wait before trying again after a failure
        # conversation -> turns since its backlog was last looked at: a turn adds about two messages,
        # so the database is asked about every batch/2 turns, not after every reply.
        self._since: dict[str, int] = {}
        self._slots = asyncio.Semaphore(self.config.concurrency)
        # Since start: condensings written, and those that failed (the model, or an unreadable answer).
        self.condensed = 0
        self.failed = 0

    # -- recall ---------------------------------------------------------------------------------

    async def recall(self, conversation: ConversationKey, raw: bytes | None, held: Held | None = None) -> list[Memory]:
        """The conversation's memories, oldest first: the cache copy ``raw`` if there is one, else
        the database's (staged into the cache through ``held``, the conversation's lock)."""
        observe.metrics.cache_lookup("memory", raw is not None)
        if raw is not None:
            try:
                return decode_memories(raw)
            except (ValueError, TypeError):
                pass
        memories = await self.store.memories.list(conversation)
        encoded = encode_memories(memories)
        if held is not None:
            held.stage(memory_key(conversation), encoded, self.config.cache_ttl_s)
        else:
            await self.cache.set_many({memory_key(conversation): encoded}, self.config.cache_ttl_s)
        return memories

    def for_prompt(self, memories: Sequence[Memory], text: str) -> list[str]:
        """The texts of the memories that go into the scene for the new message ``text``."""
        return [m.text for m in select(memories, text, self.config.prompt_tokens)]

    async def forget(self, conversation: ConversationKey) -> None:
        """Drop the cache copy (after the stored memories changed), under the conversation's lock so
        that no turn puts an older copy back."""
        async with self.cache.hold(lock_key(conversation), ttl=self.config.lock_ttl_s) as held:
            held.stage(memory_key(conversation), None, self.config.cache_ttl_s)

    # -- condensing -------------------------------------------------------------------------------

    async def after_turn(self, conversation: ConversationKey, character: Character, display_name: str) -> None:
        """Condense what has left the history window, if enough has; never raises for the model."""
        key = conversation.cache_key()
        if key in self._running:
            return  # the running one reads up to the newest; what it leaves, the next turn takes
        if self._failed.get(key, 0) > 0:
            self._failed[key] -= 1  # the last try failed: a few more turns before the next
            return
        since = self._since.get(key)
        if since is not None and since + 1 < self.config.batch // 2:
            self._since[key] = since + 1
            return
        if len(self._since) > 10_000:
            self._since.clear()
        self._since[key] = 0
        self._running.add(key)
        try:
            async with self._slots:
                await self._condense(conversation, character, display_name)
        finally:
            self._running.discard(key)

    async def _condense(self, conversation: ConversationKey, character: Character, display_name: str) -> bool:
        cfg = self.config
        mark, lines = await self.store.memories.uncondensed(conversation, cfg.history_turns, max(cfg.max_lines, cfg.batch))
        if len(lines) < cfg.batch:
            return False
        key = conversation.cache_key()
        known = await self.store.memories.list(conversation)
        profile = character.profile
        lines, task = self._fit(profile.language, profile.name, display_name, known, lines)
        messages = [{"role": "system", "content": MEMORY_SYSTEM}, {"role": "user", "content": task}]
        try:
            answer = await self.model.complete(
                messages, max_tokens=cfg.max_tokens, temperature=cfg.temperature, json_schema=memory_schema()
            )
            found = read_memories(answer)
        except (ModelError, BadAnswer, TimeoutError) as exc:
            # Tried again after about another batch of messages (two per turn).
            self._failed[key] = max(1, cfg.batch // 2)
            self.failed += 1
            if len(self._failed) > 10_000:
                self._failed.clear()
            observe.metrics.error("memory", exc)
            log.warning("condensing turns %d-%d of %s failed: %s; they stay to be condensed later", lines[0].seq, lines[-1].seq, key, exc)
            return False
        self._failed.pop(key, None)
        first, last = lines[0].seq, lines[-1].seq
        new = [NewMemory(kind, text, first, last, estimate_tokens(text)) for kind, text in found]
        new, replaced = merge(known, new)
        # What stays after the merge, then the new ones, pruned to the budget (new ones may go too).
        staying = [m for m in known if m.id not in replaced]
        draft = staying + [
            Memory(-(i + 1), n.kind, n.text, n.seq_from, n.seq_to, n.tokens, dt.datetime.now(dt.UTC)) for i, n in enumerate(new)
        ]
        dropped = set(prune(draft, cfg.budget_tokens))
        add = [n for i, n in enumerate(new) if -(i + 1) not in dropped]
        remove = replaced + [i for i in dropped if i > 0]
        if not await self.store.memories.condensed(conversation, mark, last, add, remove):
            log.info("turns %d-%d of %s were condensed elsewhere meanwhile", first, last, key)
            return False
        await self.forget(conversation)
        self.condensed += 1
        log.info("condensed turns %d-%d of %s into %d memories (%d replaced or pruned)", first, last, key, len(add), len(remove))
        return True

    def _fit(
        self, language: str, char: str, user: str, known: Sequence[Memory], lines: list[Line]
    ) -> tuple[list[Line], str]:
        """The lines and the task within the input budget: the newest lines wait for the next time."""
        budget = self.config.max_input_tokens - self.config.max_tokens

        def task(chosen: Sequence[Line]) -> str:
            named = [(user if line.role == "user" else char, line.content) for line in chosen]
            return condensing_task(language, char=char, user=user, known=known, lines=named)

        text = task(lines)
        while len(lines) > 1 and estimate_tokens(MEMORY_SYSTEM + text) + _LAYOUT_TOKENS > budget:
            lines = lines[: max(1, len(lines) * 3 // 4)]
            text = task(lines)
        return lines, text
