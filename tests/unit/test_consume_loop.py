"""The shared consume loop on a scripted backend: backpressure, commit policy, failure policy."""

from __future__ import annotations

import asyncio
from collections.abc import Collection

import pytest
from pydantic import BaseModel

from shared.bus.base import LoopLimits
from shared.bus.loop import ConsumeLoop, OnRevoked
from shared.bus.steps import Partition, Record
from shared.envelope import Envelope
from shared.errors import StoreUnavailable


class Note(BaseModel):
    n: int


def record(n: int, key: str, partition: int = 0) -> Record:
    return Record("t", partition, n, key, Envelope.wrap("note", Note(n=n)).encode())


class ScriptedBackend:
    """Hands out ``records`` in polls of at most ``max_records``; records what the loop does."""

    def __init__(self, records: list[Record]) -> None:
        self.pending = list(records)
        self.paused = False
        self.pauses = 0
        self.commits: list[dict[Partition, int]] = []
        self.max_outstanding = 0
        self.on_revoked: OnRevoked | None = None
        self.closed = False

    async def start(self, on_revoked: OnRevoked) -> None:
        self.on_revoked = on_revoked

    async def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        await asyncio.sleep(0.01)
        if self.paused:
            return []
        batch, self.pending = self.pending[:max_records], self.pending[max_records:]
        return batch

    async def commit(self, offsets: dict[Partition, int]) -> None:
        self.commits.append(dict(offsets))

    def pause(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume(self) -> None:
        self.paused = False

    async def close(self) -> None:
        self.closed = True

    def last_committed(self, tp: Partition = ("t", 0)) -> int | None:
        for offsets in reversed(self.commits):
            if tp in offsets:
                return offsets[tp]
        return None


async def no_dead_letter(record: Record, reason: str) -> None:
    raise AssertionError(f"unexpected dead letter: {reason}")


async def wait_for(condition: object, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


LIMITS = LoopLimits(concurrency=3, max_buffered=8, batch=4, poll_timeout_s=0.01, commit_interval_s=0.0)


async def test_full_runner_pauses_the_backend_and_resumes_when_half_empty() -> None:
    backend = ScriptedBackend([record(n, f"k{n}") for n in range(40)])
    release = asyncio.Event()
    in_work = 0
    peak = 0
    done: list[int] = []

    async def handler(env: Envelope) -> None:
        nonlocal in_work, peak
        in_work += 1
        peak = max(peak, in_work)
        await release.wait()
        in_work -= 1
        done.append(env.payload_as(Note).n)

    stop = asyncio.Event()
    loop = ConsumeLoop(backend, handler, dead_letter=no_dead_letter, stop=stop, limits=LIMITS, name="test")
    task = asyncio.create_task(loop.run())
    await wait_for(lambda: backend.paused)
    await asyncio.sleep(0.2)
    assert len(backend.pending) == 40 - 8, "exactly max_buffered records taken, then paused"
    assert peak == 3
    release.set()
    await wait_for(lambda: len(done) == 40)
    stop.set()
    await task
    assert backend.pauses >= 1 and not backend.paused, "resumed once the backlog drained"
    assert backend.last_committed() == 40
    assert backend.closed


async def test_commit_stops_at_the_lowest_unfinished_offset() -> None:
    backend = ScriptedBackend([record(0, "slow"), *(record(n, f"k{n}") for n in range(1, 6))])
    release = asyncio.Event()
    done: list[int] = []

    async def handler(env: Envelope) -> None:
        n = env.payload_as(Note).n
        if n == 0:
            await release.wait()
        done.append(n)

    stop = asyncio.Event()
    task = asyncio.create_task(
        ConsumeLoop(backend, handler, dead_letter=no_dead_letter, stop=stop, limits=LIMITS, name="test").run()
    )
    await wait_for(lambda: len(done) == 5)
    await asyncio.sleep(0.1)
    assert backend.last_committed() in (None, 0), "nothing past offset 0, still in work"
    release.set()
    await wait_for(lambda: backend.last_committed() == 6)
    stop.set()
    await task


async def test_a_bug_halts_commits_the_prefix_and_raises() -> None:
    backend = ScriptedBackend([record(n, "k") for n in range(5)])

    async def handler(env: Envelope) -> None:
        if env.payload_as(Note).n == 3:
            raise ZeroDivisionError("a bug")

    loop = ConsumeLoop(backend, handler, dead_letter=no_dead_letter, stop=asyncio.Event(), limits=LIMITS, name="t")
    with pytest.raises(ZeroDivisionError):
        await asyncio.wait_for(loop.run(), 10)
    assert backend.last_committed() == 3
    assert backend.closed


async def test_stop_during_an_outage_returns_promptly_without_committing_the_message() -> None:
    backend = ScriptedBackend([record(0, "k"), record(1, "k")])
    attempts = 0

    async def handler(env: Envelope) -> None:
        nonlocal attempts
        if env.payload_as(Note).n == 1:
            attempts += 1
            raise StoreUnavailable("down")

    stop = asyncio.Event()
    task = asyncio.create_task(
        ConsumeLoop(backend, handler, dead_letter=no_dead_letter, stop=stop, limits=LIMITS, name="t").run()
    )
    await wait_for(lambda: attempts >= 2)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert backend.last_committed() == 1


async def test_revoked_partitions_finish_their_work_commit_and_are_forgotten() -> None:
    backend = ScriptedBackend([record(0, "a", 0), record(0, "b", 1), record(1, "b", 1)])
    started = asyncio.Event()
    release = asyncio.Event()
    done: list[tuple[int, int]] = []

    async def handler(env: Envelope) -> None:
        n = env.payload_as(Note).n
        if n == 0 and not started.is_set():
            started.set()
            await release.wait()
        done.append((n, len(done)))

    stop = asyncio.Event()
    limits = LoopLimits(concurrency=1, max_buffered=8, batch=4, poll_timeout_s=0.01, commit_interval_s=60)
    task = asyncio.create_task(
        ConsumeLoop(backend, handler, dead_letter=no_dead_letter, stop=stop, limits=limits, name="t").run()
    )
    await started.wait()
    assert backend.on_revoked is not None
    revoke: Collection[Partition] = [("t", 0), ("t", 1)]
    revoking = asyncio.create_task(backend.on_revoked(revoke))
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.wait_for(revoking, 5)
    assert len(done) == 1, "only the record in work finished; the queued ones are left to the new owner"
    assert backend.commits[-1][("t", 0)] == 1
    assert backend.commits[-1].get(("t", 1), 0) == 0, "nothing of partition 1 finished"
    stop.set()
    await task
