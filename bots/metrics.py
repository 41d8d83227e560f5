"""Prometheus metrics: core's measurements (``core.observe``) recorded with ``prometheus_client``.

Every label has a short fixed set of values (a reply status, a platform, a step, an error kind):
no person, channel or text ever becomes a label, so the number of series stays bounded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bots.failures import kind
from core.reply import ReplyStatus

if TYPE_CHECKING:
    from core.engine import Engine

CONTENT_TYPE = CONTENT_TYPE_LATEST
PLATFORMS = ("discord", "telegram", "console")
APPRAISERS = ("model", "lexicon")
CACHE_KINDS = ("binding", "state", "history")
STORAGE_PARTS = ("database", "redis")
RATE_REASONS = ("arrival", "admission", "overflow")
ERROR_PLACES = ("model", "turn_deadline", "database", "appraisal", "adapter")
OUTCOMES = frozenset(s.value for s in ReplyStatus if s is not ReplyStatus.PENDING)

# Seconds: a chat reply is felt from a tenth of a second to a minute (a busy GPU queues).
HUMAN_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60, 120)
ROUND_TRIP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
RATE_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 40, 60, 80, 120, 200)


def _one_of(value: str, allowed: tuple[str, ...] | frozenset[str]) -> str:
    return value if value in allowed else "other"


class PrometheusMetrics:
    """``core.observe.Metrics`` on a registry of its own (``render`` gives the /metrics page)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.turns = Counter("personae_turns", "Turns ended, by outcome (a reply status).", ["outcome"], registry=r)
        self.first_text_seconds = Histogram(
            "personae_first_text_seconds", "From the person's message (platform time) to the first text of the answer shown.",
            ["platform"], buckets=HUMAN_BUCKETS, registry=r,
        )
        self.model_first_token_seconds = Histogram(
            "personae_model_first_token_seconds", "From the model slot taken (see personae_model_slot_wait_seconds) to the first text.", buckets=HUMAN_BUCKETS, registry=r
        )
        self.model_slot_wait_seconds = Histogram(
            "personae_model_slot_wait_seconds", "How long a model request waited for a slot (PERSONAE_LLM_MAX_IN_FLIGHT, PERSONAE_LLM_CONCURRENCY).",
            buckets=HUMAN_BUCKETS, registry=r,
        )
        self.model_slots_waiting = Gauge("personae_model_slots_waiting", "Model requests of this process waiting for a slot.", registry=r)
        self.model_slots_held = Gauge("personae_model_slots_held", "Model slots this process holds.", registry=r)
        self.model_pace = Histogram(
            "personae_model_tokens_per_second", "A streamed reply's pace after its first token.", buckets=RATE_BUCKETS, registry=r
        )
        self.queue_wait_seconds = Histogram(
            "personae_queue_wait_seconds", "How long a turn waited before it was answered.", buckets=HUMAN_BUCKETS, registry=r
        )
        self.turns_waiting = Gauge("personae_turns_waiting", "Turns accepted and not finished (waiting or running).", registry=r)
        self.turns_running = Gauge("personae_turns_running", "Turns being answered now.", registry=r)
        self.appraisal_seconds = Histogram(
            "personae_appraisal_seconds", "How long one exchange took to appraise.", ["appraiser"], buckets=HUMAN_BUCKETS, registry=r
        )
        self.appraisal_token_count = Counter(
            "personae_appraisal_tokens", "Tokens sent to and read from the model by the model appraiser.", ["part"], registry=r
        )
        self.cache_lookups = Counter(
            "personae_cache_lookups", "Hot reads, found in the cache (hit) or read from the database (miss).", ["kind", "result"], registry=r
        )
        self.storage_seconds = Histogram(
            "personae_storage_seconds", "One round trip to the database or Redis.", ["part"], buckets=ROUND_TRIP_BUCKETS, registry=r
        )
        self.refusals = Counter(
            "personae_rate_limited", "Messages refused for their pace: arrival, admission (the shared count) or overflow.", ["reason"], registry=r
        )
        self.errors = Counter("personae_errors", "Failures, by where they happened and their kind.", ["where", "kind"], registry=r)
        for status in ReplyStatus:
            if status is not ReplyStatus.PENDING:
                self.turns.labels(status.value)  # every outcome shows, at 0, before it first happens

    def watch_engine(self, engine: "Engine") -> None:
        """Read the engine's queue at each scrape."""
        self.turns_waiting.set_function(lambda: engine.turns_waiting)
        self.turns_running.set_function(lambda: engine.turns_running)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- core.observe.Metrics -----------------------------------------------------------------

    def turn(self, outcome: str) -> None:
        self.turns.labels(outcome if outcome in OUTCOMES else "other").inc()

    def first_text(self, platform: str, seconds: float) -> None:
        self.first_text_seconds.labels(_one_of(platform, PLATFORMS)).observe(seconds)

    def queue_wait(self, seconds: float) -> None:
        self.queue_wait_seconds.observe(seconds)

    def model_first_token(self, seconds: float) -> None:
        self.model_first_token_seconds.observe(seconds)

    def model_slot_wait(self, seconds: float) -> None:
        self.model_slot_wait_seconds.observe(seconds)

    def model_slots(self, waiting: int, held: int) -> None:
        if waiting:
            self.model_slots_waiting.inc(waiting)
        if held:
            self.model_slots_held.inc(held)

    def model_tokens_per_second(self, rate: float) -> None:
        self.model_pace.observe(rate)

    def appraisal(self, appraiser: str, seconds: float) -> None:
        self.appraisal_seconds.labels(_one_of(appraiser, APPRAISERS)).observe(seconds)

    def appraisal_tokens(self, part: str, tokens: int) -> None:
        self.appraisal_token_count.labels(_one_of(part, ("prompt", "answer"))).inc(max(0, tokens))

    def cache_lookup(self, kind: str, hit: bool) -> None:
        self.cache_lookups.labels(_one_of(kind, CACHE_KINDS), "hit" if hit else "miss").inc()

    def storage(self, part: str, seconds: float) -> None:
        self.storage_seconds.labels(_one_of(part, STORAGE_PARTS)).observe(seconds)

    def rate_limited(self, reason: str) -> None:
        self.refusals.labels(_one_of(reason, RATE_REASONS)).inc()

    def error(self, where: str, exc: BaseException | None = None) -> None:
        self.errors.labels(_one_of(where, ERROR_PLACES), kind(exc)).inc()
