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

from shared.bus.base import Handler, dead_letter_for
from shared.envelope import TOPIC_DEADLETTER, Envelope
from shared.errors import PoisonMessage

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

    # How often an idle consumer re-checks its stop event; bounds shutdown latency only.
    IDLE_CHECK_S = 0.2

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

    async def consume(self, topics: Sequence[str], group: str, handler: Handler, stop: asyncio.Event) -> None:
        logs = [(topic, self._log(topic)) for topic in topics]
        for _, log_ in logs:
            log_.committed.setdefault(group, log_.base)

        def pending() -> bool:
            return any(log_.end > log_.committed[group] for _, log_ in logs)

        while not stop.is_set():
            for topic, log_ in logs:
                start = log_.committed[group]
                batch = log_.messages[start - log_.base : start - log_.base + self._batch]
                done = start
                try:
                    for key, data in batch:
                        await self._handle(topic, key, data, handler, done)
                        done += 1
                finally:
                    # Commit the finished prefix, also when a handler crashed (as the Kafka adapter does).
                    if done > start:
                        async with self._changed:
                            log_.committed[group] = done
                            log_.trim()
                            self._changed.notify_all()
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait_for(pending), self.IDLE_CHECK_S)

    async def _handle(self, topic: str, key: str, data: bytes, handler: Handler, offset: int) -> None:
        try:
            envelope = Envelope.decode(data)
            await handler(envelope)
        except PoisonMessage as exc:
            log.warning("dead-lettering message from %s at offset %d: %s", topic, offset, exc.reason)
            await self.publish(self._deadletter, key, dead_letter_for(topic, key, data, exc.reason, offset=offset))
