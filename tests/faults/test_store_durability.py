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
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from faults.stack import FaultStore

from shared.errors import StoreUnavailable
from shared.models import Delivery
from shared.store.mongo import MongoStore

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

ROUNDS = 3
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _delivery(n: int) -> Delivery:
    return Delivery(
        id=f"msg_durable_{n:06d}",
        subscription_id="sub_durable",
        item_id=f"itm_{n:06d}",
        channel="webhook",
        created_at=T0,
        next_attempt_at=T0 + timedelta(seconds=60),
    )


async def _write_until_killed(store: MongoStore, fault_store: FaultStore, after_s: float, first: int) -> list[str]:
    """Insert deliveries one by one until the store dies ``after_s`` seconds in; the ids it acknowledged."""
    acknowledged: list[str] = []

    async def writer() -> None:
        n = first
        while True:
            try:
                await store.insert_deliveries([_delivery(n)])
            except StoreUnavailable:
                return
            acknowledged.append(_delivery(n).id)
            n += 1

    task = asyncio.create_task(writer())
    await asyncio.sleep(after_s)
    await asyncio.to_thread(fault_store.kill)
    await asyncio.wait_for(task, 30)
    return acknowledged


async def _present(uri: str, database: str, ids: list[str]) -> set[str]:
    store = MongoStore(uri, database)
    await store.start()
    try:
        return {i for i in ids if await store.get_delivery(i) is not None}
    finally:
        await store.close()


def test_acknowledged_writes_survive_kill_9(fault_store: FaultStore) -> None:
    database = f"durability_{uuid.uuid4().hex[:8]}"
    rng = random.Random(11)
    first = 0
    for _ in range(ROUNDS):

        async def one_round(start_at: int) -> list[str]:
            store = MongoStore(fault_store.uri, database, server_selection_timeout_ms=1000, socket_timeout_ms=1000)
            await store.start()
            try:
                return await _write_until_killed(store, fault_store, rng.uniform(0.3, 1.0), start_at)
            finally:
                await store.close()

        acknowledged = asyncio.run(one_round(first))
        fault_store.start()
        assert len(acknowledged) > 20, f"the writer barely ran before the kill ({len(acknowledged)} writes)"
        present = asyncio.run(_present(fault_store.uri, database, acknowledged))
        lost = [i for i in acknowledged if i not in present]
        assert not lost, (
            f"{len(lost)} of {len(acknowledged)} acknowledged writes lost to kill -9 (e.g. {lost[-3:]}): "
            "is the store running without --sync-on-commit?"
        )
        first += len(acknowledged) + 1
