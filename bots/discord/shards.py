"""Discord shards: which of them this process runs (PERSONAE_DISCORD_SHARD_COUNT, PERSONAE_DISCORD_SHARDS).

Discord splits a bot's guilds over ``count`` gateway connections, guild ``g`` on shard
``(g >> 22) % count``; direct messages come on shard 0. Replicas each run a set of shards of the
same count; the slash commands are synced by the process that runs shard 0, not by every replica.
"""

from __future__ import annotations

from dataclasses import dataclass

AUTO = "auto"


def parse_shards(text: str) -> list[int]:
    """``"0-3"``, ``"0,2,5-6"`` -> the shard ids, sorted; ValueError says what is wrong."""
    ids: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low, dash, high = part.partition("-")
        try:
            first, last = (int(low), int(high)) if dash else (int(part), int(part))
        except ValueError:
            raise ValueError(f"{part} is not a shard id or a range: write low-high, e.g. 0-3") from None
        if first < 0 or last < first:
            fixed = f"{min(first, last)}-{max(first, last)}" if first >= 0 and last >= 0 else "0-3"
            raise ValueError(f"{part} is not a range: write low-high, e.g. {fixed}")
        ids.update(range(first, last + 1))
    if not ids:
        raise ValueError("names no shard; e.g. 0-3 or 0,2")
    return sorted(ids)


def shard_of(guild_id: int, count: int) -> int:
    """The shard that carries guild ``guild_id``'s events."""
    return (guild_id >> 22) % count


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """What this process runs: ``count`` None means Discord's recommended count (``/gateway/bot``),
    ``ids`` None means every shard of the count."""

    count: int | None
    ids: tuple[int, ...] | None

    def syncs_commands(self) -> bool:
        """Whether this process syncs the slash commands: the one running shard 0."""
        return self.ids is None or 0 in self.ids


def shard_plan(shard_count: str | None, shards: str | None) -> ShardPlan | None:
    """The plan from the two settings; None when neither is set (one unsharded connection)."""
    if shard_count is None and shards is None:
        return None
    count = None if shard_count in (None, AUTO) else int(shard_count)
    ids = tuple(parse_shards(shards)) if shards is not None else None
    return ShardPlan(count, ids)
