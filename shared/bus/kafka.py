"""Kafka adapter of the bus contract, on aiokafka.

Producer: acks=all and idempotence, so ``publish`` returns once the in-sync replicas have the
message; a broker that cannot be reached or does not answer in time raises
:class:`~shared.errors.BusUnavailable` (transient: callers back off and retry).
Consumer: auto-commit off; the shared consume loop (shared.bus.loop) runs on a thin backend
over :class:`AIOKafkaConsumer` — poll is ``getmany``, pause/resume act on the whole assignment,
and the rebalance listener lets the loop finish and commit a partition's records in work before
the partition moves to another member.

Every commit is bounded (:data:`COMMIT_TIMEOUT_S`, then :class:`~shared.errors.BusUnavailable`):
aiokafka's ``commit`` retries retriable errors, and waits for a coordinator, for as long as the
outage lasts, and an unbounded commit stopped the loop from polling, from seeing ``stop`` and
from ever finishing its final commit. The group timeouts follow from that bound
(:func:`consumer_timeouts`): the broker waits for a member that is still finishing its revoked
partitions instead of evicting it.

Topics are created on start when missing, with the configured partitions, replication factor
and ``min.insync.replicas`` (three brokers: 3 and 2, so a write survives one broker down; one
broker: 1 and 1).

aiokafka retries connections on its own and logs each failure at ERROR; shared.logs holds its
loggers at CRITICAL and the loop's outage log says what matters, once per state change. Every
client's metadata refreshes are paced (shared.bus.kafka_pacing): unpaced, a consumer whose
partition has no known leader spins a core while no broker answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, for_code

from shared.bus.base import Handler, LoopLimits, dead_letter_for
from shared.bus.kafka_pacing import pace_metadata_refresh
from shared.bus.loop import ConsumeLoop, OnRevoked
from shared.bus.steps import Partition, Record
from shared.envelope import MAX_MESSAGE_BYTES, TOPIC_DEADLETTER, Envelope
from shared.errors import BusUnavailable

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_MS = 15_000
# The longest a consumer commit may take before the loop carries its offsets to the next one.
COMMIT_TIMEOUT_S = REQUEST_TIMEOUT_MS / 1000
# Slack over the revoke callback's own bounds (drain, then commit), for the rejoin itself.
REBALANCE_MARGIN_MS = 10_000
# The broker holds a JoinGroup answer until every member has rejoined, up to the rebalance
# timeout; the request must outlive that (the Java client adds 5 s, KAFKA-5570).
JOIN_GROUP_LAPSE_MS = 5_000
MAX_POLL_INTERVAL_MS = 300_000  # aiokafka's default; the loop polls at least every commit bound
RETRY_BACKOFF_MS = 500  # aiokafka's default (100 ms) spins a core while a broker is down
# Also the shortest time between two metadata refreshes of one client (shared.bus.kafka_pacing),
# as retry.backoff.ms is in the Java client.
METADATA_REFRESH_MIN_S = RETRY_BACKOFF_MS / 1000
PING_TIMEOUT_S = 2.0
ERROR_TOPIC_ALREADY_EXISTS = 36
# Creating a topic with more replicas than brokers registered so far: a cluster still starting
# looks like this (and so does a replication factor above the broker count, which then fails the
# start after the wait, with this error named).
NOT_READY_CODES = frozenset({38})  # INVALID_REPLICATION_FACTOR


def consumer_timeouts(limits: LoopLimits, commit_timeout_s: float = COMMIT_TIMEOUT_S) -> dict[str, int]:
    """The consumer's group timeouts (AIOKafkaConsumer keyword arguments, ms) for a loop with
    ``limits``.

    - ``rebalance_timeout_ms``: how long the broker waits for every member to rejoin. A member
      rejoins after its revoke callback, which drains the revoked partitions' work (up to
      ``limits.drain_deadline_s``) and commits (up to ``commit_timeout_s``). aiokafka's default
      is the session timeout (10 s), less than those two: the broker evicted the member in the
      middle of its drain and the group rebalanced again.
    - ``request_timeout_ms``: aiokafka sends JoinGroup with its one request timeout, and the
      broker answers it only when the rebalance ends, so it is above the rebalance timeout;
      otherwise the waiting members time out and rejoin over and over while one drains. (This
      also lets other consumer requests to a broker that hangs wait that long; commits keep
      their own bound.)
    - ``max_poll_interval_ms``: no less than the rebalance timeout (the Java client's single
      setting for both).
    """
    rebalance_ms = int((limits.drain_deadline_s + commit_timeout_s) * 1000) + REBALANCE_MARGIN_MS
    return {
        "rebalance_timeout_ms": rebalance_ms,
        "request_timeout_ms": max(REQUEST_TIMEOUT_MS, rebalance_ms + JOIN_GROUP_LAPSE_MS),
        "max_poll_interval_ms": max(MAX_POLL_INTERVAL_MS, rebalance_ms),
    }


def is_transient(exc: BaseException) -> bool:
    """A Kafka error that an outage or a leader change explains (retry later), as opposed to a
    request the cluster will never accept (a bug: let it be loud)."""
    return isinstance(exc, KafkaConnectionError | KafkaTimeoutError | TimeoutError) or bool(
        getattr(exc, "retriable", False)
    )


class KafkaBus:
    """The :class:`~shared.bus.base.Bus` contract on a real Kafka cluster."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topics: Sequence[str],
        partitions: int = 3,
        replication_factor: int = 1,
        min_insync_replicas: int = 1,
        batch_size: int = 100,
        deadletter_topic: str = TOPIC_DEADLETTER,
        limits: LoopLimits | None = None,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._topics = list(topics)
        self._partitions = partitions
        self._replication = replication_factor
        self._min_isr = min_insync_replicas
        self._batch = batch_size
        self._deadletter = deadletter_topic
        self._limits = limits or LoopLimits(batch=batch_size)
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Create missing topics and start the producer; :class:`BusUnavailable` when the cluster
        cannot be reached or is not ready yet (the caller may retry: nothing is left open)."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            enable_idempotence=True,
            max_request_size=MAX_MESSAGE_BYTES + 100_000,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            retry_backoff_ms=RETRY_BACKOFF_MS,
            linger_ms=5,
        )
        pace_metadata_refresh(producer.client, METADATA_REFRESH_MIN_S)
        try:
            await self.ensure_topics(self._topics)
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            if is_transient(exc):
                raise BusUnavailable(f"cannot reach Kafka at {self._bootstrap}: {exc}") from exc
            raise
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the topics that are missing (idempotent; safe with concurrent replicas)."""
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._bootstrap,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            retry_backoff_ms=RETRY_BACKOFF_MS,
        )
        pace_metadata_refresh(admin._client, METADATA_REFRESH_MIN_S)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t not in existing]
            if missing:
                config = {"min.insync.replicas": str(self._min_isr)}
                # Errors per topic come back in the response; "already exists" is fine when
                # another replica won the race, anything else fails the start.
                response = await admin.create_topics(
                    [NewTopic(t, self._partitions, self._replication, topic_configs=config) for t in missing]
                )
                for name, code, *_ in getattr(response, "topic_errors", []):
                    if code in (0, ERROR_TOPIC_ALREADY_EXISTS):
                        continue
                    error = for_code(code)
                    if error.retriable or code in NOT_READY_CODES:
                        raise BusUnavailable(f"cannot create Kafka topic {name} yet: {error.__name__}")
                    raise RuntimeError(f"cannot create Kafka topic {name}: {error.__name__} (code {code})")
        finally:
            await admin.close()

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def ping(self) -> bool:
        producer = self._producer
        if producer is None:
            return False
        try:
            await asyncio.wait_for(producer.client.fetch_all_metadata(), PING_TIMEOUT_S)
        except (KafkaError, TimeoutError, OSError):
            return False  # the reason is the readiness check's answer, not a log line per probe
        return True

    async def publish(self, topic: str, key: str, envelope: Envelope) -> None:
        await self.publish_raw(topic, key, envelope.encode())

    async def publish_raw(self, topic: str, key: str, data: bytes) -> None:
        """Append bytes as they are (tests use it to publish malformed messages)."""
        if self._producer is None:
            raise RuntimeError("KafkaBus.publish before start()")
        try:
            await self._producer.send_and_wait(topic, value=data, key=key.encode())
        except KafkaError as exc:
            if is_transient(exc):
                raise BusUnavailable(f"publish to {topic}: {type(exc).__name__}: {exc}") from exc
            raise

    async def consume(
        self,
        topics: Sequence[str],
        group: str,
        handler: Handler,
        stop: asyncio.Event,
        *,
        limits: LoopLimits | None = None,
    ) -> None:
        loop_limits = limits or self._limits

        async def dead_letter(record: Record, reason: str) -> None:
            dead = dead_letter_for(
                record.topic, record.key, record.value, reason, partition=record.partition, offset=record.offset
            )
            await self.publish(self._deadletter, record.key or "", dead)

        backend = _KafkaConsumer(lambda: self.new_consumer(group, loop_limits), topics, self._bootstrap)
        name = f"consumer {group}"
        await ConsumeLoop(backend, handler, dead_letter=dead_letter, stop=stop, limits=loop_limits, name=name).run()

    def new_consumer(self, group: str, limits: LoopLimits) -> AIOKafkaConsumer:
        """An unstarted consumer of ``group`` for a loop with ``limits`` (manual commits)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=limits.batch,
            retry_backoff_ms=RETRY_BACKOFF_MS,
            **consumer_timeouts(limits),
        )
        pace_metadata_refresh(consumer._client, METADATA_REFRESH_MIN_S)
        return consumer


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_revoked: OnRevoked) -> None:
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self._on_revoked([(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        return None


class _KafkaConsumer:
    """The :class:`~shared.bus.loop.ConsumerBackend` over one :class:`AIOKafkaConsumer`."""

    def __init__(
        self,
        new_consumer: Callable[[], AIOKafkaConsumer],
        topics: Sequence[str],
        bootstrap: str,
        *,
        commit_timeout_s: float = COMMIT_TIMEOUT_S,
    ) -> None:
        self._new_consumer = new_consumer
        self._commit_timeout_s = commit_timeout_s
        self._consumer = new_consumer()
        self._topics = list(topics)
        self._bootstrap = bootstrap
        self._paused = False
        self._used = False

    async def start(self, on_revoked: OnRevoked) -> None:
        # A client whose start failed cannot be started again: each retry gets a new one.
        if self._used:
            self._consumer = self._new_consumer()
        self._used = True
        self._consumer.subscribe(self._topics, listener=_Listener(on_revoked))
        try:
            await self._consumer.start()
        except KafkaError as exc:
            if is_transient(exc):
                raise BusUnavailable(f"cannot reach Kafka at {self._bootstrap}: {exc}") from exc
            raise

    async def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        if self._paused:
            # Partitions assigned since the pause (a rebalance) are paused too.
            self._consumer.pause(*self._consumer.assignment())
        batches = await self._consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [
            Record(
                r.topic,
                r.partition,
                r.offset,
                r.key.decode("utf-8", errors="replace") if r.key is not None else None,
                r.value or b"",
            )
            for records in batches.values()
            for r in records
        ]

    async def commit(self, offsets: dict[Partition, int]) -> None:
        """Commit ``offsets``; :class:`BusUnavailable` when Kafka refuses them or has not taken
        them within ``commit_timeout_s`` (the loop keeps them for its next commit)."""
        try:
            # aiokafka retries a retriable error, and waits for a coordinator, until it succeeds:
            # through a broker outage that is never, so the bound is ours. Cancelling it is safe:
            # aiokafka shields the request in flight and releases its commit lock.
            async with asyncio.timeout(self._commit_timeout_s):
                await self._consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
        except TimeoutError as exc:
            raise BusUnavailable(f"commit: no answer from Kafka within {self._commit_timeout_s:g}s") from exc
        except KafkaError as exc:
            # Includes CommitFailedError after a rebalance: the partitions moved, their new owner
            # redoes the uncommitted records. Either way the loop keeps going.
            raise BusUnavailable(f"commit: {type(exc).__name__}: {exc}") from exc

    def pause(self) -> None:
        self._paused = True
        self._consumer.pause(*self._consumer.assignment())

    def resume(self) -> None:
        self._paused = False
        self._consumer.resume(*self._consumer.assignment())

    async def close(self) -> None:
        await self._consumer.stop()
