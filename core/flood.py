"""In-process guards against floods: one person's messages, and a model server's endless reply.

The cache's rate count is taken when a turn starts; one person's turns run one after another, so a
flood that waits in line is admitted at the pace of the replies and never crosses the limit. These
guards judge a message by when it arrived, and bound how many may wait at all. ``ReplyBudget``
stops a reply at ``max_tokens`` when the server does not.
"""

from __future__ import annotations

from collections import Counter, deque
from enum import Enum


class Verdict(Enum):
    ADMIT = "admit"
    NOTICE = "notice"  # the first one over: tell the person once
    DROP = "drop"  # told already: silence


class ArrivalWindow:
    """At most ``limit`` admitted messages per person in any ``window_s`` seconds of arrival time,
    and one notice per flood: a person told once hears nothing more until a message that arrived
    after the notice is admitted again.

    Memory stays bounded: a person keeps at most ``limit`` times, and people idle for a whole window
    are swept out once more than ``max_people`` are remembered.
    """

    def __init__(self, limit: int, window_s: float, max_people: int = 50_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_people = max_people
        self._times: dict[str, deque[float]] = {}
        self._told: dict[str, float] = {}  # person -> arrival time of the message that was answered with the notice

    def judge(self, person: str, at: float) -> Verdict:
        """Judge a message that arrived at ``at`` (arrivals of one person are judged in arrival order)."""
        times = self._times.get(person)
        if times is None:
            if len(self._times) >= self.max_people:
                self._sweep(at)
            times = self._times[person] = deque()
        while times and times[0] <= at - self.window_s:
            times.popleft()
        if len(times) < self.limit:
            times.append(at)
            if person in self._told and at > self._told[person]:
                del self._told[person]  # a new message, after the notice, is answered: a later flood is told again
            return Verdict.ADMIT
        return Verdict.NOTICE if self.tell(person, at) else Verdict.DROP

    def tell(self, person: str, at: float) -> bool:
        """True (and remembered) if ``person`` has not been told of this flood yet."""
        if person in self._told:
            return False
        self._told[person] = at
        return True

    def _sweep(self, now: float) -> None:
        for person in [p for p, t in self._times.items() if not t or t[-1] <= now - self.window_s]:
            del self._times[person]
            self._told.pop(person, None)


class WaitingTurns:
    """Counts the turns waiting (or running) per person and in all; says when a new one is one too many."""

    def __init__(self, per_person: int, total: int) -> None:
        self.per_person = per_person
        self.total = total
        self._by_person: Counter[str] = Counter()
        self._all = 0
        self.dropped = 0

    def full(self, person: str) -> bool:
        return self._by_person[person] >= self.per_person or self._all >= self.total

    def enter(self, person: str) -> None:
        self._by_person[person] += 1
        self._all += 1

    def leave(self, person: str) -> None:
        self._all -= 1
        self._by_person[person] -= 1
        if self._by_person[person] <= 0:
            del self._by_person[person]

    @property
    def in_all(self) -> int:
        return self._all

    def waiting(self, person: str) -> tuple[int, int]:
        """The person's turns and all turns waiting or running."""
        return self._by_person[person], self._all


class ReplyBudget:
    """Counts a streamed reply against ``max_tokens`` whether or not the model server honours it.

    A server that honours it sends at most ``max_tokens`` non-empty deltas (a token each at most):
    that count is the budget. A server that sends fat deltas is held to a text allowance of eight
    characters a token (a whole word can be one token), so an honest reply is never cut.
    """

    def __init__(self, max_tokens: int) -> None:
        self.max_deltas = max_tokens
        self.max_chars = (max_tokens + 16) * 8
        self.deltas = 0
        self.chars = 0
        self.spent = False

    def take(self, delta: str) -> str:
        """The part of ``delta`` inside the budget; sets ``spent`` once the budget is used up."""
        if self.spent or not delta:
            return ""
        self.deltas += 1
        if self.deltas > self.max_deltas:
            self.spent = True
            return ""
        room = self.max_chars - self.chars
        if len(delta) > room:
            self.spent = True
            delta = delta[:room]
            # Cut at the last word end inside the room when there is one, not mid-word.
            head = delta.rsplit(None, 1)[0] if " " in delta.strip() else delta
            delta = head if head.strip() else delta
        self.chars += len(delta)
        return delta
