"""The real poll path against a real local HTTP server: conditional GET, server hints, updates,
cross-source duplicates, broken/recovered events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import FeedServer, Route

from services.runtime import Runtime
from shared.bus.memory import MemoryBus
from shared.envelope import TOPIC_OPS, TOPIC_RAW, Envelope
from shared.models import Source, SourceHealthEvent
from shared.settings import load_settings
from shared.timeutil import utcnow


def rss(*items: tuple[str, str, str]) -> bytes:
    body = "".join(
        f"<item><guid>{guid}</guid><title>{title}</title><link>{link}</link><description>{title} text about "
        "Pakistan and Kazakhstan rail transit cooperation, cargo and logistics for the region.</description></item>"
        for guid, title, link in items
    )
    return f"<rss version='2.0'><channel><title>t</title>{body}</channel></rss>".encode()


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as s:
        yield s


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = load_settings(
        sqlite_path=tmp_path / "c.sqlite3",
        allow_private_networks=["127.0.0.0/8"],
        fetch_timeout_s=2.0,
        poll_tick_s=0.05,
        poll_interval_s=60,
        source_broken_after=2,
    )
    rt = Runtime(settings, {"ingest"})
    await rt.start()
    yield rt
    await rt.stop()


def published(rt: Runtime, topic: str) -> list[Envelope]:
    assert isinstance(rt.bus, MemoryBus)
    log = rt.bus._logs.get(rt.settings.topic(topic))
    return [Envelope.decode(data) for _, data in log.messages] if log else []


async def add(rt: Runtime, url: str) -> Source:
    from services.ingest.sources import add_source

    source = await add_source(rt.store, rt.policy, url=url, name=url.rsplit("/", 1)[-1], interval_s=60)
    rt.poller.wake()
    return source


async def polled(rt: Runtime, source_id: str) -> Source:
    """Wait until the source's first poll is recorded."""
    for _ in range(200):
        source = await rt.store.get_source(source_id)
        if source and source.last_fetch_at and source.lease_until is None and source.last_status:
            return source
        await asyncio.sleep(0.05)
    raise AssertionError("source was not polled")


async def repoll(rt: Runtime, source_id: str) -> Source:
    before = (await rt.store.get_source(source_id)).last_fetch_at  # type: ignore[union-attr]
    await rt.store.update_source(source_id, {"next_check_at": utcnow()})
    rt.poller.wake()
    for _ in range(200):
        source = await rt.store.get_source(source_id)
        if source and source.last_fetch_at != before and source.lease_until is None:
            return source
        await asyncio.sleep(0.05)
    raise AssertionError("source was not polled again")


async def test_conditional_get_and_server_hints(runtime: Runtime, server: FeedServer) -> None:
    server.routes["/a.xml"] = Route(
        body=rss(("1", "One", "http://x/1")), etag='"v1"', headers={"Cache-Control": "max-age=7200"}
    )
    source = await polled(runtime, (await add(runtime, server.url("/a.xml"))).id)
    assert source.last_status == "ok" and source.etag == '"v1"'
    assert source.next_check_at - source.last_fetch_at >= timedelta(seconds=7200 * 0.9), "max-age beats the interval"
    source = await repoll(runtime, source.id)
    route = server.routes["/a.xml"]
    assert route.requests[-1].get("if-none-match") == '"v1"'
    assert source.last_status == "not_modified" and route.hits == 2


async def test_retry_after_is_honoured_and_broken_then_recovered(runtime: Runtime, server: FeedServer) -> None:
    server.routes["/b.xml"] = Route(status=429, headers={"Retry-After": "3000"})
    source = await polled(runtime, (await add(runtime, server.url("/b.xml"))).id)
    assert source.last_error_kind == "http_status" and source.consecutive_errors == 1
    assert source.next_check_at - source.last_fetch_at >= timedelta(seconds=3000 * 0.9)
    source = await repoll(runtime, source.id)
    assert source.consecutive_errors == 2 and source.broken and source.active
    events = published(runtime, TOPIC_OPS)
    assert [e.type for e in events] == ["source.broken"]
    assert events[0].payload_as(SourceHealthEvent).consecutive_errors == 2
    server.routes["/b.xml"] = Route(body=rss(("1", "Back", "http://x/back")))
    source = await repoll(runtime, source.id)
    assert source.last_status == "ok" and not source.broken and source.consecutive_errors == 0
    assert [e.type for e in published(runtime, TOPIC_OPS)] == ["source.broken", "source.recovered"]


async def test_updates_and_cross_source_duplicates(runtime: Runtime, server: FeedServer) -> None:
    server.routes["/c.xml"] = Route(
        body=rss(("c1", "Rail deal signed between the two capitals today", "http://news.example/1?utm_source=rss"))
    )
    first = await polled(runtime, (await add(runtime, server.url("/c.xml"))).id)
    # Another source runs the same story: same canonical URL (tracking stripped), other guid.
    server.routes["/d.xml"] = Route(
        body=rss(("d1", "Rail deal signed between the two capitals today", "http://news.example/1"))
    )
    await polled(runtime, (await add(runtime, server.url("/d.xml"))).id)
    raw = published(runtime, TOPIC_RAW)
    assert [e.type for e in raw] == ["item.raw"], "the copy is linked, not published"
    original = raw[0].payload["id"]
    [dup] = await runtime.store.list_duplicates(original)
    assert dup.reason == "canonical_url" and dup.source_id != first.id
    # The first source edits its entry: republished as an update of the same item.
    server.routes["/c.xml"] = Route(
        body=rss(("c1", "Rail deal signed between the two capitals, officials say", "http://news.example/1"))
    )
    await repoll(runtime, first.id)
    raw = published(runtime, TOPIC_RAW)
    assert [e.type for e in raw] == ["item.raw", "item.updated"]
    assert raw[1].payload["id"] == original and raw[1].payload["revision"] == 1
    # Seen again unchanged: nothing new.
    await repoll(runtime, first.id)
    assert len(published(runtime, TOPIC_RAW)) == 2


async def test_a_deferred_entry_is_read_again_not_lost_to_a_304(runtime: Runtime, server: FeedServer) -> None:
    from services.ingest.dedupe import _url_key

    # Another source claimed this story just now and has not published it (its poll may still
    # be publishing): this source's entry waits. Were the feed's ETag stored, every later poll
    # would get a 304 and the entry would never be parsed again.
    await runtime.store.claim_keys({_url_key("http://news.example/9"): "itm_elsewhere"}, utcnow())
    server.routes["/e.xml"] = Route(
        body=rss(("e1", "Rail freight link to Gwadar opens for cargo", "http://news.example/9")), etag='"v1"'
    )
    source = await polled(runtime, (await add(runtime, server.url("/e.xml"))).id)
    assert source.last_status == "ok" and source.etag is None and source.items_seen == 0
    soon = timedelta(seconds=runtime.settings.poll_lease_s + 5)
    assert source.next_check_at - source.last_fetch_at <= soon, "back as soon as the claim can be taken over"
    assert published(runtime, TOPIC_RAW) == []
    await repoll(runtime, source.id)
    assert "if-none-match" not in server.routes["/e.xml"].requests[-1]


async def test_the_queue_gauge_is_the_number_of_sources_waiting(
    tmp_path: Path, server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """corridor_ingest_poll_queue is the polling queue's depth: due sources no replica has leased
    (it was the number a round gave back for a busy host; the audit of 2026-12-05)."""
    from services.ingest import poller as poller_module

    settings = load_settings(
        sqlite_path=tmp_path / "q.sqlite3",
        allow_private_networks=["127.0.0.0/8"],
        poll_tick_s=0.05,
        poll_interval_s=60,
        poll_concurrency=1,  # one poll at a time: the others wait in the queue
    )
    rt = Runtime(settings, {"ingest"})
    monkeypatch.setattr(poller_module, "QUEUE_COUNT_EVERY_S", 0.0)
    await rt.start()
    try:
        for n in range(4):
            server.routes[f"/slow{n}.xml"] = Route(body=rss((str(n), f"Story {n}", f"http://x/{n}")), delay_s=3)
            await add(rt, server.url(f"/slow{n}.xml"))
        gauge = rt.metrics.poll_queue
        for _ in range(100):
            if gauge._value.get() == 3:  # one is being polled, three wait
                break
            await asyncio.sleep(0.05)
        assert gauge._value.get() == 3
        assert "corridor_ingest_poll_queue 3.0" in rt.metrics.render().decode()
    finally:
        await rt.stop()


async def test_an_aggregators_listing_of_a_papers_story_is_its_copy(runtime: Runtime, server: FeedServer) -> None:
    """Google News titles a story "… - Dawn" and links its own redirect: neither the title nor
    the link matched the paper's entry, and the story was published twice (audit of 2026-12-05)."""
    title = "Pakistan, Kazakhstan sign rail transit agreement"
    server.routes["/dawn.xml"] = Route(body=rss(("d1", title, "http://dawn.example/news/1")))
    await polled(runtime, (await add(runtime, server.url("/dawn.xml"))).id)
    listing = (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Google News</title><item>'
        f"<title>{title} - Dawn</title><link>http://news.google.example/rss/articles/CBMi1</link>"
        '<guid>CBMi1</guid><source url="http://dawn.example">Dawn</source></item></channel></rss>'
    )
    server.routes["/gn.xml"] = Route(body=listing.encode())
    await polled(runtime, (await add(runtime, server.url("/gn.xml"))).id)
    raw = published(runtime, TOPIC_RAW)
    assert [e.payload["title"] for e in raw] == [title], "one story, published once"
    [copy] = await runtime.store.list_duplicates(raw[0].payload["id"])
    assert copy.reason != "canonical_url", copy
