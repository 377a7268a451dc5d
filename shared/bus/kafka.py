"""Kafka adapter of the bus contract, on aiokafka.

Producer: acks=all and idempotence, so ``publish`` returns once the broker has the message.
Consumer: auto-commit off; a partition's offset is committed after every message up to it was
handled (the contiguous finished prefix), and again on stop. Poison goes to the dead-letter
topic; any other handler error commits the finished prefix and propagates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.bus.base import Handler, dead_letter_for
from shared.envelope import MAX_MESSAGE_BYTES, TOPIC_DEADLETTER, Envelope
from shared.errors import PoisonMessage

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 500
REQUEST_TIMEOUT_MS = 15_000


class KafkaBus:
    """The :class:`~shared.bus.base.Bus` contract on a real Kafka cluster."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topics: Sequence[str],
        partitions: int = 3,
        replication_factor: int = 1,
        batch_size: int = 100,
        deadletter_topic: str = TOPIC_DEADLETTER,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self._topics = list(topics)
        self._partitions = partitions
        self._replication = replication_factor
        self._batch = batch_size
        self._deadletter = deadletter_topic
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        await self.ensure_topics(self._topics)
        producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            enable_idempotence=True,
            max_request_size=MAX_MESSAGE_BYTES + 100_000,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            linger_ms=5,
        )
        await producer.start()
        self._producer = producer

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the topics that are missing (idempotent; safe with concurrent replicas)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t not in existing]
            if missing:
                # Errors per topic come back in the response; "already exists" (36) is fine when
                # another replica won the race, anything else fails the start.
                response = await admin.create_topics(
                    [NewTopic(t, self._partitions, self._replication) for t in missing]
                )
                for name, code, *_ in getattr(response, "topic_errors", []):
                    if code not in (0, 36):
                        raise RuntimeError(f"cannot create Kafka topic {name}: error code {code}")
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
            await asyncio.wait_for(producer.client.fetch_all_metadata(), 5)
        except Exception:  # any failure means "not ready"; the reason is logged, not raised
            log.warning("kafka ping failed", exc_info=True)
            return False
        return True

    async def publish(self, topic: str, key: str, envelope: Envelope) -> None:
        await self.publish_raw(topic, key, envelope.encode())

    async def publish_raw(self, topic: str, key: str, data: bytes) -> None:
        """Append bytes as they are (tests use it to publish malformed messages)."""
        if self._producer is None:
            raise RuntimeError("KafkaBus.publish before start()")
        await self._producer.send_and_wait(topic, value=data, key=key.encode())

    async def consume(self, topics: Sequence[str], group: str, handler: Handler, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self._bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._batch,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=self._batch)
                for tp, records in batches.items():
                    await self._handle_partition(consumer, tp, records, handler)
        finally:
            await consumer.stop()

    async def _handle_partition(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: list[ConsumerRecord], handler: Handler
    ) -> None:
        done: int | None = None
        try:
            for record in records:
                await self._handle(record, handler)
                done = record.offset + 1
        finally:
            # Commit the contiguous finished prefix even when a handler crashed, so only the
            # failed message and those after it are redone.
            if done is not None:
                await consumer.commit({tp: done})

    async def _handle(self, record: ConsumerRecord, handler: Handler) -> None:
        key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
        data: bytes = record.value or b""
        try:
            envelope = Envelope.decode(data)
            await handler(envelope)
        except PoisonMessage as exc:
            log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc.reason)
            dead = dead_letter_for(
                record.topic, key, data, exc.reason, partition=record.partition, offset=record.offset
            )
            await self.publish(self._deadletter, key or "", dead)
