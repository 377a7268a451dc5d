"""The claim / in-flight / drain loop shared by the poller and the delivery sweep: bounds overall
and per key, outages backed off and retried, a bug ends the loop loudly (never retried forever)."""

from __future__ import annotations

import asyncio

import pytest

from shared import workpool
from shared.errors import StoreUnavailable
from shared.outage import Backoff
from shared.workpool import WorkPool, claim_loop


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workpool, "Backoff", lambda: Backoff(first_s=0.01, max_s=0.02))


async def test_bounded_overall_and_per_key_and_drained_on_stop() -> None:
    pool = WorkPool("test", limit=4, per_key_limit=2)
    stop = asyncio.Event()
    jobs = [("slow", n) for n in range(6)] + [("fast", n) for n in range(6)]
    running: dict[str, int] = {"slow": 0, "fast": 0}
    peak = {"slow": 0, "fast": 0, "all": 0}
    done: list[tuple[str, int]] = []

    async def claim() -> tuple[str, int] | None:
        # Like claim_due_delivery(exclude_subscriptions=pool.full_keys()): full keys are skipped.
        for job in jobs:
            if job[0] not in pool.full_keys():
                jobs.remove(job)
                return job
        return None

    async def work(job: tuple[str, int]) -> None:
        running[job[0]] += 1
        peak[job[0]] = max(peak[job[0]], running[job[0]])
        peak["all"] = max(peak["all"], sum(running.values()))
        await asyncio.sleep(0.2 if job[0] == "slow" else 0.01)
        running[job[0]] -= 1
        done.append(job)

    def start(job: tuple[str, int]) -> None:
        pool.spawn(work(job), key=job[0])

    loop = asyncio.create_task(claim_loop(pool, claim=claim, start=start, stop=stop, tick_s=0.01))
    await asyncio.sleep(0.25)
    fast_done = sum(1 for key, _ in done if key == "fast")
    assert fast_done == 6, "the fast key is not held back behind the slow one"
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert peak["slow"] <= 2 and peak["fast"] <= 2 and peak["all"] <= 4, peak
    assert len(pool) == 0, "stop drains what is in flight"


async def test_an_outage_in_claims_is_backed_off_and_retried() -> None:
    pool = WorkPool("test", limit=2)
    stop = asyncio.Event()
    calls = 0
    given = False
    ran: list[int] = []

    async def claim() -> int | None:
        nonlocal calls, given
        calls += 1
        if calls <= 3:
            raise StoreUnavailable("store down")
        if given:
            return None
        given = True
        return 1

    async def work(n: int) -> None:
        ran.append(n)

    loop = asyncio.create_task(
        claim_loop(pool, claim=claim, start=lambda n: pool.spawn(work(n)), stop=stop, tick_s=0.01)
    )
    for _ in range(200):
        if ran:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert ran == [1] and calls > 3, "claims resumed after the outage"


async def test_a_bug_in_a_task_stops_the_loop_and_is_raised() -> None:
    pool = WorkPool("test", limit=2)
    stop = asyncio.Event()
    claimed = 0

    async def claim() -> int | None:
        nonlocal claimed
        claimed += 1
        return claimed

    async def work(n: int) -> None:
        if n == 3:
            raise ZeroDivisionError("a bug")
        await asyncio.sleep(0.01)

    with pytest.raises(ZeroDivisionError):
        await asyncio.wait_for(
            claim_loop(pool, claim=claim, start=lambda n: pool.spawn(work(n)), stop=stop, tick_s=0.01), 5
        )
    assert claimed < 10, "no claims after the bug: it is not retried forever"


async def test_an_outage_in_a_task_leaves_the_loop_running() -> None:
    pool = WorkPool("test", limit=1)
    stop = asyncio.Event()
    attempts = 0

    async def claim() -> int | None:
        return 1 if attempts < 3 else None

    async def work(n: int) -> None:
        nonlocal attempts
        attempts += 1
        raise StoreUnavailable("store down mid-task")

    loop = asyncio.create_task(
        claim_loop(pool, claim=claim, start=lambda n: pool.spawn(work(n)), stop=stop, tick_s=0.01)
    )
    for _ in range(200):
        if attempts >= 3:
            break
        await asyncio.sleep(0.01)
    assert not loop.done() and pool.failure is None
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert attempts >= 3
