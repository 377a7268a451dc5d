"""A process that starts while its store or broker is unreachable waits it out (bounded), and a
start that fails closes what it opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from services import runtime as runtime_module
from services.runtime import Runtime
from shared.errors import BusUnavailable
from shared.outage import Backoff
from shared.settings import load_settings


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_module, "Backoff", lambda: Backoff(first_s=0.01, max_s=0.05))


def _runtime(tmp_path: Path) -> Runtime:
    return Runtime(load_settings(sqlite_path=tmp_path / "c.sqlite3"), {"classifier"})


async def test_start_waits_out_a_bus_that_is_not_ready_yet(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runtime = _runtime(tmp_path)
    real_start = runtime.bus.start
    calls = 0

    async def not_ready_twice() -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise BusUnavailable("NodeNotReadyError: node 3 is not ready")
        await real_start()

    runtime.bus.start = not_ready_twice  # type: ignore[method-assign]
    await runtime.start()
    try:
        assert calls == 3
        assert await runtime.store.ping()
        outage_lines = [r.getMessage() for r in caplog.records if r.name == "corridor.outage"]
        assert len(outage_lines) == 2, outage_lines  # one when it began, one when it ended
    finally:
        await runtime.stop()


async def test_start_gives_up_after_the_wait_and_closes_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_module, "STARTUP_WAIT_S", 0.2)
    runtime = _runtime(tmp_path)
    calls = 0

    async def never() -> None:
        nonlocal calls
        calls += 1
        raise BusUnavailable("cannot reach Kafka")

    runtime.bus.start = never  # type: ignore[method-assign]
    with pytest.raises(BusUnavailable):
        await runtime.start()
    assert calls >= 3, "retried with back-off before giving up"
    assert not await runtime.store.ping(), "the store opened first was closed again"
