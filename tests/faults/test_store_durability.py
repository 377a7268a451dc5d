"""The premise of the store-kill round: a write the store acknowledged survives the store being
SIGKILLed the next moment. Consumers commit their Kafka offsets on the store's word, so a store
that forgets acknowledged writes loses alerts with no error anywhere (what round (e) once looked
like: one item's delivery records gone, nothing logged).

MongoStore writes with `w: "majority", j: true`; mongod honours that. The test server honours it
only when started with --sync-on-commit (deploy/secantus.sh does so by default): without it, a
kill -9 lost 30-190 acknowledged writes every time when measured, so one round of this test
catches the regression and three make a fluke impossible."""

from __future__ import annotations

import asyncio
import gc
import itertools
import random
import uuid
import warnings
from datetime import UTC, datetime, timedelta

import pytest
from faults.stack import FaultStore

from shared.errors import StoreUnavailable
from shared.models import Delivery
from shared.store.base import MAX_SCAN
from shared.store.mongo import MongoStore

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

ROUNDS = 3
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _delivery(subscription_id: str, n: int) -> Delivery:
    return Delivery(
        id=f"msg_{subscription_id}_{n:06d}",
        subscription_id=subscription_id,
        item_id=f"itm_{n:06d}",
        channel="webhook",
        created_at=T0,
        next_attempt_at=T0 + timedelta(seconds=60),
    )


async def _write_until_killed(
    fault_store: FaultStore, database: str, subscription_id: str, after_s: float
) -> list[str]:
    """Insert deliveries one by one until the store dies ``after_s`` seconds in; the ids it acknowledged."""
    store = MongoStore(fault_store.uri, database, server_selection_timeout_ms=1000, socket_timeout_ms=1000)
    await store.start()
    acknowledged: list[str] = []

    async def writer() -> None:
        for n in itertools.count():
            delivery = _delivery(subscription_id, n)
            try:
                await store.insert_deliveries([delivery])
            except StoreUnavailable:
                return
            acknowledged.append(delivery.id)

    try:
        task = asyncio.create_task(writer())
        await asyncio.sleep(after_s)
        await asyncio.to_thread(fault_store.kill)
        await asyncio.wait_for(task, 30)
    finally:
        await store.close()
    return acknowledged


def _collect_the_monitors_socket() -> None:
    """Collect, here, a socket pymongo (4.20) leaks when the store was killed.

    ``client.close()`` cancels the server monitor; when it is cancelled while reconnecting to the
    dead store, ``pool_shared._async_create_connection`` leaves the new socket open (it closes it
    on OSError and TimeoutError, not on CancelledError; traced with tracemalloc: once in 38
    rounds). The socket's finalizer closes the descriptor, so nothing leaks for long, but its
    ResourceWarning surfaced in whichever test the garbage collector next ran in
    (test_agreements.py in CI). Only this test kills the store under a client."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


async def _present(fault_store: FaultStore, database: str, subscription_id: str) -> set[str]:
    """The ids of the subscription's deliveries the store has now (one query)."""
    store = MongoStore(fault_store.uri, database)
    await store.start()
    try:
        return {d.id for d in await store.list_deliveries(subscription_id=subscription_id, limit=MAX_SCAN)}
    finally:
        await store.close()


def test_acknowledged_writes_survive_kill_9(fault_store: FaultStore) -> None:
    database = f"durability_{uuid.uuid4().hex[:8]}"
    rng = random.Random(11)
    for round_ in range(ROUNDS):
        subscription_id = f"sub_durable_{round_}"
        acknowledged = asyncio.run(_write_until_killed(fault_store, database, subscription_id, rng.uniform(0.3, 1.0)))
        _collect_the_monitors_socket()
        fault_store.start()
        assert 20 < len(acknowledged) < MAX_SCAN, (
            f"{len(acknowledged)} writes before the kill: too few, or more than one query reads back"
        )
        present = asyncio.run(_present(fault_store, database, subscription_id))
        lost = [i for i in acknowledged if i not in present]
        assert not lost, (
            f"{len(lost)} of {len(acknowledged)} acknowledged writes lost to kill -9 (e.g. {lost[-3:]}): "
            "is the store running without --sync-on-commit?"
        )
