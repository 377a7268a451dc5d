"""The runtime: builds every long-lived client of one process, runs the background loops of its
roles, and shuts them down in order.

Start: store, bus, seed sources, then the loops (consumers first). Stop, in four steps: stop
intake (the stop event, set as the signal arrives: ``request_stop``), drain in-flight work with
a deadline counted from that request, commit (each consumer commits as it returns), close
clients in reverse order. A loop that crashes stops the process loudly (``failed`` is set
and ``on_failure`` is called): uncommitted work is redone by the next process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Literal

import httpx

from services.alerts.deliverer import Deliverer
from services.alerts.matcher import Matcher
from services.alerts.ops import OpsNotifier
from services.classifier.agreements import load_registry
from services.classifier.classify import Classifier
from services.classifier.judge import load_judge
from services.classifier.service import ClassifierService
from services.classifier.taxonomy import load_taxonomy
from services.classifier.watch import AgreementWatch
from services.ingest.catalogue import import_catalogue, load_catalogue
from services.ingest.normalize import LanguageDetector
from services.ingest.poller import Poller
from services.ingest.sources import InvalidSource, add_source
from shared.bus import Bus
from shared.bus.base import Handler
from shared.bus.kafka import KafkaBus
from shared.bus.memory import MemoryBus
from shared.envelope import (
    ALL_TOPICS,
    TOPIC_AGREEMENTS,
    TOPIC_ALERTS,
    TOPIC_CLASSIFIED,
    TOPIC_DEADLETTER,
    TOPIC_OPS,
    TOPIC_RAW,
)
from shared.errors import Conflict, Unavailable
from shared.http import build_client
from shared.logs import shown_url
from shared.metrics import Metrics
from shared.netguard import AddressPolicy
from shared.outage import Backoff, OutageLog, sleep_or_stop
from shared.settings import Settings
from shared.store import Store
from shared.store.mongo import MongoStore
from shared.store.sqlite import SQLiteStore

Role = Literal["ingest", "classifier", "alerts"]
ALL_ROLES: frozenset[Role] = frozenset({"ingest", "classifier", "alerts"})

log = logging.getLogger(__name__)

# How long the loops get to stop, counted from the stop request (a signal), not from ``stop()``:
# under uvicorn that is called only after its HTTP drain, which runs meanwhile.
STOP_DEADLINE_S = 30.0
# How long a starting process waits for an unreachable store or broker before it gives up (exit 1).
STARTUP_WAIT_S = 60.0


def build_store(settings: Settings) -> Store:
    """MongoDB-wire store when MONGODB_URI is set, else the embedded SQLite store."""
    retention_s = settings.dedupe_retention_days * 86400.0
    if settings.mongodb_uri is not None:
        return MongoStore(
            settings.mongodb_uri.get_secret_value(),
            settings.mongodb_database,
            socket_timeout_ms=int(settings.mongodb_socket_timeout_s * 1000),
            retention_s=retention_s,
        )
    return SQLiteStore(settings.sqlite_path, retention_s=retention_s)


def bus_journal_path(settings: Settings) -> Path | None:
    """The in-process bus's journal in the embedded mode: next to the SQLite store
    (``var/corridor.sqlite3`` → ``var/corridor-bus.sqlite3``). None, and the bus keeps nothing
    across restarts, when the store is in memory or not SQLite (a MongoDB-wire store without
    Kafka is a test set-up, whose processes would otherwise share a file in the working dir)."""
    if settings.mongodb_uri is not None or str(settings.sqlite_path) == ":memory:":
        return None
    path = settings.sqlite_path
    return path.with_name(f"{path.stem}-bus{path.suffix}")


def build_bus(settings: Settings, *, journal: bool = True) -> Bus:
    """Kafka when KAFKA_BOOTSTRAP_SERVERS is set, else the in-process bus, journaled next to the
    SQLite store (unless ``journal`` is False) so that a restart or a crash loses no published
    message."""
    deadletter = settings.topic(TOPIC_DEADLETTER)
    if settings.kafka_bootstrap_servers:
        return KafkaBus(
            settings.kafka_bootstrap_servers,
            topics=[settings.topic(t) for t in ALL_TOPICS],
            partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            min_insync_replicas=settings.topic_min_insync_replicas,
            batch_size=settings.bus_batch_size,
            deadletter_topic=deadletter,
        )
    return MemoryBus(
        max_retained=settings.memory_bus_max_retained,
        batch_size=settings.bus_batch_size,
        deadletter_topic=deadletter,
        journal_path=bus_journal_path(settings) if journal else None,
    )


class Runtime:
    """Everything one Corridor process runs. Construct (no I/O), ``start()``, ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        roles: Iterable[Role],
        *,
        on_failure: Callable[[], None] | None = None,
        feed_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.roles = frozenset(roles)
        self.metrics = Metrics()
        self.policy = AddressPolicy(settings.allow_private_networks)
        self.store = build_store(settings)
        # A process without roles (`corridor init`) neither publishes nor consumes: it opens no
        # journal, whose lock would refuse it next to the process serving the same files.
        self.bus = build_bus(settings, journal=bool(self.roles))
        self.taxonomy = load_taxonomy(settings.taxonomy_path)
        self.registry = load_registry(settings.agreements_path)
        self.judge = load_judge(settings.judge_path) if settings.judge_enabled else None
        self.failed = False
        self.started = False  # every loop runs: the API may serve (services.app answers 503 before)
        self._on_failure = on_failure
        self._stop = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop start() ran on
        self._stop_requested_at: float | None = None  # loop time of the first stop request
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: list[httpx.AsyncClient] = []
        # Read side, used by the API of every role (cheap, no I/O): the agreement states.
        self.watch = AgreementWatch(store=self.store, bus=self.bus, registry=self.registry, settings=settings)
        # Each role builds only what it runs.
        self.poller: Poller | None = None
        self.classifier: ClassifierService | None = None
        self.matcher: Matcher | None = None
        self.deliverer: Deliverer | None = None
        self.ops: OpsNotifier | None = None
        if "ingest" in self.roles:
            feed_client = self._client(
                settings.fetch_timeout_s, settings.fetch_max_redirects, settings.poll_concurrency * 2, feed_transport
            )
            self.poller = Poller(
                store=self.store,
                bus=self.bus,
                client=feed_client,
                settings=settings,
                metrics=self.metrics,
                detector=LanguageDetector(),
            )
        if "classifier" in self.roles:
            self.classifier = ClassifierService(
                store=self.store,
                bus=self.bus,
                classifier=Classifier(self.taxonomy, self.registry, self.judge),
                settings=settings,
                metrics=self.metrics,
                watch=self.watch,
            )
        if "alerts" in self.roles:
            webhook_client = self._client(settings.webhook_timeout_s, 0, settings.delivery_concurrency * 2, None)
            self.matcher = Matcher(store=self.store, bus=self.bus, settings=settings, metrics=self.metrics)
            self.deliverer = Deliverer(
                store=self.store, bus=self.bus, client=webhook_client, settings=settings, metrics=self.metrics
            )
            self.ops = OpsNotifier(settings)

    def _client(
        self, timeout_s: float, max_redirects: int, max_connections: int, transport: httpx.AsyncBaseTransport | None
    ) -> httpx.AsyncClient:
        client = build_client(
            policy=self.policy,
            timeout_s=timeout_s,
            max_redirects=max_redirects,
            user_agent=self.settings.user_agent,
            max_connections=max_connections,
            transport=transport,
        )
        self._clients.append(client)
        return client

    def wake_poller(self) -> None:
        """A source was added or resumed: poll it now (when this process runs the poller)."""
        if self.poller is not None:
            self.poller.wake()

    def subscriptions_changed(self) -> None:
        """A subscription changed: the matcher of this process (if any) re-reads them at once."""
        if self.matcher is not None:
            self.matcher.subscriptions_changed()

    async def _open_store(self) -> None:
        await self.store.start()
        moved = await self.store.migrate()
        if any(moved.values()):
            log.info("store: moved records of an earlier layout: %s", moved)

    async def _when_available(self, name: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step``, waiting out an outage of its dependency (a broker still electing leaders,
        a store restarting) with capped back-off for at most ``STARTUP_WAIT_S``; then the start
        fails (exit 1) and the supervisor decides. A stop request ends the wait."""
        outage = OutageLog(f"start: {name}")
        backoff = Backoff()
        deadline = asyncio.get_running_loop().time() + STARTUP_WAIT_S
        while True:
            try:
                await step()
            except Unavailable as exc:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise
                outage.down(str(exc))
                # The last pause ends at the deadline, so the start gives up STARTUP_WAIT_S plus
                # one attempt's own timeout after it began, not a whole back-off step later.
                if await sleep_or_stop(min(backoff.next_s(), left), self._stop):
                    raise
                continue
            outage.up()
            return

    @property
    def sector_ids(self) -> list[str]:
        return list(self.taxonomy.sectors)

    async def start(self) -> None:
        """Connect, seed configured feeds, start the loops of this process's roles. If any step
        fails, what was opened is closed again before the error propagates. A stop requested
        (a signal) while it waits for the store or the bus ends the start without an error and
        without starting anything: the caller's ``stop()`` closes what was opened, and the
        process exits 0 as after any SIGTERM."""
        self._stop.clear()
        self._stop_requested_at = None
        self._loop = asyncio.get_running_loop()
        try:
            await self._start()
        except Unavailable:
            if self._stop_requested_at is not None:
                log.info("stop requested while waiting for the store or the bus; not started")
                return
            await self.stop()
            raise
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        await self._when_available("store", self._open_store)
        await self._when_available("bus", self.bus.start)
        if self.poller is not None:
            await self._seed_feeds()
        # Consumers are spawned before every loop that publishes: each joins its group in its first
        # step, so on the in-process bus every group holds its topic's messages from the first
        # publish on (a group the journal remembers but no consumer joined holds them only up to
        # the bound: shared.bus.memory).
        if self.classifier is not None:
            self._consume("classifier.consumer", TOPIC_RAW, "classifier", self.classifier.handle)
        if self.matcher is not None and self.deliverer is not None and self.ops is not None:
            self._consume("alerts.matcher", TOPIC_CLASSIFIED, "alerts-matcher", self.matcher.handle)
            self._consume("alerts.deliverer", TOPIC_ALERTS, "alerts-deliverer", self.deliverer.handle)
            self._consume("alerts.agreements", TOPIC_AGREEMENTS, "alerts-agreements", self.matcher.handle_agreement)
            self._consume("alerts.ops", TOPIC_OPS, "alerts-ops", self.ops.handle)
            self._spawn("alerts.sweeper", self.deliverer.sweep(self._stop))
        if self.classifier is not None:
            self._spawn("classifier.agreements", self.watch.run(self._stop))
        if self.poller is not None:
            self._spawn("ingest.poller", self.poller.run(self._stop))
        self.started = True
        log.info(
            "corridor started: roles=%s bus=%s store=%s",
            sorted(self.roles),
            type(self.bus).__name__,
            type(self.store).__name__,
        )

    def _consume(self, name: str, topic: str, group: str, handler: Handler) -> None:
        s = self.settings
        self._spawn(name, self.bus.consume([s.topic(topic)], s.group(group), handler, self._stop))

    async def _seed_feeds(self) -> None:
        if self.settings.load_catalogue:
            added = await import_catalogue(self.store, load_catalogue(), self.settings.poll_interval_s)
            log.info("catalogue: %d sources added", added)
        for url in self.settings.feeds:
            try:
                await add_source(self.store, self.policy, url=url, name=None, interval_s=self.settings.poll_interval_s)
            except Conflict:
                pass
            except InvalidSource as exc:
                # shown_url: refused URLs are often the ones carrying credentials or tokens.
                log.error("configured feed %s refused: %s", shown_url(url), exc)

    def _spawn(self, name: str, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s crashed; stopping this process", name)
                self.failed = True
                self._stop_now()
                if self._on_failure is not None:
                    self._on_failure()

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    async def has_started(self) -> bool:
        """A readiness check: false while the start still waits for the store or the bus."""
        return self.started

    def start_ended(self, task: asyncio.Task[None]) -> None:
        """Done-callback of a start run in the background (services.app): a start that failed
        (the store or the bus did not answer within the wait) fails the process, as a crashed
        loop does, so it exits 1; ``start()`` has already closed what it opened."""
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if isinstance(exc, Unavailable):  # the store or bus never answered: the reason is enough
            log.error("start failed: %s", exc)
        else:  # a bug: its trace, as uvicorn logged it when the start ran before serving
            log.error("start failed: %s", exc, exc_info=exc)
        self.failed = True
        if self._on_failure is not None:
            self._on_failure()

    def request_stop(self) -> None:
        """Ask every loop to stop taking work now (``stop()`` still drains and closes). Safe from a
        signal handler or another thread: it only schedules setting the stop event on the loop
        ``start()`` ran on. Before ``start()`` it does nothing."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stop_now)

    def _stop_now(self) -> None:
        if self._stop_requested_at is None:
            self._stop_requested_at = asyncio.get_running_loop().time()
        self._stop.set()

    async def stop(self) -> None:
        """Stop intake, drain within ``STOP_DEADLINE_S`` of the stop request, then close clients
        in reverse order."""
        self.started = False
        self._stop_now()
        assert self._stop_requested_at is not None
        elapsed_s = asyncio.get_running_loop().time() - self._stop_requested_at
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=max(0.0, STOP_DEADLINE_S - elapsed_s))
            for task in pending:
                log.warning("%s did not stop within %.0fs; cancelling", task.get_name(), STOP_DEADLINE_S)
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()
        for client in self._clients:
            await client.aclose()
        await self.bus.close()
        await self.store.close()
