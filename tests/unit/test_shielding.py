"""A caller's cancellation never reaches the MongoDB driver (shared/store/shielding.py)."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from shared.errors import StoreUnavailable
from shared.store.mongo import MongoStore
from shared.store.shielding import ShieldedCalls, shield_calls


@shield_calls(lambda adapter: adapter.calls)
class Adapter:
    def __init__(self) -> None:
        self.calls = ShieldedCalls()
        self.release = asyncio.Event()
        self.cancelled = False
        self.finished = False

    async def slow(self) -> str:
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.finished = True
        return "done"

    async def failing(self) -> None:
        await self.release.wait()
        raise ValueError("the driver failed after its caller left")

    async def close(self) -> None:
        await self.release.wait()


async def test_a_cancelled_caller_leaves_at_once_and_the_call_runs_to_its_end() -> None:
    adapter = Adapter()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await adapter.slow()
    assert adapter.calls.running == 1 and not adapter.cancelled
    adapter.release.set()
    assert await adapter.calls.drain(1.0) == 0
    assert adapter.finished and not adapter.cancelled and adapter.calls.running == 0
    assert await adapter.slow() == "done", "a caller that stays gets the answer"


async def test_the_error_of_a_call_whose_caller_left_is_collected_not_logged() -> None:
    unretrieved: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unretrieved.append(context))
    adapter = Adapter()
    caller = asyncio.ensure_future(adapter.failing())
    await asyncio.sleep(0.01)
    caller.cancel()
    adapter.release.set()
    assert await adapter.calls.drain(1.0) == 0
    del caller
    gc.collect()
    assert unretrieved == []


async def test_drain_is_bounded_and_close_is_not_shielded() -> None:
    adapter = Adapter()
    caller = asyncio.ensure_future(adapter.slow())
    await asyncio.sleep(0.01)
    caller.cancel()
    assert await adapter.calls.drain(0.05) == 1, "still running after the bound: counted, not awaited"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await adapter.close()
    assert adapter.calls.running == 1, "close ran in the caller's task, cancelled with it"
    adapter.release.set()
    assert await adapter.calls.drain(1.0) == 0


async def test_the_mongo_store_keeps_cancellations_away_from_pymongo() -> None:
    # Nothing listens on 127.0.0.1:9: the driver waits in server selection, inside its locks,
    # which is where a cancellation once left a client's topology lock held for good.
    store = MongoStore("mongodb://127.0.0.1:9/", "corridor_test", server_selection_timeout_ms=400)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await store.get_source("src_x")
        assert store._calls.running == 1, "the driver call runs on after its caller timed out"
        assert await store._calls.drain(5.0) == 0, "and ends by the client's own timeout"
        with pytest.raises(StoreUnavailable):
            await store.get_source("src_x")
        assert await store.ping() is False
    finally:
        await store.close()
