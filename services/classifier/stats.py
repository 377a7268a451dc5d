"""Keeps the stored events' summaries fresh in the background (the classifier role).

On the MongoDB-wire store each day of events has statistics that let queries skip days and answer
/api/v1/sectors without reading events (shared/store/mongo_events.py). Every write makes its day's
statistics stale until someone recomputes them; without this loop the first /sectors request after
a bulk load pays for all of them (measured: ~20–30 s at 100,000 events on FerretDB). Store errors
are logged and retried next round: a stale summary costs speed, never correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from shared.store import Store

log = logging.getLogger("corridor.classifier.stats")

DAYS_PER_ROUND = 64  # bounded work per round; a year of stale days takes six rounds


async def refresh_stats_loop(store: Store, interval_s: float, stop: asyncio.Event) -> None:
    """Every ``interval_s`` until ``stop``: refresh up to DAYS_PER_ROUND stale days, newest first."""
    while not stop.is_set():
        try:
            refreshed = await store.refresh_stats(DAYS_PER_ROUND)
            if refreshed:
                log.info("event statistics refreshed for %d days", refreshed)
        except Exception as exc:  # any store failure: try again next round
            log.warning("refreshing event statistics failed: %r", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
