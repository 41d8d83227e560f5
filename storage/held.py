"""``core.ports.Held``: what a cache lock read on entry, and the writes it sends on release."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable

from core.ports import Admission


@dataclass(slots=True)
class StagedWrites:
    """Values read when the lock was taken; ``stage`` queues writes (the last per key wins) for the release."""

    values: list[bytes | None]
    writes: dict[str, tuple[bytes | None, float]] = field(default_factory=dict)
    admission: Admission | None = None
    # Asks the lock's renewal whether the lock is still ours (None: a local lock, always ours).
    check: Callable[[], Awaitable[bool]] | None = None

    async def still_held(self) -> bool:
        return True if self.check is None else await self.check()

    def stage(self, key: str, value: bytes | None, ttl: float) -> None:
        self.writes[key] = (value, ttl)
