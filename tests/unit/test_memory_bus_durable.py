"""The in-process bus with its journal (the embedded mode): what a group had not committed is
delivered again after a restart, in order, and what it committed is not; the bounds hold across
restarts; the file is trimmed and held by one process at a time. The bus contract
(tests/contract/test_bus_contract.py) is run again here on the journaled bus."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from contract import test_bus_contract as contract  # run again below, on the journaled bus
from contract.test_bus_contract import consume_until, note

from shared.bus import Bus
from shared.bus.memory import MemoryBus
from shared.envelope import Envelope
from shared.errors import BusUnavailable

# The contract tests that run on whichever bus the fixture gives (the others need Kafka itself).
CONTRACT = sorted(
    name
    for name in dir(contract)
    if name.startswith("test_") and "bus_and_topics" in inspect.signature(getattr(contract, name)).parameters
)

TOPIC, DEAD = "t", "dlq"


@pytest.fixture
async def journaled(tmp_path: Path, unique: str) -> AsyncIterator[tuple[Bus, str, str]]:
    """The contract's ``bus_and_topics``, journaled."""
    topic, dead = f"t-{unique}", f"dlq-{unique}"
    bus = MemoryBus(deadletter_topic=dead, journal_path=tmp_path / "bus.sqlite3")
    await bus.start()
    yield bus, topic, dead
    await bus.close()


async def opened(path: Path, **kwargs: int) -> MemoryBus:
    bus = MemoryBus(deadletter_topic=DEAD, journal_path=path, **kwargs)
    await bus.start()
    return bus


def n_of(env: Envelope) -> int:
    return int(env.payload["n"])


def rows(path: Path, topic: str = TOPIC) -> list[int]:
    """The offsets the journal file holds for ``topic`` (read as another reader would, after close)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [r[0] for r in db.execute("SELECT msg_offset FROM messages WHERE topic=? ORDER BY 1", (topic,))]


async def crash_at(bus: MemoryBus, group: str, n: int) -> list[int]:
    """Consume ``group`` until message ``n``, whose handler raises (a bug): the loop commits
    the finished prefix (every message before ``n``) and stops. What was handled."""
    handled: list[int] = []

    async def handler(env: Envelope) -> None:
        if n_of(env) == n:
            raise RuntimeError("crash")
        handled.append(n_of(env))

    with pytest.raises(RuntimeError, match="crash"):
        await consume_until(bus, TOPIC, group, handler, lambda: False)
    return handled


async def join(bus: MemoryBus, group: str) -> None:
    """A consumer of ``group`` that joins and stops at once: the group is known, nothing committed."""

    async def handler(env: Envelope) -> None:
        raise AssertionError("nothing to handle")

    stopped = asyncio.Event()
    stopped.set()
    await bus.consume([TOPIC], group, handler, stopped)


async def collect(bus: MemoryBus, group: str, until: int | None, topic: str = TOPIC) -> list[int]:
    """Every message ``group`` gets until message ``until`` arrived (None: for half a second)."""
    seen: list[int] = []
    quiet_until = asyncio.get_running_loop().time() + 0.5

    async def handler(env: Envelope) -> None:
        seen.append(n_of(env))

    def done() -> bool:
        return until in seen if until is not None else asyncio.get_running_loop().time() > quiet_until

    await consume_until(bus, topic, group, handler, done)
    return seen


async def test_uncommitted_messages_are_delivered_again_in_order_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "bus.sqlite3"
    bus = await opened(path)
    for n in range(10):
        await bus.publish(TOPIC, "k", note(n))
    assert await crash_at(bus, "g", 4) == [0, 1, 2, 3]
    await bus.close()  # the process ends (a crash keeps the same file: every write was committed)

    bus = await opened(path)
    try:
        assert await collect(bus, "g", 9) == [4, 5, 6, 7, 8, 9], "committed ones are not redelivered"
        await bus.publish(TOPIC, "k", note(10))
        assert await collect(bus, "g", 10) == [10], "offsets go on after the reopened log"
    finally:
        await bus.close()
    assert rows(path) == [], "prefixes every group committed are trimmed from the file"


async def test_a_group_that_joined_but_never_committed_gets_everything_again(tmp_path: Path) -> None:
    path = tmp_path / "bus.sqlite3"
    bus = await opened(path)
    await join(bus, "slow")
    for n in range(5):
        await bus.publish(TOPIC, "k", note(n))
    assert await collect(bus, "fast", 4) == [0, 1, 2, 3, 4]
    await bus.close()
    assert rows(path) == [0, 1, 2, 3, 4], "the group that committed nothing still holds them"

    bus = await opened(path)
    try:
        assert await collect(bus, "slow", 4) == [0, 1, 2, 3, 4]
        assert await collect(bus, "fast", None) == [], "nothing for the group that committed"
    finally:
        await bus.close()


async def test_the_bound_holds_after_a_restart(tmp_path: Path) -> None:
    """A topic full of messages its group has not committed keeps publishers waiting after a
    restart too, until the group commits."""
    path = tmp_path / "bus.sqlite3"
    bus = await opened(path, max_retained=10)
    await join(bus, "g")
    for n in range(10):
        await bus.publish(TOPIC, "k", note(n))
    await bus.close()

    bus = await opened(path, max_retained=10)
    try:
        await join(bus, "g")  # a consumer of the restarted process (they join before anything publishes)
        blocked = asyncio.create_task(bus.publish(TOPIC, "k", note(10)))
        await asyncio.sleep(0.3)
        assert not blocked.done(), "the 11th message waits for room behind the restored group"
        assert await collect(bus, "g", 10) == list(range(11))
        await asyncio.wait_for(blocked, 5)
        assert bus.dropped == 0
    finally:
        await bus.close()


async def test_a_topic_nobody_consumes_keeps_its_newest_messages_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "bus.sqlite3"
    bus = await opened(path, max_retained=10)
    for n in range(15):
        await bus.publish(DEAD, "k", note(n))  # never waits: nobody consumes it
    assert bus.dropped == 5
    await bus.close()
    assert rows(path, DEAD) == list(range(5, 15))

    bus = await opened(path, max_retained=10)
    try:
        assert await collect(bus, "reader", 14, topic=DEAD) == list(range(5, 15))
    finally:
        await bus.close()


async def test_a_group_no_consumer_joins_does_not_block_publishers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A group the journal remembers but no consumer of this process joins (a renamed group)
    holds its messages only up to the bound; beyond, its oldest are dropped and that is logged."""
    path = tmp_path / "bus.sqlite3"
    bus = await opened(path, max_retained=10)
    await join(bus, "old-name")
    await bus.close()

    bus = await opened(path, max_retained=10)
    try:
        for n in range(12):
            await asyncio.wait_for(bus.publish(TOPIC, "k", note(n)), 5)
        assert bus.dropped == 2
        assert "dropped for groups no consumer joined: ['old-name']" in caplog.text
    finally:
        await bus.close()


async def test_a_second_process_cannot_open_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "bus.sqlite3"
    bus = await opened(path)
    try:
        other = MemoryBus(journal_path=path)
        with pytest.raises(BusUnavailable, match="in use by another process"):
            await other.start()
        await other.close()
    finally:
        await bus.close()
    again = await opened(path)  # the lock went with the first holder
    await again.close()


async def test_a_failed_journal_write_fails_the_publish_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bus.sqlite3"
    bus = await opened(path, max_retained=10)
    try:
        await bus.publish(TOPIC, "k", note(0))
        assert bus._journal is not None

        async def disk_full(batch: object) -> None:
            raise BusUnavailable("bus journal: database or disk is full")

        monkeypatch.setattr(bus._journal, "write", disk_full)
        with pytest.raises(BusUnavailable, match="disk is full"):
            await bus.publish(TOPIC, "k", note(1))
        monkeypatch.undo()
        await bus.publish(TOPIC, "k", note(2))
        assert await collect(bus, "g", 2) == [0, 2], "the failed publish left no gap and no message"
    finally:
        await bus.close()


async def test_concurrent_publishes_share_journal_writes(tmp_path: Path) -> None:
    path = tmp_path / "bus.sqlite3"
    bus = await opened(path)
    try:
        assert bus._journal is not None
        write = bus._journal.write
        writes = 0

        async def counted(batch: object) -> None:
            nonlocal writes
            writes += 1
            await write(batch)  # type: ignore[arg-type]

        bus._journal.write = counted  # type: ignore[method-assign]
        await asyncio.gather(*(bus.publish(TOPIC, f"k{n}", note(n)) for n in range(200)))
        assert writes < 20, f"{writes} transactions for 200 concurrent publishes"
        assert sorted(await collect(bus, "g", 199)) == list(range(200))
    finally:
        await bus.close()


@pytest.mark.parametrize("name", CONTRACT)
async def test_the_bus_contract_holds_with_the_journal(name: str, journaled: tuple[Bus, str, str], unique: str) -> None:
    await getattr(contract, name)(journaled, unique)
