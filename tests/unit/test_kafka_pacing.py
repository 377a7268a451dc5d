"""shared.bus.kafka_pacing on a stand-in client (the real-cluster check is in
tests/faults/test_consumer_idle_without_leader.py)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from shared.bus.kafka_pacing import pace_metadata_refresh

INTERVAL_S = 0.1


class _Client:
    """The two attributes the pacing touches, with each refresh's start time recorded."""

    def __init__(self) -> None:
        self.cluster = object()
        self.starts: list[tuple[float, Any]] = []

    async def _metadata_update(self, cluster_metadata: Any, topics: Any) -> bool:
        self.starts.append((time.monotonic(), cluster_metadata))
        return False  # a failed refresh, as when no broker answers


async def test_refreshes_of_the_clients_own_metadata_start_an_interval_apart() -> None:
    client = _Client()
    pace_metadata_refresh(client, INTERVAL_S)  # type: ignore[arg-type]
    for _ in range(4):
        assert await client._metadata_update(client.cluster, set()) is False
    gaps = [b - a for a, b in itertools.pairwise(t for t, _ in client.starts)]
    assert all(gap >= INTERVAL_S * 0.95 for gap in gaps), gaps


async def test_the_first_refresh_and_one_off_reads_into_fresh_metadata_do_not_wait() -> None:
    client = _Client()
    pace_metadata_refresh(client, 10.0)  # type: ignore[arg-type]
    await asyncio.wait_for(client._metadata_update(client.cluster, set()), 5.0)
    fresh = object()
    await asyncio.wait_for(client._metadata_update(fresh, None), 5.0)
    assert [m for _, m in client.starts] == [client.cluster, fresh]


async def test_closing_the_client_cancels_a_waiting_refresh() -> None:
    client = _Client()
    pace_metadata_refresh(client, 10.0)  # type: ignore[arg-type]
    await client._metadata_update(client.cluster, set())
    waiting = asyncio.create_task(client._metadata_update(client.cluster, set()))
    await asyncio.sleep(0.05)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert waiting.cancelled() and len(client.starts) == 1
