"""One contract, two adapters: the in-process bus and Kafka (real broker) behave the same."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from pydantic import BaseModel

from shared.bus import Bus
from shared.bus.base import LoopLimits
from shared.bus.kafka import KafkaBus
from shared.bus.memory import MemoryBus
from shared.envelope import DeadLetter, Envelope
from shared.errors import PoisonMessage, StoreUnavailable

WAIT_S = 45.0


class Note(BaseModel):
    n: int


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
async def bus_and_topics(request: pytest.FixtureRequest, unique: str) -> AsyncIterator[tuple[Bus, str, str]]:
    topic, dead = f"t-{unique}", f"dlq-{unique}"
    bus: Bus
    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        bus = KafkaBus(bootstrap, topics=[topic, dead], partitions=2, deadletter_topic=dead)
    else:
        bus = MemoryBus(deadletter_topic=dead)
    await bus.start()
    yield bus, topic, dead
    await bus.close()


async def publish_raw(bus: Bus, topic: str, key: str, data: bytes) -> None:
    assert isinstance(bus, KafkaBus | MemoryBus)
    await bus.publish_raw(topic, key, data)


async def consume_until(
    bus: Bus,
    topic: str,
    group: str,
    handler: Callable[[Envelope], Awaitable[None]],
    done: Callable[[], bool],
    timeout_s: float = WAIT_S,
) -> None:
    """Run a consumer until ``done()`` (checked often) then stop it gracefully; re-raise its errors."""
    stop = asyncio.Event()
    task = asyncio.create_task(bus.consume([topic], group, handler, stop))
    deadline = asyncio.get_running_loop().time() + timeout_s
    try:
        while not done():
            if task.done():
                await task  # raises the consumer's error
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("consumer did not get the expected messages in time")
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT_S)


def note(n: int) -> Envelope:
    return Envelope.wrap("note", Note(n=n))


async def test_every_message_arrives_in_key_order(bus_and_topics: tuple[Bus, str, str], unique: str) -> None:
    bus, topic, _ = bus_and_topics
    for n in range(20):
        await bus.publish(topic, f"k{n % 3}", note(n))
    seen: list[tuple[int, int]] = []

    async def handler(env: Envelope) -> None:
        seen.append((env.payload_as(Note).n % 3, env.payload_as(Note).n))

    await consume_until(bus, topic, f"g-{unique}", handler, lambda: len(seen) >= 20)
    assert sorted(n for _, n in seen) == list(range(20))
    for key in range(3):
        per_key = [n for k, n in seen if k == key]
        assert per_key == sorted(per_key), f"key k{key} out of order: {per_key}"


async def test_committed_messages_are_not_redelivered_to_the_group(
    bus_and_topics: tuple[Bus, str, str], unique: str
) -> None:
    bus, topic, _ = bus_and_topics
    group = f"g-{unique}"
    for n in range(3):
        await bus.publish(topic, "k", note(n))
    first: list[int] = []

    async def collect_first(env: Envelope) -> None:
        first.append(env.payload_as(Note).n)

    await consume_until(bus, topic, group, collect_first, lambda: len(first) >= 3)
    await bus.publish(topic, "k", note(3))
    second: list[int] = []

    async def collect_second(env: Envelope) -> None:
        second.append(env.payload_as(Note).n)

    await consume_until(bus, topic, group, collect_second, lambda: 3 in second)
    assert first == [0, 1, 2]
    assert second == [3]


async def test_handler_crash_leaves_the_message_uncommitted(bus_and_topics: tuple[Bus, str, str], unique: str) -> None:
    bus, topic, _ = bus_and_topics
    group = f"g-{unique}"
    for n in range(4):
        await bus.publish(topic, "k", note(n))
    handled: list[int] = []

    async def crash_on_two(env: Envelope) -> None:
        n = env.payload_as(Note).n
        if n == 2:
            raise RuntimeError("store unavailable")
        handled.append(n)

    with pytest.raises(RuntimeError, match="store unavailable"):
        await consume_until(bus, topic, group, crash_on_two, lambda: False)
    assert handled == [0, 1]
    again: list[int] = []

    async def collect(env: Envelope) -> None:
        again.append(env.payload_as(Note).n)

    await consume_until(bus, topic, group, collect, lambda: len(again) >= 2)
    assert again == [2, 3], "the crashed message and those after it are redone; earlier ones are not"


async def test_poison_goes_to_the_dead_letter_topic_and_does_not_block(
    bus_and_topics: tuple[Bus, str, str], unique: str
) -> None:
    bus, topic, dead = bus_and_topics
    await publish_raw(bus, topic, "k", b"{not json")
    await bus.publish(topic, "k", Envelope(type="note", payload={"n": "not a number"}))
    await bus.publish(topic, "k", note(7))
    good: list[int] = []

    async def handler(env: Envelope) -> None:
        good.append(env.payload_as(Note).n)  # payload_as raises PoisonMessage on the invalid one

    await consume_until(bus, topic, f"g-{unique}", handler, lambda: good == [7])
    letters: list[DeadLetter] = []

    async def collect_dead(env: Envelope) -> None:
        letters.append(env.payload_as(DeadLetter))

    await consume_until(bus, dead, f"d-{unique}", collect_dead, lambda: len(letters) >= 2)
    assert [d.topic for d in letters] == [topic, topic]
    assert "not a Corridor envelope" in letters[0].reason
    assert letters[0].original == "{not json"
    assert "invalid note payload" in letters[1].reason


async def test_poison_raised_by_handler_is_dead_lettered(bus_and_topics: tuple[Bus, str, str], unique: str) -> None:
    bus, topic, dead = bus_and_topics
    await bus.publish(topic, "k", note(1))

    refused: list[Envelope] = []

    async def refuse(env: Envelope) -> None:
        refused.append(env)
        raise PoisonMessage("refused by handler")

    letters: list[DeadLetter] = []

    async def collect_dead(env: Envelope) -> None:
        letters.append(env.payload_as(DeadLetter))

    await consume_until(bus, topic, f"g-{unique}", refuse, lambda: bool(refused))
    await consume_until(bus, dead, f"d-{unique}", collect_dead, lambda: len(letters) >= 1)
    assert letters[0].reason == "refused by handler"


async def test_keys_run_concurrently_and_a_stuck_key_holds_back_only_itself(
    bus_and_topics: tuple[Bus, str, str], unique: str
) -> None:
    """One key's handler waiting (a slow endpoint) does not delay the other keys' messages, and
    nothing past the waiting message is committed in its partition."""
    bus, topic, _ = bus_and_topics
    await bus.publish(topic, "slow", note(0))
    for n in range(1, 11):
        await bus.publish(topic, f"fast{n}", note(n))
    release = asyncio.Event()
    done: list[int] = []

    async def handler(env: Envelope) -> None:
        n = env.payload_as(Note).n
        if n == 0:
            await release.wait()
        done.append(n)

    stop = asyncio.Event()
    task = asyncio.create_task(bus.consume([topic], f"g-{unique}", handler, stop))
    try:
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while len(done) < 10:
            assert asyncio.get_running_loop().time() < deadline, f"fast keys waited on the slow one: {done}"
            assert not task.done(), task
            await asyncio.sleep(0.05)
        assert 0 not in done
        release.set()
        while 0 not in done:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
    finally:
        release.set()
        stop.set()
        await asyncio.wait_for(task, WAIT_S)
    assert sorted(done) == list(range(11))


async def test_outage_in_a_handler_is_retried_and_the_consumer_stays_up(
    bus_and_topics: tuple[Bus, str, str], unique: str
) -> None:
    bus, topic, _ = bus_and_topics
    for n in range(3):
        await bus.publish(topic, "k", note(n))
    failures = 0
    handled: list[int] = []

    async def flaky(env: Envelope) -> None:
        nonlocal failures
        n = env.payload_as(Note).n
        if n == 1 and failures < 3:
            failures += 1
            raise StoreUnavailable("connection refused")
        handled.append(n)

    await consume_until(bus, topic, f"g-{unique}", flaky, lambda: len(handled) >= 3)
    assert failures == 3
    assert handled == [0, 1, 2], "retried in place, order kept"


async def test_a_message_stuck_in_an_outage_is_not_committed(bus_and_topics: tuple[Bus, str, str], unique: str) -> None:
    """Stopping a consumer while its handler waits out an outage leaves the message to the next one."""
    bus, topic, _ = bus_and_topics
    group = f"g-{unique}"
    for n in range(2):
        await bus.publish(topic, "k", note(n))
    attempts: list[int] = []

    async def store_down(env: Envelope) -> None:
        n = env.payload_as(Note).n
        if n == 1:
            attempts.append(n)
            raise StoreUnavailable("server selection timed out")

    await consume_until(bus, topic, group, store_down, lambda: len(attempts) >= 2)
    again: list[int] = []

    async def collect(env: Envelope) -> None:
        again.append(env.payload_as(Note).n)

    await consume_until(bus, topic, group, collect, lambda: 1 in again)
    assert again == [1]


async def test_a_full_consumer_pauses_and_keeps_polling(bus_and_topics: tuple[Bus, str, str], unique: str) -> None:
    """Backpressure: with every worker busy, the consumer holds at most ``max_buffered`` messages
    (partitions paused, not a blocked poll) and takes the rest once work frees up."""
    bus, topic, _ = bus_and_topics
    total = 60
    for n in range(total):
        await bus.publish(topic, f"k{n}", note(n))
    release = asyncio.Event()
    started: list[int] = []
    done: list[int] = []

    async def handler(env: Envelope) -> None:
        started.append(env.payload_as(Note).n)
        await release.wait()
        done.append(env.payload_as(Note).n)

    limits = LoopLimits(concurrency=4, max_buffered=10, batch=5, poll_timeout_s=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(bus.consume([topic], f"g-{unique}", handler, stop, limits=limits))
    try:
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while len(started) < 4:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # many polls while full
        assert len(started) == 4, "no more than `concurrency` in work"
        assert not task.done()
        release.set()
        while len(done) < total:
            assert asyncio.get_running_loop().time() < deadline, f"{len(done)} of {total}"
            await asyncio.sleep(0.05)
    finally:
        release.set()
        stop.set()
        await asyncio.wait_for(task, WAIT_S)
    assert sorted(done) == list(range(total))


@pytest.mark.kafka
async def test_a_member_draining_longer_than_its_session_keeps_the_group_waiting(
    kafka_bootstrap: str, unique: str
) -> None:
    """A revoke that drains for longer than the session timeout (10 s) is waited for: the broker
    does not evict the member, its commit after the drain is accepted, and the record it finished
    is not handled again by the member that takes the partition. (With the rebalance timeout left
    at the session timeout, the second member took the partition at 10 s and redid the record.)"""
    topic, dead = f"t-{unique}", f"dlq-{unique}"
    group = f"g-{unique}"
    bus = KafkaBus(kafka_bootstrap, topics=[topic, dead], partitions=1, deadletter_topic=dead)
    await bus.start()
    handled: list[tuple[str, int]] = []
    slow_started = asyncio.Event()

    def handler_of(member: str) -> Callable[[Envelope], Awaitable[None]]:
        async def handler(env: Envelope) -> None:
            n = env.payload_as(Note).n
            if n == 0 and member == "a":
                slow_started.set()
                await asyncio.sleep(12.0)  # past the 10 s session timeout
            handled.append((member, n))

        return handler

    limits = LoopLimits(drain_deadline_s=14.0)
    stop = asyncio.Event()
    members: list[asyncio.Task[None]] = []
    try:
        await bus.publish(topic, "k", note(0))
        members.append(asyncio.create_task(bus.consume([topic], group, handler_of("a"), stop, limits=limits)))
        await asyncio.wait_for(slow_started.wait(), WAIT_S)
        members.append(asyncio.create_task(bus.consume([topic], group, handler_of("b"), stop, limits=limits)))
        await asyncio.sleep(1.0)  # b joins: a's partition is revoked while its record is in work
        await bus.publish(topic, "k", note(1))
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while not any(n == 1 for _, n in handled):
            assert asyncio.get_running_loop().time() < deadline, f"message 1 not handled: {handled}"
            assert not any(member.done() for member in members)
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # a second handling of 0 would have come before 1
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*members, return_exceptions=True), WAIT_S)
        await bus.close()
    assert [n for _, n in handled].count(0) == 1, f"message 0 handled again after the drain: {handled}"
    assert ("a", 0) in handled
