"""The fault suite's stack: a three-broker Kafka cluster (deploy/kafka-cluster.sh), its own
MongoDB-wire server (deploy/secantus.sh on another port and data dir, so stopping it touches no
other test), and two replicas each of ingest, classifier and alerts as real processes.

With CI=true a server that does not start fails the suite; elsewhere it skips."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from faults.stack import Cluster, FaultStore, Stack
from helpers import IN_CI, REPO, SmtpSink

CLUSTER_PORT = int(os.environ.get("FAULTS_KAFKA_PORT", "19092"))
STORE_PORT = int(os.environ.get("FAULTS_STORE_PORT", "27117"))


def _unavailable(what: str, detail: str) -> None:
    message = f"{what} did not start ({detail})"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    cluster = Cluster(REPO / "deploy/kafka-cluster.sh", CLUSTER_PORT)
    try:
        cluster.run("start")
    except subprocess.CalledProcessError as exc:
        _unavailable("the three-broker Kafka cluster", (exc.stderr or "")[-2000:])
    yield cluster
    cluster.run("stop")


@pytest.fixture(scope="session")
def fault_store() -> Iterator[FaultStore]:
    store = FaultStore(REPO / "deploy/secantus.sh", STORE_PORT, REPO / "deploy/.run/secantus-faults")
    try:
        store.start()
    except subprocess.CalledProcessError as exc:
        _unavailable("the fault suite's MongoDB-wire server", (exc.stderr or "")[-2000:])
    yield store
    store.stop()


@pytest.fixture(scope="module")
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def stack(cluster: Cluster, fault_store: FaultStore, smtp_sink: SmtpSink) -> Iterator[Stack]:
    artifacts = REPO / "test-artifacts" / "faults"
    artifacts.mkdir(parents=True, exist_ok=True)
    stack = Stack(cluster, fault_store, smtp_sink.port, uuid.uuid4().hex[:8], artifacts)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop_all()
