"""Shared fixtures. Tests that need Kafka or the MongoDB-wire server use the servers `make servers` started; with
CI=true a missing server fails the test instead of skipping it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import IN_CI, REPO, SmtpSink, WebhookReceiver

KAFKA = os.environ.get("CORRIDOR_TEST_KAFKA", "127.0.0.1:9092")
MONGO = os.environ.get("CORRIDOR_TEST_MONGODB_URI", "mongodb://127.0.0.1:27017/")


def _missing(what: str, why: str) -> None:
    message = f"{what} is not available ({why}); start it with `make servers`"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


async def _kafka_answers() -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=5000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    try:
        # In a thread: the fixture may be requested from inside a running event loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _kafka_answers()).result(timeout=30)
    except Exception as exc:
        _missing(f"Kafka at {KAFKA}", repr(exc))
    return KAFKA


@pytest.fixture(scope="session")
def mongo_uri() -> str:
    from pymongo import MongoClient

    try:
        client: MongoClient[dict[str, object]] = MongoClient(MONGO, serverSelectionTimeoutMS=3000)
        client.admin.command("ping")
        client.close()
    except Exception as exc:
        _missing(f"the MongoDB-wire server at {MONGO}", repr(exc))
    return MONGO


@pytest.fixture(autouse=True)
def collect_garbage_after_each_test() -> Iterator[None]:
    """Collect garbage when each test ends (autouse fixtures are torn down last, after the test's
    event loop is closed), so an unclosed socket or file is reported at the test that left it:
    otherwise the collector runs whenever it likes and charges it to whichever test is running."""
    yield
    gc.collect()


@pytest.fixture(autouse=True)
def no_outside_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests talk only to loopback: a name the SSRF guard would resolve is answered here (only
    "localhost"), never by the system resolver. Tests that need a name give their own resolver."""
    from shared import netguard
    from shared.errors import FetchError

    async def loopback_only(host: str, port: int) -> list[str]:
        if host == "localhost":
            return ["127.0.0.1"]
        raise FetchError("dns", f"cannot resolve {host}: tests resolve no outside names")

    monkeypatch.setattr(netguard, "system_resolver", loopback_only)


@pytest.fixture
def unique() -> str:
    """A short unique name for topics, groups and databases of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    path = REPO / "test-artifacts" / request.node.name.replace("/", "_")[:100]
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s
