"""A process that starts while its store or broker is unreachable waits it out (bounded), and a
start that fails closes what it opened."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
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


async def _serving(runtime: Runtime) -> tuple[asyncio.Task[None], str, object]:
    """The process's app under uvicorn on a free loopback port, as `corridor run` serves it."""
    import uvicorn
    from helpers import free_port

    from services.app import create_app
    from services.cli import GracefulServer

    port = free_port()
    server = GracefulServer(
        uvicorn.Config(create_app(runtime), host="127.0.0.1", port=port, log_config=None, lifespan="on"),
        on_signal=runtime.request_stop,
    )
    runtime._on_failure = lambda: setattr(server, "should_exit", True)
    task = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(100):
            try:
                await client.get(f"{base}/healthz")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    return task, base, server


async def test_while_the_start_waits_healthz_answers_and_the_api_says_starting(tmp_path: Path) -> None:
    """Before, no route answered until the start was done (up to a minute with a broker still
    electing leaders), so a liveness probe killed the process it was waiting for."""
    runtime = _runtime(tmp_path)
    ready = asyncio.Event()
    real_start = runtime.bus.start

    async def when_ready() -> None:
        if not ready.is_set():
            raise BusUnavailable("NodeNotReadyError: node 3 is not ready")
        await real_start()

    runtime.bus.start = when_ready  # type: ignore[method-assign]
    task, base, server = await _serving(runtime)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            waiting = await client.get("/readyz")
            assert waiting.status_code == 503 and waiting.json()["checks"]["started"] is False
            events = await client.get("/api/v1/events")
            assert events.status_code == 503 and events.headers["retry-after"] == "5"
            assert "starting" in events.json()["detail"]
            assert (await client.get("/openapi.json")).status_code == 200
            ready.set()
            for _ in range(100):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert (await client.get("/readyz")).json()["checks"] == {"started": True, "store": True, "bus": True}
            assert (await client.get("/api/v1/events")).status_code == 200
    finally:
        server.should_exit = True  # type: ignore[attr-defined]
        await asyncio.wait_for(task, 10)
    assert not runtime.failed and not await runtime.store.ping(), "stopped and closed"


async def test_a_start_that_gives_up_ends_the_served_process_as_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_module, "STARTUP_WAIT_S", 0.3)
    runtime = _runtime(tmp_path)

    async def never() -> None:
        raise BusUnavailable("cannot reach Kafka")

    runtime.bus.start = never  # type: ignore[method-assign]
    task, _, _ = await _serving(runtime)
    await asyncio.wait_for(task, 10)  # the server ends by itself
    assert runtime.failed and not runtime.started
    assert not await runtime.store.ping(), "the store opened first was closed again"


async def test_a_start_that_crashes_logs_its_trace(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runtime = _runtime(tmp_path)

    async def bug() -> None:
        raise AssertionError("a bug in the start")

    runtime.bus.start = bug  # type: ignore[method-assign]
    task, _, _ = await _serving(runtime)
    await asyncio.wait_for(task, 10)
    [failed] = [r for r in caplog.records if r.getMessage().startswith("start failed")]
    # The trace rides on the record (exc_info), or as its text once the secret mask, installed by
    # a process's logging setup (an earlier test's, in one pytest run), has rendered it.
    trace = failed.exc_text or (logging.Formatter().formatException(failed.exc_info) if failed.exc_info else "")
    assert runtime.failed and "Traceback" in trace and "AssertionError: a bug in the start" in trace, trace
