"""Bad feeds: a URL that times out, answers 500, streams 50 MB or serves garbage records a
classified error on its source, and the poller keeps polling the good source beside them."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from helpers import SHARED_DATA, FeedServer, Route

from services.runtime import Runtime
from shared.bus.memory import MemoryBus
from shared.envelope import TOPIC_RAW, Envelope
from shared.settings import load_settings

GOOD_FEED = SHARED_DATA / "feeds/miniflux/internal/reader/parser/testdata/urdu_UTF8.xml"


@pytest.fixture
def feeds() -> Iterator[FeedServer]:
    with FeedServer() as server:
        server.routes["/good.xml"] = Route(body=GOOD_FEED.read_bytes())
        server.routes["/slow.xml"] = Route(body=GOOD_FEED.read_bytes(), delay_s=4)
        server.routes["/500.xml"] = Route(status=500, body=b"internal error")
        server.routes["/huge.xml"] = Route(stream_bytes=50 * 1024 * 1024)
        server.routes["/garbage.xml"] = Route(body=os.urandom(4096), content_type="application/octet-stream")
        server.routes["/html.xml"] = Route(
            body=b"<html><body><p>Not a feed</p></body></html>", content_type="text/html"
        )
        yield server


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = load_settings(
        sqlite_path=tmp_path / "c.sqlite3",
        allow_private_networks=["127.0.0.0/8"],
        fetch_timeout_s=1.0,
        fetch_max_bytes=10 * 1024 * 1024,
        poll_tick_s=0.1,
        poll_interval_s=60,
    )
    rt = Runtime(settings, {"ingest"})
    await rt.start()
    yield rt
    await rt.stop()


async def test_failures_are_recorded_and_polling_goes_on(runtime: Runtime, feeds: FeedServer) -> None:
    from services.ingest.sources import add_source

    names = ["slow", "500", "huge", "garbage", "html", "good"]
    ids = {}
    for name in names:
        source = await add_source(
            runtime.store, runtime.policy, url=feeds.url(f"/{name}.xml"), name=name, interval_s=60
        )
        ids[name] = source.id
    runtime.wake_poller()

    async def settled() -> bool:
        sources = {s.name: s for s in await runtime.store.list_sources()}
        return all(sources[n].last_status is not None for n in names)

    for _ in range(200):
        if await settled():
            break
        await asyncio.sleep(0.1)
    sources = {s.name: s for s in await runtime.store.list_sources()}
    expected_kinds = {
        "slow": "timeout",
        "500": "http_status",
        "huge": "too_large",
        "garbage": "not_a_feed",
        "html": "not_a_feed",
    }
    for name, kind in expected_kinds.items():
        s = sources[name]
        assert s.last_status == "error", name
        assert s.last_error_kind == kind, (name, s.last_error)
        assert s.consecutive_errors == 1 and s.last_error
        assert s.next_check_at > s.last_fetch_at  # type: ignore[operator]  # backed off, still scheduled
        assert s.active, "a failing source is never dropped"
    assert sources["500"].last_error == "HTTP 500"
    assert sources["good"].last_status == "ok" and sources["good"].items_seen == 26

    assert isinstance(runtime.bus, MemoryBus)
    raw_topic = runtime.settings.topic(TOPIC_RAW)
    published = [Envelope.decode(data) for _, data in runtime.bus._logs[raw_topic].messages]
    assert len(published) == 26 and {e.type for e in published} == {"item.raw"}

    # The poller is still alive: a source added now is polled at once.
    feeds.routes["/later.xml"] = Route(body=GOOD_FEED.read_bytes())
    later = await add_source(runtime.store, runtime.policy, url=feeds.url("/later.xml"), name="later", interval_s=60)
    runtime.wake_poller()
    for _ in range(100):
        got = await runtime.store.get_source(later.id)
        if got and got.last_status == "ok":
            break
        await asyncio.sleep(0.1)
    assert got is not None and got.last_status == "ok"
    assert feeds.routes["/huge.xml"].hits == 1
