"""Processed events: the first delivery counts, redeliveries do not, even when they race."""

from __future__ import annotations

import asyncio
import datetime as dt


async def test_mark_processed_is_true_then_false(store) -> None:
    assert await store.events.mark_processed("discord", "m-1") is True
    assert await store.events.mark_processed("discord", "m-1") is False
    assert await store.events.mark_processed("telegram", "m-1") is True
    assert await store.events.mark_processed("discord", "m-2") is True


async def test_concurrent_deliveries_of_one_event_mark_it_once(store) -> None:
    for event_id in ("pair", "crowd"):
        racers = 2 if event_id == "pair" else 20
        results = await asyncio.gather(*(store.events.mark_processed("discord", event_id) for _ in range(racers)))
        assert results.count(True) == 1 and results.count(False) == racers - 1


async def test_prune_deletes_events_older_than_the_given_time(store) -> None:
    await store.events.mark_processed("discord", "old")
    now = dt.datetime.now(dt.UTC)
    assert await store.events.prune(now - dt.timedelta(hours=1)) == 0
    assert await store.events.prune(now + dt.timedelta(seconds=5)) == 1
    assert await store.events.mark_processed("discord", "old") is True
