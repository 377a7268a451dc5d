"""A consumer stays idle while its partition has no leader (shared.bus.kafka_pacing).

The whole-cluster outage in test_faults.py caught consumers using 0.6 cores each, some runs and
not others: it depends on whether a consumer's last metadata, read while the cluster was
stopping, showed a partition without a leader. Here that state is made on purpose: a topic with
one replica, whose broker is stopped. Unpaced (``pacing_probe.py --unpaced``) the consumer
measured 0.20 cores with two brokers answering "no leader" and 0.66 with every broker down;
paced, under 0.01."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from faults.stack import Cluster, cpu_seconds
from helpers import REPO

from shared.bus.kafka import KafkaBus
from shared.envelope import Envelope

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

IDLE_LIMIT_CORES = 0.05
MEASURE_S = 10.0


def _publish(bus_bootstrap: str, topic: str) -> str:
    envelope = Envelope(type="probe", payload={})

    async def send() -> None:
        bus = KafkaBus(bus_bootstrap, topics=[topic], partitions=1, replication_factor=1)
        await bus.start()
        try:
            await bus.publish(topic, "probe", envelope)
        finally:
            await bus.close()

    asyncio.run(send())
    return envelope.id


def _wait_for_line(out: Path, line: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if line in out.read_text().splitlines():
            return
        time.sleep(0.2)
    raise AssertionError(f"the consumer did not print {line!r} in {timeout_s:.0f} s: {out.read_text()[-2000:]}")


def test_a_consumer_stays_idle_while_its_partition_has_no_leader(cluster: Cluster, tmp_path: Path) -> None:
    topic = f"pacing-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "probe.out"
    with out.open("w") as sink:
        probe = subprocess.Popen(
            [sys.executable, str(REPO / "tests/faults/pacing_probe.py"), cluster.bootstrap, topic, f"g-{topic}"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    stopped: int | None = None
    try:
        # The consumer creates the topic (one partition, one replica) and reads a first message.
        _wait_for_line(out, f"got {_publish(cluster.bootstrap, topic)}", 90)
        stopped = cluster.leader(topic, 0)
        cluster.run("stop-node", str(stopped))
        time.sleep(2)  # the consumer's fetch fails and its next metadata shows no leader
        before = cpu_seconds(probe.pid)
        time.sleep(MEASURE_S)
        cores = (cpu_seconds(probe.pid) - before) / MEASURE_S
        assert probe.poll() is None, f"the consumer exited: {out.read_text()[-2000:]}"
        assert cores < IDLE_LIMIT_CORES, f"consumer CPU while its partition had no leader: {cores:.3f} cores"
        cluster.run("start-node", str(stopped))
        stopped = None
        # Back with its leader, the same process reads on.
        _wait_for_line(out, f"got {_publish(cluster.bootstrap, topic)}", 90)
    finally:
        probe.kill()
        probe.wait(10)
        if stopped is not None:
            cluster.run("start-node", str(stopped))
