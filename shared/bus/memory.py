"""In-process bus for the embedded mode and unit tests.

Each topic is an append-only log with offsets, like a one-partition Kafka topic; each consumer
group keeps a committed offset and starts from the earliest retained message. Committed
prefixes are trimmed. It keeps nothing across restarts: in the embedded mode the store, not the
bus, is what survives (ingest re-polls, deliveries are re-swept).

Bounded: a topic with consumer groups holds at most ``max_retained`` uncommitted messages and
``publish`` waits for room (backpressure). A topic nobody consumes (the dead-letter topic in the
embedded mode) drops its oldest messages beyond the bound instead of blocking the producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.bus.base import Handler, LoopLimits, dead_letter_for
from shared.bus.loop import ConsumeLoop, OnRevoked
from shared.bus.steps import Partition, Record
from shared.envelope import TOPIC_DEADLETTER, Envelope

log = logging.getLogger(__name__)


@dataclass
class _Log:
    base: int = 0  # offset of messages[0]
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    committed: dict[str, int] = field(default_factory=dict)  # group → next offset to read

    @property
    def end(self) -> int:
        return self.base + len(self.messages)

    def trim(self) -> None:
        if not self.committed:
            return
        low = min(self.committed.values())
        if low > self.base:
            del self.messages[: low - self.base]
            self.base = low


class MemoryBus:
    """The :class:`~shared.bus.base.Bus` contract in one process."""

    def __init__(
        self, *, max_retained: int = 10_000, batch_size: int = 100, deadletter_topic: str = TOPIC_DEADLETTER
    ) -> None:
        self._logs: dict[str, _Log] = {}
        self._max = max_retained
        self._batch = batch_size
        self._deadletter = deadletter_topic
        # One condition for the whole bus: notified on every publish and every commit.
        self._changed = asyncio.Condition()
        self.dropped = 0

    def _log(self, topic: str) -> _Log:
        return self._logs.setdefault(topic, _Log())

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def publish(self, topic: str, key: str, envelope: Envelope) -> None:
        await self.publish_raw(topic, key, envelope.encode())

    async def publish_raw(self, topic: str, key: str, data: bytes) -> None:
        """Append bytes as they are (tests use it to publish malformed messages)."""
        log_ = self._log(topic)
        async with self._changed:
            if log_.committed:
                await self._changed.wait_for(lambda: len(log_.messages) < self._max)
            elif len(log_.messages) >= self._max:
                del log_.messages[0]
                log_.base += 1
                self.dropped += 1
            log_.messages.append((key, data))
            self._changed.notify_all()

    async def consume(
        self,
        topics: Sequence[str],
        group: str,
        handler: Handler,
        stop: asyncio.Event,
        *,
        limits: LoopLimits | None = None,
    ) -> None:
        backend = _MemoryConsumer(self, topics, group)

        async def dead_letter(record: Record, reason: str) -> None:
            dead = dead_letter_for(record.topic, record.key, record.value, reason, offset=record.offset)
            await self.publish(self._deadletter, record.key or "", dead)

        loop = ConsumeLoop(
            backend,
            handler,
            dead_letter=dead_letter,
            stop=stop,
            limits=limits or LoopLimits(batch=self._batch),
            name=f"consumer {group}",
        )
        await loop.run()


class _MemoryConsumer:
    """The :class:`~shared.bus.loop.ConsumerBackend` of one group on a :class:`MemoryBus`: each
    topic is one partition; the group's committed offset is where a new consumer starts."""

    def __init__(self, bus: MemoryBus, topics: Sequence[str], group: str) -> None:
        self._bus = bus
        self._group = group
        self._logs = [(topic, bus._log(topic)) for topic in topics]
        self._position: dict[str, int] = {}
        self._paused = False

    async def start(self, on_revoked: OnRevoked) -> None:
        for topic, log_ in self._logs:
            self._position[topic] = log_.committed.setdefault(self._group, log_.base)

    def _take(self, max_records: int) -> list[Record]:
        if self._paused:
            return []
        records: list[Record] = []
        for topic, log_ in self._logs:
            position = max(self._position[topic], log_.base)
            for key, data in log_.messages[position - log_.base : position - log_.base + max_records - len(records)]:
                records.append(Record(topic, 0, position, key, data))
                position += 1
            self._position[topic] = position
        return records

    async def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        if records := self._take(max_records):
            return records

        def pending() -> bool:
            return not self._paused and any(log_.end > self._position[topic] for topic, log_ in self._logs)

        async with self._bus._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._bus._changed.wait_for(pending), timeout_s)
        return self._take(max_records)

    async def commit(self, offsets: dict[Partition, int]) -> None:
        async with self._bus._changed:
            for (topic, _), offset in offsets.items():
                log_ = self._bus._log(topic)
                log_.committed[self._group] = max(offset, log_.committed.get(self._group, 0))
                log_.trim()
            self._bus._changed.notify_all()

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    async def close(self) -> None:
        return None
