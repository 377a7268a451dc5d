"""Review fixes of the bus and consume layer (no broker needed).

- A commit that never returns (aiokafka retries through an outage) is bounded and becomes
  BusUnavailable; a stop during it finishes the shutdown.
- A payload time out of range once in UTC is poison (dead-lettered), not a bug (crash loop).
- The consumer's group timeouts cover a revoke's drain and commit; a revoke wakes a record that
  is waiting out an outage.
- An unknown schema_version is refused, never read as the current one.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import AfterValidator, BaseModel

from shared.bus.base import LoopLimits
from shared.bus.kafka import COMMIT_TIMEOUT_S, KafkaBus, _KafkaConsumer, consumer_timeouts
from shared.bus.loop import ConsumeLoop, OnRevoked
from shared.bus.steps import Partition, Record
from shared.envelope import SCHEMA_VERSIONS, Envelope
from shared.errors import BusUnavailable, PoisonMessage, StoreUnavailable
from shared.models import RawItem
from shared.timeutil import to_utc_ms

LIMITS = LoopLimits(concurrency=2, max_buffered=8, batch=4, poll_timeout_s=0.01, commit_interval_s=0.0)
OUT_OF_RANGE = ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"]


class Note(BaseModel):
    n: int


def note(n: int, key: str = "k", partition: int = 0) -> Record:
    return Record("t", partition, n, key, Envelope.wrap("note", Note(n=n)).encode())


def raw_item(fetched_at: str, *, schema_version: int = 1) -> bytes:
    payload = {"id": "i1", "source_id": "s1", "source_url": "https://example.org/feed", "fetched_at": fetched_at}
    return Envelope(type="item.raw", schema_version=schema_version, payload=payload).encode()


async def never_dead_letter(record: Record, reason: str) -> None:
    raise AssertionError(f"unexpected dead letter: {reason}")


async def eventually(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def finishes(task: asyncio.Task[None], timeout_s: float = 5.0) -> None:
    """Fail unless ``task`` ends within ``timeout_s``; a task that does not is cancelled without
    waiting for it (a loop stuck in a commit may not end on a first cancellation)."""
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        pytest.fail(f"not finished within {timeout_s}s")
    task.result()


# --- fakes -----------------------------------------------------------------------------------


@dataclass
class _Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class HungConsumer:
    """An AIOKafkaConsumer whose ``commit`` never returns, as aiokafka's does while no broker
    answers (it retries retriable errors until one succeeds). One record, then empty polls."""

    def __init__(self) -> None:
        self.pending = [_Message("t", 0, 0, b"k", Envelope.wrap("note", Note(n=0)).encode())]
        self.commits_started = 0
        self.commits_cancelled = 0
        self.stopped = False

    def subscribe(self, topics: list[str], listener: object) -> None:
        pass

    async def start(self) -> None:
        pass

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[_Message]]:
        await asyncio.sleep(0.01)
        batch, self.pending = self.pending, []
        return {TopicPartition("t", 0): batch} if batch else {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits_started += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.commits_cancelled += 1
            raise

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("t", 0)}

    def pause(self, *partitions: TopicPartition) -> None:
        pass

    def resume(self, *partitions: TopicPartition) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True


class Backend:
    """A scripted ConsumerBackend: hands out ``records``; ``hang_commits`` first commits never
    return (with no bound of their own: what the loop does with such a commit)."""

    def __init__(self, records: list[Record], *, hang_commits: int = 0) -> None:
        self.pending = list(records)
        self.hang_commits = hang_commits
        self.commits: list[dict[Partition, int]] = []
        self.on_revoked: OnRevoked | None = None
        self.closed = False

    async def start(self, on_revoked: OnRevoked) -> None:
        self.on_revoked = on_revoked

    async def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        await asyncio.sleep(0.01)
        batch, self.pending = self.pending[:max_records], self.pending[max_records:]
        return batch

    async def commit(self, offsets: dict[Partition, int]) -> None:
        if self.hang_commits > 0:
            self.hang_commits -= 1
            await asyncio.Event().wait()
        self.commits.append(dict(offsets))

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


def kafka_backend(consumer: HungConsumer, commit_timeout_s: float) -> _KafkaConsumer:
    def new_consumer() -> AIOKafkaConsumer:
        return cast(AIOKafkaConsumer, consumer)

    return _KafkaConsumer(new_consumer, ["t"], "127.0.0.1:9", commit_timeout_s=commit_timeout_s)


# --- 1. commits are bounded --------------------------------------------------------------------


async def test_a_commit_that_never_returns_raises_bus_unavailable_within_the_bound() -> None:
    consumer = HungConsumer()
    backend = kafka_backend(consumer, commit_timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(BusUnavailable, match=re.escape("no answer from Kafka within 0.2s")):
        await asyncio.wait_for(backend.commit({("t", 0): 1}), 5)
    assert time.monotonic() - started < 2
    assert consumer.commits_cancelled == 1, "aiokafka's endless retry is cut, not left running"
    assert COMMIT_TIMEOUT_S == 15.0, "the adapter's request timeout"


async def test_stop_while_no_broker_takes_commits_finishes_the_shutdown() -> None:
    consumer = HungConsumer()
    backend = kafka_backend(consumer, commit_timeout_s=0.2)
    handled: list[int] = []

    async def handler(env: Envelope) -> None:
        handled.append(env.payload_as(Note).n)

    stop = asyncio.Event()
    loop = ConsumeLoop(backend, handler, dead_letter=never_dead_letter, stop=stop, limits=LIMITS, name="t")
    task = asyncio.create_task(loop.run())
    await eventually(lambda: handled == [0])
    await asyncio.sleep(0.7)  # a few commit bounds
    stop.set()
    await finishes(task)  # before the fix: the final commit never returned
    assert consumer.stopped, "the consumer left the group"
    # Periodic commits timed out one after another (the loop went on polling), then the final one.
    assert consumer.commits_started >= 3
    assert consumer.commits_cancelled == consumer.commits_started


async def test_a_periodic_commit_still_waiting_at_stop_is_given_up_for_the_final_one() -> None:
    # The first commit hangs (longer than any bound a test can wait); the broker is back for
    # the final one, which carries the same offsets.
    backend = Backend([note(0)], hang_commits=1)
    handled: list[int] = []

    async def handler(env: Envelope) -> None:
        handled.append(env.payload_as(Note).n)

    stop = asyncio.Event()
    loop = ConsumeLoop(backend, handler, dead_letter=never_dead_letter, stop=stop, limits=LIMITS, name="t")
    task = asyncio.create_task(loop.run())
    await eventually(lambda: handled == [0] and backend.hang_commits == 0)
    stop.set()
    await finishes(task)
    assert backend.commits == [{("t", 0): 1}]
    assert backend.closed


# --- 2. out-of-range times are poison ----------------------------------------------------------


@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_to_utc_ms_raises_value_error_for_a_time_utc_cannot_hold(value: str) -> None:
    with pytest.raises(ValueError, match="out of range once converted to UTC"):
        to_utc_ms(datetime.fromisoformat(value))


def test_to_utc_ms_keeps_the_extremes_utc_can_hold() -> None:
    assert to_utc_ms(datetime(9999, 12, 31, 23, 59, 59, 999999)) == datetime(9999, 12, 31, 23, 59, 59, 999000, UTC)
    plus_five = timezone(timedelta(hours=5))
    assert to_utc_ms(datetime(1, 1, 1, 5, 0, tzinfo=plus_five)) == datetime(1, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_an_out_of_range_payload_time_is_a_poison_message(value: str) -> None:
    envelope = Envelope.decode(raw_item(value))
    with pytest.raises(PoisonMessage, match="fetched_at"):
        envelope.payload_as(RawItem)


def _bare_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)  # OverflowError at the extremes, which pydantic lets through


class BareMoment(BaseModel):
    at: Annotated[datetime, AfterValidator(_bare_utc)]


@pytest.mark.parametrize("value", OUT_OF_RANGE)
def test_a_validator_error_pydantic_lets_through_is_still_poison(value: str) -> None:
    envelope = Envelope(type="note", payload={"at": value})
    with pytest.raises(PoisonMessage, match="OverflowError"):
        envelope.payload_as(BareMoment)


@pytest.mark.parametrize("value", OUT_OF_RANGE)
async def test_the_loop_dead_letters_an_out_of_range_time_instead_of_stopping(value: str) -> None:
    backend = Backend([Record("t", 0, 0, "i1", raw_item(value)), note(1)])
    letters: list[tuple[int, str]] = []
    handled: list[int] = []

    async def dead_letter(record: Record, reason: str) -> None:
        letters.append((record.offset, reason))

    async def handler(env: Envelope) -> None:
        if env.type == "item.raw":
            env.payload_as(RawItem)
        else:
            handled.append(env.payload_as(Note).n)

    stop = asyncio.Event()
    task = asyncio.create_task(
        ConsumeLoop(backend, handler, dead_letter=dead_letter, stop=stop, limits=LIMITS, name="t").run()
    )
    await eventually(lambda: handled == [1] and letters)
    stop.set()
    await finishes(task)  # before the fix: OverflowError out of run(), a crash
    assert [offset for offset, _ in letters] == [0]
    assert "out of range" in letters[0][1]
    assert backend.commits[-1] == {("t", 0): 2}, "the poison message is committed"


# --- 3. group timeouts and revokes -------------------------------------------------------------


async def test_the_consumer_group_timeouts_cover_a_revoke_drain_and_commit() -> None:
    limits = LoopLimits()
    consumer = KafkaBus("127.0.0.1:9", topics=[]).new_consumer("g", limits)
    try:
        revoke_ms = (limits.drain_deadline_s + COMMIT_TIMEOUT_S) * 1000
        rebalance_ms = consumer._rebalance_timeout_ms
        assert rebalance_ms >= revoke_ms + 5_000, "the broker waits out a member's drain and commit"
        assert consumer._client._request_timeout_ms > rebalance_ms, "JoinGroup outlives the rebalance"
        assert consumer._max_poll_interval_ms >= rebalance_ms
    finally:
        await consumer.stop()


def test_group_timeouts_follow_a_longer_drain_deadline() -> None:
    timeouts = consumer_timeouts(LoopLimits(drain_deadline_s=400.0))
    assert timeouts["rebalance_timeout_ms"] > 415_000
    assert timeouts["request_timeout_ms"] > timeouts["rebalance_timeout_ms"]
    assert timeouts["max_poll_interval_ms"] >= timeouts["rebalance_timeout_ms"]


async def test_a_revoke_wakes_a_record_waiting_out_an_outage() -> None:
    backend = Backend([note(0, partition=0)])
    attempts = 0

    async def handler(env: Envelope) -> None:
        nonlocal attempts
        attempts += 1
        raise StoreUnavailable("store down")

    limits = LoopLimits(concurrency=2, max_buffered=8, batch=4, poll_timeout_s=0.01, drain_deadline_s=5.0)
    stop = asyncio.Event()
    task = asyncio.create_task(
        ConsumeLoop(backend, handler, dead_letter=never_dead_letter, stop=stop, limits=limits, name="t").run()
    )
    await eventually(lambda: attempts >= 1)
    assert backend.on_revoked is not None
    revoked: Collection[Partition] = [("t", 0)]
    started = time.monotonic()
    await asyncio.wait_for(backend.on_revoked(revoked), 10)
    # Before the fix the record slept on in its back-off and retried until the drain deadline.
    assert time.monotonic() - started < 1.0
    tries = attempts
    await asyncio.sleep(0.8)
    assert attempts == tries, "the revoked partition's record is left to its new owner"
    stop.set()
    await finishes(task)
    assert all(("t", 0) not in c or c[("t", 0)] == 0 for c in backend.commits), "nothing committed"


# --- 4. schema versions ------------------------------------------------------------------------


def test_an_unknown_schema_version_is_poison_on_decode_and_payload_as() -> None:
    data = raw_item("2026-01-01T00:00:00Z", schema_version=2)
    with pytest.raises(PoisonMessage, match=re.escape("unknown schema_version 2 of 'item.raw'")):
        Envelope.decode(data)
    envelope = Envelope.model_validate_json(data)  # as built in-process, without decode
    with pytest.raises(PoisonMessage, match="unknown schema_version 2"):
        envelope.payload_as(RawItem)


def test_current_schema_versions_are_read() -> None:
    for event_type, versions in SCHEMA_VERSIONS.items():
        for version in versions:
            assert Envelope.decode(Envelope(type=event_type, schema_version=version, payload={}).encode())
    item = Envelope.decode(raw_item("2026-01-01T00:00:00Z")).payload_as(RawItem)
    assert item.fetched_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert Envelope.decode(Envelope.wrap("note", Note(n=1)).encode()).payload_as(Note).n == 1
    with pytest.raises(PoisonMessage):
        Envelope.decode(Envelope(type="note", schema_version=0, payload={}).encode())


async def test_the_loop_dead_letters_an_unknown_schema_version_without_handling_it() -> None:
    backend = Backend([Record("t", 0, 0, "i1", raw_item("2026-01-01T00:00:00Z", schema_version=2)), note(1)])
    letters: list[str] = []
    seen: list[str] = []

    async def dead_letter(record: Record, reason: str) -> None:
        letters.append(reason)

    async def handler(env: Envelope) -> None:
        seen.append(env.type)

    stop = asyncio.Event()
    task = asyncio.create_task(
        ConsumeLoop(backend, handler, dead_letter=dead_letter, stop=stop, limits=LIMITS, name="t").run()
    )
    await eventually(lambda: seen == ["note"] and letters)
    stop.set()
    await finishes(task)
    assert letters == ["unknown schema_version 2 of 'item.raw' (this consumer reads 1)"]
    assert backend.commits[-1] == {("t", 0): 2}
