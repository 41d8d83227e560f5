"""Two processes given the same PERSONAE_REPLICA_ID: the second refuses to start, naming the setting."""

from __future__ import annotations

import pytest

from bots import replicas
from bots.replicas import alive
from core.errors import ConfigurationError


@pytest.mark.parametrize("cache_backend", ["redis"], indirect=True)
async def test_a_second_process_with_the_same_replica_id_refuses_to_start(cache, monkeypatch) -> None:
    async with alive(cache, "twin", 1.0) as first:
        assert first.held
        monkeypatch.setattr(replicas, "PROCESS_TOKEN", "another-process")  # what the twin process would draw
        with pytest.raises(ConfigurationError, match="PERSONAE_REPLICA_ID"):
            async with alive(cache, "twin", 1.0):
                pass
        monkeypatch.undo()
        assert await first.renew()  # the first keeps its lease
    monkeypatch.setattr(replicas, "PROCESS_TOKEN", "a-later-process")
    async with alive(cache, "twin", 1.0) as later:  # once the first stopped, the id is free again
        assert later.held
