"""Fixtures for running Corridor as real processes, in the distributed or the embedded mode."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from helpers import SHARED_DATA, CorridorProcess, FeedServer, SmtpSink

API_KEY = "e2e-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
URDU_FEED = SHARED_DATA / "feeds/miniflux/internal/reader/parser/testdata/urdu_UTF8.xml"


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


def corridor_env(
    mode: str, request: pytest.FixtureRequest, unique: str, tmp_path: Path, smtp: SmtpSink
) -> dict[str, str]:
    env = {
        "CORRIDOR_API_KEY": API_KEY,
        "CORRIDOR_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
        "CORRIDOR_SMTP_PORT": str(smtp.port),
        "CORRIDOR_POLL_TICK_S": "0.2",
        "CORRIDOR_DELIVERY_SWEEP_S": "0.5",
        "CORRIDOR_DELIVERY_LEASE_S": "2",
        "CORRIDOR_WEBHOOK_TIMEOUT_S": "1",
        "CORRIDOR_DELIVERY_RETRY_SCHEDULE_S": "1,1,2,2,5",
    }
    if mode == "distributed":
        env |= {
            "KAFKA_BOOTSTRAP_SERVERS": request.getfixturevalue("kafka_bootstrap"),
            "MONGODB_URI": request.getfixturevalue("mongo_uri"),
            "CORRIDOR_MONGODB_DATABASE": f"e2e_{unique}",
            "CORRIDOR_TOPIC_PREFIX": f"e2e-{unique}.",
            "CORRIDOR_GROUP_PREFIX": f"e2e-{unique}",
        }
    else:
        env["CORRIDOR_SQLITE_PATH"] = str(tmp_path / "corridor.sqlite3")
    return env


@pytest.fixture
def launch(artifacts: Path) -> Iterator[Callable[[str, dict[str, str]], CorridorProcess]]:
    """Start `corridor run ROLE`; every process is stopped at the end of the test."""
    procs: list[CorridorProcess] = []

    def start(role: str, env: dict[str, str]) -> CorridorProcess:
        proc = CorridorProcess(role, env, artifacts / f"corridor-{role}.log").start()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


def get_json(url: str, **params: str | int) -> object:
    response = httpx.get(url, params=params, headers=AUTH, timeout=10)
    response.raise_for_status()
    return response.json()
