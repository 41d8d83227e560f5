"""``EditBudget`` (bots/streaming.py), the sliding window that paces sends and edits, on a clock the test
moves: the mutation run (docs/testing.md) found that a wrong wait (from the newest send instead of the
oldest) went unnoticed, since the adapters' pacing tests only see that the limit is never crossed."""

from __future__ import annotations

import types

import pytest

from bots import streaming
from bots.streaming import EditBudget


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(streaming, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    return now


async def test_the_wait_runs_until_the_oldest_send_leaves_the_window(clock: list[float]) -> None:
    budget = EditBudget(2, 5.0)
    await budget.take()  # at 100
    clock[0] = 101.0
    await budget.take()
    clock[0] = 102.0
    assert budget.wait_time() == pytest.approx(3.0)  # the one at 100 leaves at 105
    clock[0] = 105.0
    assert budget.wait_time() == 0.0
    await budget.take()  # at 105: the window now holds 101 and 105
    clock[0] = 105.5
    assert budget.wait_time() == pytest.approx(0.5)


async def test_under_the_count_there_is_no_wait(clock: list[float]) -> None:
    budget = EditBudget(3, 5.0)
    await budget.take()
    await budget.take()
    assert budget.wait_time() == 0.0
    await budget.take()
    assert budget.wait_time() == pytest.approx(5.0)
