"""The bus contract every adapter honours (tests/contract/test_bus_contract.py checks it).

- ``publish`` returns only once the message is durable for this adapter (Kafka: acks=all).
- ``consume`` delivers messages of one key in publish order, at least once, to one consumer of
  a group; it commits a message's offset only after ``handler`` returned for it and every
  message before it.
- A message that cannot be decoded, or whose handler raises :class:`PoisonMessage`, goes to the
  dead-letter topic with the reason and is committed: poison never blocks a partition.
- Any other exception from ``handler`` propagates out of ``consume`` without committing, so
  the work is redone by the next consumer (crash loudly; never swallow unknown errors).
- ``consume`` returns after ``stop`` is set, once the in-flight batch is done and committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from shared.envelope import DeadLetter, Envelope

Handler = Callable[[Envelope], Awaitable[None]]

MAX_DEADLETTER_ORIGINAL_CHARS = 64_000


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

    async def consume(self, topics: Sequence[str], group: str, handler: Handler, stop: asyncio.Event) -> None:
        """Run ``handler`` on every message of ``topics`` for consumer group ``group`` until ``stop``."""


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
