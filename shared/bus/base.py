"""The bus contract every adapter honours (tests/contract/test_bus_contract.py checks it).

- ``publish`` returns only once the message is durable for this adapter (Kafka: acks=all).
- ``consume`` delivers messages of one key in publish order, at least once, to one consumer of
  a group; messages of different keys are handled concurrently (bounded). It commits a
  message's offset only after ``handler`` returned for it and every message before it in its
  partition. Both adapters run the same loop (shared.bus.loop), so they behave the same.
- A message that cannot be decoded, or whose handler raises :class:`PoisonMessage`, goes to the
  dead-letter topic with the reason and is committed: poison never blocks a partition.
- A handler raising :class:`~shared.errors.Unavailable` (store or broker down) has its message
  retried with capped back-off until it succeeds or ``stop``; ``consume`` keeps running.
- Any other exception from ``handler`` propagates out of ``consume`` without committing, so
  the work is redone by the next consumer (crash loudly; never swallow unknown errors).
- ``consume`` returns after ``stop`` is set, once the messages in work are done (within a
  deadline) and committed.
- ``publish`` raises :class:`~shared.errors.BusUnavailable` when the broker cannot take the
  message now.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.envelope import DeadLetter, Envelope

Handler = Callable[[Envelope], Awaitable[None]]

MAX_DEADLETTER_ORIGINAL_CHARS = 64_000


@dataclass(frozen=True)
class LoopLimits:
    """The bounds of one consume loop."""

    concurrency: int = 8  # records in work at once (across keys)
    max_buffered: int = 500  # records fetched and not finished; beyond it partitions are paused
    batch: int = 100  # records per poll
    poll_timeout_s: float = 0.5
    commit_interval_s: float = 1.0
    drain_deadline_s: float = 10.0


class Bus(Protocol):
    """A topic-based, partitioned-by-key, at-least-once message bus."""

    async def start(self) -> None:
        """Connect and create the topics that do not exist yet."""

    async def close(self) -> None:
        """Flush and close every client."""

    async def ping(self) -> bool:
        """True when the bus answers (for /readyz)."""

    async def publish(self, topic: str, key: str, envelope: Envelope) -> None:
        """Append one message; return once it is durable."""

    async def consume(
        self,
        topics: Sequence[str],
        group: str,
        handler: Handler,
        stop: asyncio.Event,
        *,
        limits: LoopLimits | None = None,
    ) -> None:
        """Run ``handler`` on every message of ``topics`` for consumer group ``group`` until
        ``stop``, within ``limits`` (concurrency, buffered records) or the adapter's defaults."""


def dead_letter_for(
    topic: str,
    key: str | None,
    raw: bytes,
    reason: str,
    *,
    partition: int | None = None,
    offset: int | None = None,
) -> Envelope:
    """Wrap a failed message for the dead-letter topic (original capped, decoded leniently)."""
    original = raw.decode("utf-8", errors="replace")[:MAX_DEADLETTER_ORIGINAL_CHARS]
    payload = DeadLetter(
        topic=topic, key=key, reason=reason[:2000], original=original, partition=partition, offset=offset
    )
    return Envelope.wrap("deadletter", payload)
