"""The classifier's background refresh of event statistics keeps going through store errors."""

from __future__ import annotations

import asyncio

from services.classifier.stats import refresh_stats_loop


class FlakyStore:
    def __init__(self) -> None:
        self.calls = 0
        self.fourth = asyncio.Event()

    async def refresh_stats(self, max_days: int) -> int:
        self.calls += 1
        if self.calls == 4:
            self.fourth.set()
        if self.calls == 2:
            raise ConnectionError("store went away")
        return max_days


async def test_refreshes_every_interval_survives_errors_and_stops() -> None:
    store = FlakyStore()
    stop = asyncio.Event()
    task = asyncio.create_task(refresh_stats_loop(store, 0.01, stop))  # type: ignore[arg-type]
    await asyncio.wait_for(store.fourth.wait(), 5)  # the error on the second call did not end it
    stop.set()
    await asyncio.wait_for(task, 1)
    assert task.exception() is None
