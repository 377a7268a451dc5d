"""The poll loop: claim due sources (leased, so replicas never poll one source at once), fetch
politely, parse, dedupe, publish, record the source's health.

Bounded: at most ``poll_concurrency`` polls in flight per process, at most ``poll_per_host`` to
one host with an optional gap (GDELT: 5 s); a source's lease outlives its fetch timeout so a slow
fetch is never claimed twice, and a replica that dies leaves leases that simply expire. A failing
source backs off exponentially up to the maximum interval and keeps being polled (never dropped);
after ``source_broken_after`` consecutive failures a ``source.broken`` event goes to
corridor.ops.v1, and ``source.recovered`` when it works again (published before the source's
new state is stored, so an event whose publish failed is sent again on the next poll).

A document that cannot be parsed, for whatever reason, is a ``parse_error`` of its source, never
a stop of the poller; an item too large for a bus message goes to the dead-letter topic. Source
URLs are logged without their query values (feed URLs carry API keys and tokens there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from services.ingest.dedupe import Deduper
from services.ingest.fetcher import fetch_source
from services.ingest.limits import HostLimiter
from services.ingest.normalize import LanguageDetector
from services.ingest.parser import Parsed, parse_source_document
from services.ingest.schedule import next_delay_s
from shared.bus import Bus, dead_letter_for
from shared.envelope import MAX_MESSAGE_BYTES, TOPIC_DEADLETTER, TOPIC_OPS, TOPIC_RAW, Envelope
from shared.errors import BlockedAddress, FetchError, Unavailable
from shared.logs import shown_url
from shared.metrics import Metrics
from shared.models import RawItem, Source, SourceHealthEvent
from shared.settings import Settings
from shared.store import Store
from shared.timeutil import Clock, utcnow
from shared.workpool import WorkPool, claim_loop

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 500
HOST_BUSY_RETRY_S = 2.0  # a due source whose host is busy is offered again this much later
QUEUE_COUNT_EVERY_S = 10.0  # how often the queue-depth gauge is read from the store


def _parse(source: Source, body: bytes, fetched_at: datetime) -> Parsed:
    """The source's document parsed (the poller runs this in a worker thread); any failure is a
    :class:`FetchError`."""
    try:
        return parse_source_document(
            body,
            kind=source.kind,
            source_id=source.id,
            source_url=source.url,
            fetched_at=fetched_at,
            selectors=source.selectors,
        )
    except FetchError:
        raise
    except Exception as exc:
        # A document the parsers do not survive is this source's problem, not every source's:
        # recorded on it as parse_error (the poll of the others goes on); logged with the trace,
        # since it is also a parser bug to fix.
        log.error("parsing %s failed unexpectedly", shown_url(source.url), exc_info=True)
        raise FetchError("parse_error", f"cannot parse the document: {type(exc).__name__}: {exc}") from exc


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
        detector: LanguageDetector | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self._store = store
        self._bus = bus
        self._client = client
        self._settings = settings
        self._metrics = metrics
        self._detector = detector
        self._clock = clock
        self._topic = settings.topic(TOPIC_RAW)
        self._ops = settings.topic(TOPIC_OPS)
        self._deadletter = settings.topic(TOPIC_DEADLETTER)
        self._deduper = Deduper(store, clock, claim_grace=timedelta(seconds=settings.poll_lease_s))
        # A poll with deferred entries comes back just after the claim they wait on can be taken
        # over (the grace), instead of after the source's interval or a server's cache hint.
        self._deferred_retry_s = settings.poll_lease_s + 5.0
        self._hosts = HostLimiter(settings.poll_per_host)
        self._wake = asyncio.Event()
        self._pool = WorkPool("ingest poller", limit=settings.poll_concurrency)

    def wake(self) -> None:
        """Check for due sources now instead of at the next tick."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop``; then let in-flight polls finish (bounded by a deadline). Store
        outages are waited out (shared.workpool); a bug stops the loop with its exception."""
        limit = self._settings.poll_concurrency
        deferred = 0
        counted_at = -QUEUE_COUNT_EVERY_S

        async def on_tick() -> None:
            nonlocal deferred, counted_at
            self._metrics.polls_in_flight.set(len(self._pool))
            self._metrics.host_deferred.set(deferred)
            deferred = 0
            # The queue's depth: sources due and not leased, shared by every replica. One count
            # (through the claims' index) every QUEUE_COUNT_EVERY_S, not one per tick.
            if time.monotonic() - counted_at >= QUEUE_COUNT_EVERY_S:
                self._metrics.poll_queue.set(await self._store.count_due_sources(self._clock()))
                counted_at = time.monotonic()

        async def claim() -> Source | None:
            nonlocal deferred
            lease = timedelta(seconds=self._settings.poll_lease_s)  # at least twice the fetch timeout
            while deferred < limit:
                now = self._clock()
                source = await self._store.claim_due_source(now, now + lease)
                if source is None:
                    return None
                if self._hosts.reserve(urlsplit(source.url).hostname or ""):
                    return source
                # Its host is busy: give the source back for a moment rather than hold a poll
                # slot waiting, so one slow host cannot keep every other host waiting.
                await self._store.update_source(
                    source.id, {"lease_until": None, "next_check_at": now + timedelta(seconds=HOST_BUSY_RETRY_S)}
                )
                deferred += 1
            return None

        def start(source: Source) -> None:
            self._pool.spawn(self.poll_one(source), name=f"poll {source.id}")

        await claim_loop(
            self._pool,
            claim=claim,
            start=start,
            stop=stop,
            tick_s=self._settings.poll_tick_s,
            wake=self._wake,
            on_tick=on_tick,
        )

    def _gap_s(self, source: Source) -> float:
        return max(self._settings.poll_host_gap_s, self._settings.gdelt_gap_s if source.kind == "gdelt" else 0.0)

    async def poll_one(self, source: Source) -> None:
        """Fetch, parse, dedupe and publish one source, then record its health. A fetch failure is
        recorded on the source; an outage (Unavailable) and a bug propagate to the pool."""
        started = time.perf_counter()
        try:
            host = urlsplit(source.url).hostname or ""
            async with self._hosts.slot(host, self._gap_s(source)):
                deadline_s = self._settings.fetch_deadline_s
                try:
                    # Per-phase timeouts bound each read; this bounds the whole fetch (a server
                    # trickling a byte at a time never times out a phase).
                    async with asyncio.timeout(deadline_s):
                        result = await fetch_source(
                            self._client, source, max_bytes=self._settings.fetch_max_bytes, now=self._clock()
                        )
                except TimeoutError:
                    raise FetchError("timeout", f"no complete answer within {deadline_s:g} s") from None
            if result.body is None:
                self._metrics.fetches.labels("not_modified").inc()
                await self._record_success(
                    source, "not_modified", result.etag, result.last_modified, 0, (result.fresh_for_s,)
                )
                return
            self._metrics.fetch_bytes.inc(len(result.body))
            # Parsing is synchronous and CPU-bound (seconds for a 10 MB feed): in a thread, so the
            # event loop keeps serving the other polls, the API and the leases meanwhile.
            parsed = await asyncio.to_thread(_parse, source, result.body, self._clock())
            new, deferred = await self._publish(source, parsed.items)
            self._metrics.fetches.labels("ok").inc()
            if deferred:
                # Entries left undecided must be read again: keep the old validators (the new
                # ones would get a 304 and the entries would never be parsed again) and come
                # back once the claim they wait on is old enough to be taken over.
                await self._record_success(
                    source, "ok", source.etag, source.last_modified, new, (), soon_s=self._deferred_retry_s
                )
            else:
                await self._record_success(
                    source, "ok", result.etag, result.last_modified, new, (result.fresh_for_s, parsed.ttl_s)
                )
        except FetchError as exc:
            self._metrics.fetches.labels(exc.kind).inc()
            await self._record_error(source, exc)
        except Unavailable:
            # The store or the broker is down: nothing is recorded (the pool logs the outage);
            # the lease runs out and the source is polled again, its items republished.
            self._metrics.fetches.labels("unavailable").inc()
            raise
        except Exception as exc:
            # A bug: shown on the source, so an operator looking at /api/v1/sources sees it too,
            # then raised — the poller stops and the process exits loudly.
            self._metrics.fetches.labels("internal").inc()
            with contextlib.suppress(Exception):
                await self._record_error(source, FetchError("internal", f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            self._metrics.poll_seconds.observe(time.perf_counter() - started)

    def _with_language(self, source: Source, item: RawItem) -> RawItem:
        language = source.language
        if self._detector is not None:
            language = self._detector.detect(f"{item.title}. {item.summary}") or language
        return item.model_copy(update={"language": language}) if language else item

    async def _publish(self, source: Source, items: list[RawItem]) -> tuple[int, int]:
        """Publish new items and updates, link duplicates; mark all seen only after publishing.
        How many entries were seen for the first time (new items and duplicates), and how many
        were deferred (see services.ingest.dedupe)."""
        decisions = await self._deduper.decide(items)
        for outcome, count in (
            ("new", len(decisions.new)),
            ("updated", len(decisions.updated)),
            ("duplicate", len(decisions.duplicates)),
            ("unchanged", decisions.unchanged),
            ("deferred", decisions.deferred),
        ):
            self._metrics.items.labels(outcome).inc(count)
        # Oldest first, so a subscriber reads a source's story in order. Publish before marking
        # seen: a crash in between republishes (downstream is idempotent) rather than losing.
        for event_type, batch in (("item.raw", decisions.new), ("item.updated", decisions.updated)):
            for item in sorted(batch, key=lambda i: (i.sort_at, i.id)):
                item = self._with_language(source, item)
                await self._publish_item(source, item, Envelope.wrap(event_type, item))
        await self._store.add_duplicates(decisions.duplicates)
        await self._store.mark_seen(decisions.seen_marks(), self._clock())
        self._metrics.items_published.inc(len(decisions.new))
        # Seen from this source: its new stories and its copies of stories another source had
        # first (a source that only repeats others still shows what it brought).
        return len(decisions.new) + len(decisions.duplicates), decisions.deferred

    async def _publish_item(self, source: Source, item: RawItem, envelope: Envelope) -> None:
        """Publish one item; one too large for a bus message goes to the dead-letter topic instead
        (and is marked seen with the rest, so it is not retried every poll). The parser bounds
        every field, so this is a last guard: Kafka refuses such a message with an error that
        is no outage, which would stop the poller."""
        data = envelope.encode()
        if len(data) <= MAX_MESSAGE_BYTES:
            await self._bus.publish(self._topic, item.id, envelope)
            return
        reason = f"item of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte message limit"
        await self._bus.publish(self._deadletter, item.id, dead_letter_for(self._topic, item.id, data, reason))
        log.error("item %s of %s not published: %s (dead-lettered)", item.id, shown_url(source.url), reason)

    async def _record_success(
        self,
        source: Source,
        status: str,
        etag: str | None,
        last_modified: str | None,
        new: int,
        hints: tuple[float | None, ...],
        *,
        soon_s: float | None = None,
    ) -> None:
        now = self._clock()
        delay = next_delay_s(
            interval_s=source.interval_s, max_interval_s=self._settings.poll_max_interval_s, hints=hints
        )
        if soon_s is not None:
            delay = min(delay, soon_s)
        fields: dict[str, Any] = {
            "etag": etag,
            "last_modified": last_modified,
            "last_fetch_at": now,
            "last_success_at": now,
            "last_status": status,
            "consecutive_errors": 0,
            "next_check_at": now + timedelta(seconds=delay),
            "lease_until": None,
            "items_seen": source.items_seen + new,
            "broken": False,
        }
        # The event first: were it published after the store said "not broken", a failed
        # publish (broker down) would never be retried. Published first, a failed store write
        # at worst sends it twice (at least once, like every event).
        if source.broken:
            await self._health_event("source.recovered", source, 0, None, None)
        await self._store.update_source(source.id, fields)
        log.info("polled %s: %s, %d entries seen for the first time", shown_url(source.url), status, new)

    async def _record_error(self, source: Source, exc: FetchError) -> None:
        now = self._clock()
        errors = source.consecutive_errors + 1
        delay = next_delay_s(
            interval_s=source.interval_s,
            max_interval_s=self._settings.poll_max_interval_s,
            errors=errors,
            hints=(exc.retry_after_s,),
        )
        broken = source.broken or errors >= self._settings.source_broken_after
        if broken and not source.broken:  # the event before the state, as in _record_success
            await self._health_event("source.broken", source, errors, str(exc)[:MAX_ERROR_CHARS], exc.kind)
        await self._store.update_source(
            source.id,
            {
                "last_fetch_at": now,
                "last_error_at": now,
                "last_status": "error",
                "consecutive_errors": errors,
                "last_error": str(exc)[:MAX_ERROR_CHARS],
                "last_error_kind": exc.kind,
                "next_check_at": now + timedelta(seconds=delay),
                "lease_until": None,
                "broken": broken,
            },
        )
        # The operator's log may say where a refused name pointed; the API (last_error) does not.
        where = f" ({exc.address})" if isinstance(exc, BlockedAddress) else ""
        log.warning("polling %s failed (%s, %d in a row): %s%s", shown_url(source.url), exc.kind, errors, exc, where)

    async def _health_event(
        self, event_type: str, source: Source, errors: int, error: str | None, kind: str | None
    ) -> None:
        payload = SourceHealthEvent(
            source_id=source.id,
            url=source.url,
            name=source.name,
            consecutive_errors=errors,
            last_error=error,
            last_error_kind=kind,
            at=self._clock(),
        )
        await self._bus.publish(self._ops, source.id, Envelope.wrap(event_type, payload))
        log.warning("%s: %s (%s)", event_type, shown_url(source.url), error or "ok")
