"""A Corridor Kafka consumer as its own process, for tests/faults/test_consumer_idle_without_leader.py.

    python tests/faults/pacing_probe.py BOOTSTRAP TOPIC GROUP [--unpaced]

Consumes TOPIC through :class:`shared.bus.kafka.KafkaBus` (the product's consume path) and prints
``got <envelope id>`` for every message. ``--unpaced`` turns the metadata pacing off, to show by hand the
spin the test guards against."""

from __future__ import annotations

import asyncio
import sys

import shared.bus.kafka as kafka_bus
from shared.envelope import Envelope


async def main(bootstrap: str, topic: str, group: str) -> None:
    bus = kafka_bus.KafkaBus(bootstrap, topics=[topic], partitions=1, replication_factor=1)

    async def handle(envelope: Envelope) -> None:
        print(f"got {envelope.id}", flush=True)

    await bus.consume([topic], group, handle, asyncio.Event())


if __name__ == "__main__":
    if "--unpaced" in sys.argv:
        kafka_bus.pace_metadata_refresh = lambda client, min_interval_s: None  # type: ignore[assignment]
    asyncio.run(main(*sys.argv[1:4]))
