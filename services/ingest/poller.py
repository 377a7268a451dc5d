"""The poll loop: claim due sources (leased, so replicas never poll one source at once), fetch,
parse, drop entries already seen, publish the new ones, record the source's health.

Bounded: at most ``concurrency`` fetches in flight; a source's lease outlives its fetch timeout
so a slow fetch is never claimed twice; a failing source backs off exponentially up to the
maximum interval and keeps being polled (it is never dropped) with its last error on record.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import timedelta

import httpx

from services.ingest.fetcher import fetch_source
from services.ingest.parser import parse_feed
from shared.bus import Bus
from shared.envelope import TOPIC_RAW, Envelope
from shared.errors import FetchError
from shared.metrics import Metrics
from shared.models import RawItem, Source
from shared.settings import Settings
from shared.store import Store
from shared.timeutil import Clock, utcnow

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 500
DRAIN_DEADLINE_S = 10.0


class Poller:
    """Polls every due source; ``wake()`` makes it look for due sources at once."""

    def __init__(
        self,
        *,
        store: Store,
        bus: Bus,
        client: httpx.AsyncClient,
        settings: Settings,
        metrics: Metrics,
        clock: Clock = utcnow,
    ) -> None:
        self._store = store
        self._bus = bus
        self._client = client
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._topic = settings.topic(TOPIC_RAW)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Check for due sources now instead of at the next tick."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop``; then let in-flight polls finish (bounded by a deadline)."""
        in_flight: set[asyncio.Task[None]] = set()
        limit = self._settings.poll_concurrency
        while not stop.is_set():
            self._wake.clear()
            while len(in_flight) < limit:
                now = self._clock()
                lease = now + timedelta(seconds=max(self._settings.poll_lease_s, self._settings.fetch_timeout_s * 2))
                source = await self._store.claim_due_source(now, lease)
                if source is None:
                    break
                task = asyncio.create_task(self.poll_one(source), name=f"poll {source.id}")
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            waiters = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
            await asyncio.wait(
                [*waiters, *in_flight], timeout=self._settings.poll_tick_s, return_when=asyncio.FIRST_COMPLETED
            )
            for w in waiters:
                w.cancel()
        if in_flight:
            await asyncio.wait(in_flight, timeout=DRAIN_DEADLINE_S)

    async def poll_one(self, source: Source) -> None:
        """Fetch, parse and publish one source, then record its health. Never raises FetchError."""
        started = time.perf_counter()
        now = self._clock()
        try:
            result = await fetch_source(self._client, source, max_bytes=self._settings.fetch_max_bytes)
            if result.body is None:
                self._metrics.fetches.labels("not_modified").inc()
                await self._record_success(source, "not_modified", result.etag, result.last_modified, 0)
                return
            self._metrics.fetch_bytes.inc(len(result.body))
            items = parse_feed(result.body, source_id=source.id, source_url=source.url, fetched_at=now)
            new = await self._publish_new(items)
            self._metrics.fetches.labels("ok").inc()
            await self._record_success(source, "ok", result.etag, result.last_modified, new)
        except FetchError as exc:
            self._metrics.fetches.labels(exc.kind).inc()
            await self._record_error(source, exc)
        except Exception:
            # A bug or an unavailable bus/store: the lease runs out and the source is retried.
            log.exception("polling %s failed unexpectedly", source.id)
            self._metrics.fetches.labels("internal").inc()
        finally:
            self._metrics.poll_seconds.observe(time.perf_counter() - started)

    async def _publish_new(self, items: list[RawItem]) -> int:
        if not items:
            return 0
        fresh_ids = await self._store.unseen(i.id for i in items)
        fresh = [i for i in items if i.id in fresh_ids]
        fresh.sort(key=lambda i: (i.sort_at, i.id))
        # Publish first, mark seen after: a crash in between republishes (harmless, downstream
        # is idempotent) instead of losing items.
        for item in fresh:
            await self._bus.publish(self._topic, item.id, Envelope.wrap("item.raw", item))
        await self._store.mark_seen((i.id for i in fresh), self._clock())
        self._metrics.items_published.inc(len(fresh))
        return len(fresh)

    def _next_check(self, source: Source, errors: int) -> float:
        interval = source.interval_s
        if errors:
            interval = interval * 2 ** min(errors - 1, 16)
        interval = min(interval, self._settings.poll_max_interval_s)
        return interval * random.uniform(0.9, 1.1)  # jitter spreads sources over time

    async def _record_success(
        self, source: Source, status: str, etag: str | None, last_modified: str | None, new: int
    ) -> None:
        now = self._clock()
        await self._store.update_source(
            source.id,
            {
                "etag": etag,
                "last_modified": last_modified,
                "last_fetch_at": now,
                "last_success_at": now,
                "last_status": status,
                "consecutive_errors": 0,
                "next_check_at": now + timedelta(seconds=self._next_check(source, 0)),
                "lease_until": None,
                "items_seen": source.items_seen + new,
            },
        )
        log.info("polled %s: %s, %d new items", source.url, status, new)

    async def _record_error(self, source: Source, exc: FetchError) -> None:
        now = self._clock()
        errors = source.consecutive_errors + 1
        await self._store.update_source(
            source.id,
            {
                "last_fetch_at": now,
                "last_status": "error",
                "consecutive_errors": errors,
                "last_error": str(exc)[:MAX_ERROR_CHARS],
                "last_error_kind": exc.kind,
                "next_check_at": now + timedelta(seconds=self._next_check(source, errors)),
                "lease_until": None,
            },
        )
        log.warning("polling %s failed (%s, %d in a row): %s", source.url, exc.kind, errors, exc)
