"""Ingest defects found in review, one test (or a few) each: validators that cannot be sent back,
malformed documents, unbounded fields and entry counts, lost health events, far-future dates,
stale validators after a selector change, relative links, null in a PATCH, selectors that BSON
cannot encode, tokens in logs. Fakes at the boundaries: httpx.MockTransport, the in-process bus,
a SQLite store in a temporary directory."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bson
import httpx
import pytest
from fastapi import FastAPI

from services.ingest import poller as poller_module
from services.ingest.entry import MAX_ENTRIES, Entry
from services.ingest.fetcher import fetch_source
from services.ingest.htmllist import parse_date, parse_html_entries
from services.ingest.parser import (
    MAX_AUTHOR_CHARS,
    MAX_URL_CHARS,
    parse_document,
    parse_source_document,
    to_item,
)
from services.ingest.poller import Poller
from services.ingest.routes import SourcePatch, build_router
from services.ingest.sources import update_source
from shared.bus.memory import MemoryBus
from shared.envelope import MAX_MESSAGE_BYTES, TOPIC_DEADLETTER, TOPIC_OPS, TOPIC_RAW, DeadLetter, Envelope
from shared.errors import BusUnavailable, FetchError
from shared.logs import shown_url
from shared.metrics import Metrics
from shared.models import HtmlSelectors, Source, stable_id
from shared.netguard import AddressPolicy
from shared.settings import Settings, load_settings
from shared.store.sqlite import SQLiteStore

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
Handler = Callable[[httpx.Request], httpx.Response]


def rss(*items: str, extra: str = "") -> bytes:
    return f"<rss version='2.0'><channel><title>t</title>{extra}{''.join(items)}</channel></rss>".encode()


def rss_item(guid: str, title: str, link: str = "", description: str = "", pub: str = "") -> str:
    return (
        f"<item><guid isPermaLink='false'>{guid}</guid><title>{title}</title>"
        + (f"<link>{link}</link>" if link else "")
        + (f"<description>{description}</description>" if description else "")
        + (f"<pubDate>{pub}</pubDate>" if pub else "")
        + "</item>"
    )


GOOD_FEED = rss(rss_item("g1", "Rail transit talks in Astana", "https://news.example/1"))


def json_feed(**doc: Any) -> bytes:
    return json.dumps({"version": "https://jsonfeed.org/version/1.1", "title": "t", **doc}).encode()


def parse_feed(data: bytes, source_url: str = "https://n.example/feed") -> list[Any]:
    return parse_document(data, kind="feed", source_id="s", source_url=source_url, fetched_at=NOW)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "c.sqlite3")
    await s.start()
    yield s
    await s.close()


class FlakyOpsBus(MemoryBus):
    """The in-process bus whose next ``fail_ops`` publishes to the ops topic fail (broker down)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_ops = 0

    async def publish(self, topic: str, key: str, envelope: Envelope) -> None:
        if topic.endswith(TOPIC_OPS) and self.fail_ops:
            self.fail_ops -= 1
            raise BusUnavailable("broker down (test)")
        await super().publish(topic, key, envelope)


def published(bus: MemoryBus, settings: Settings, topic: str) -> list[Envelope]:
    log = bus._logs.get(settings.topic(topic))
    return [Envelope.decode(data) for _, data in log.messages] if log else []


class Rig:
    """A Poller over a SQLite store, the in-process bus and a MockTransport serving ``routes``."""

    def __init__(self, store: SQLiteStore, tmp_path: Path, **overrides: object) -> None:
        self.store = store
        self.routes: dict[str, Handler] = {}
        self.requests: list[httpx.Request] = []
        self.settings = load_settings(sqlite_path=tmp_path / "unused.sqlite3", **overrides)
        self.bus = FlakyOpsBus()
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self._answer))
        self.poller = Poller(store=store, bus=self.bus, client=self.client, settings=self.settings, metrics=Metrics())

    def _answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.routes[str(request.url)](request)

    def serve(self, url: str, body: bytes, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.routes[url] = lambda _: httpx.Response(status, content=body, headers=headers or [])

    async def add(self, url: str, **fields: Any) -> Source:
        source = Source(id=stable_id("src", url), url=url, interval_s=900, **fields)
        await self.store.insert_source(source)
        return source

    async def poll(self, source_id: str) -> Source:
        source = await self.store.get_source(source_id)
        assert source is not None
        await self.poller.poll_one(source)
        after = await self.store.get_source(source_id)
        assert after is not None
        return after

    def raw(self) -> list[Envelope]:
        return published(self.bus, self.settings, TOPIC_RAW)


@pytest.fixture
async def rig(store: SQLiteStore, tmp_path: Path) -> AsyncIterator[Rig]:
    r = Rig(store, tmp_path, source_broken_after=1)
    yield r
    await r.client.aclose()


# 1. Validators that cannot be sent back ---------------------------------------------------------


async def test_non_ascii_validators_are_not_stored_and_a_stored_one_is_not_sent(rig: Rig) -> None:
    url = "https://feeds.example/a.xml"
    rig.serve(url, GOOD_FEED, headers=[(b"ETag", '"é-1"'.encode()), (b"Last-Modified", "Mär 2026".encode("latin-1"))])
    source = await rig.add(url)
    result = await fetch_source(rig.client, source, max_bytes=10**6, now=NOW)
    assert result.body and result.etag is None and result.last_modified is None, "only printable ASCII is kept"
    rig.serve(url, GOOD_FEED, headers=[(b"ETag", b'"v1"')])
    assert (await fetch_source(rig.client, source, max_bytes=10**6, now=NOW)).etag == '"v1"'

    # A validator stored before this check: the poll goes on without it instead of failing for good.
    await rig.store.update_source(source.id, {"etag": '"é-1"', "last_modified": "Mär 2026"})
    polled = await rig.poll(source.id)
    assert polled.last_status == "ok" and polled.etag == '"v1"'
    sent = rig.requests[-1].headers
    assert "if-none-match" not in sent and "if-modified-since" not in sent


# 2. Malformed documents --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "data", "selectors"),
    [
        ("feed", json_feed(items=5), None),
        ("feed", json_feed(items=True), None),
        ("gdelt", b'{"articles": 5}', None),
        ("gdelt", b'{"articles": {"url": "https://a.example/x"}}', None),
        ("html", b"<article><a href='/x'>x</a></article>", HtmlSelectors(item="article", link="a[")),
        ("html", b"<article><a href='/x'>x</a></article>", HtmlSelectors(item="article[")),
        ("html", b"<article><a href='/x'>x</a></article>", HtmlSelectors(item="article", title="::")),
    ],
    ids=[
        "jsonfeed-items-int",
        "jsonfeed-items-true",
        "gdelt-int",
        "gdelt-object",
        "html-link",
        "html-item",
        "html-title",
    ],
)
def test_malformed_documents_are_parse_errors(kind: Any, data: bytes, selectors: HtmlSelectors | None) -> None:
    with pytest.raises(FetchError) as info:
        parse_document(
            data, kind=kind, source_id="s", source_url="https://n.example/", fetched_at=NOW, selectors=selectors
        )
    assert info.value.kind == "parse_error" and str(info.value)


def test_malformed_fields_are_ignored_not_fatal() -> None:
    items = parse_feed(
        json_feed(
            items=[
                {"id": "1", "title": "authors as an object", "authors": {"name": "A"}},
                {"id": "2", "title": "year 1 in UTC+1", "date_published": "0001-01-01T00:00:00+01:00"},
                {"id": "3", "title": "year 9999 in UTC-1", "date_published": "9999-12-31T23:59:59-01:00"},
                {"id": {"nested": True}, "title": "an id that is no identifier", "url": "https://n.example/4"},
                {"id": "5", "title": "author list", "authors": [{"name": "B"}]},
            ]
        )
    )
    assert [i.title for i in items] == [
        "authors as an object",
        "year 1 in UTC+1",
        "year 9999 in UTC-1",
        "an id that is no identifier",
        "author list",
    ]
    assert [i.author for i in items] == [None, None, None, None, "B"]
    assert all(i.published_at is None for i in items)
    page = (
        b'<article><a href="http://[::1/x">Unclosed IPv6 link</a>'
        b'<time datetime="0001-01-01T00:00:00+05:00">x</time></article>'
    )
    [entry] = parse_html_entries(
        page, base_url="https://n.example/", selectors=HtmlSelectors(item="article", date="time")
    )
    assert entry.link is None and entry.published_at is None and entry.title == "Unclosed IPv6 link"
    assert parse_date("9999-12-31T23:59:59-01:00") is None


async def test_a_parser_crash_is_recorded_on_its_source_and_the_other_sources_are_polled(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = poller_module.parse_source_document

    def crashing(data: bytes, **kw: Any) -> Any:
        if kw["source_url"].endswith("/bad.xml"):
            return {}["a parser bug"]
        return real(data, **kw)

    monkeypatch.setattr(poller_module, "parse_source_document", crashing)
    rig.serve("https://feeds.example/bad.xml", GOOD_FEED)
    rig.serve("https://feeds.example/items-not-a-list.json", json_feed(items=5))
    rig.serve("https://feeds.example/good.xml", GOOD_FEED)
    bad = await rig.add("https://feeds.example/bad.xml")
    shape = await rig.add("https://feeds.example/items-not-a-list.json")
    good = await rig.add("https://feeds.example/good.xml")
    bad_after = await rig.poll(bad.id)  # raised KeyError out of poll_one before
    assert bad_after.last_status == "error" and bad_after.last_error_kind == "parse_error"
    assert "KeyError" in (bad_after.last_error or "") and "parsing https://feeds.example/bad.xml" in caplog.text
    assert (await rig.poll(shape.id)).last_error_kind == "parse_error"
    assert (await rig.poll(good.id)).last_status == "ok"
    assert [e.type for e in rig.raw()] == ["item.raw"]


# 3. Unbounded fields -----------------------------------------------------------------------------


def test_link_author_and_guid_are_bounded() -> None:
    huge = "https://n.example/" + "a" * 1_200_000
    entry = Entry(guid="g" * 1_200_000, link=huge, title="Long fields", summary="", author="Name " * 2000)
    item = to_item(entry, source_id="s", source_url="https://n.example/feed", fetched_at=NOW)
    assert item is not None and item.url is None and item.canonical_url is None
    assert item.author is not None and len(item.author) == MAX_AUTHOR_CHARS
    other = to_item(
        Entry(guid="g" * 1_200_000 + "h", link=None, title="Long fields", summary=""),
        source_id="s",
        source_url="u",
        fetched_at=NOW,
    )
    assert other is not None and other.id != item.id, "a long guid keeps its whole identity"
    ok = to_item(
        Entry(guid=None, link="https://n.example/" + "b" * 100, title="t", summary=""),
        source_id="s",
        source_url="u",
        fetched_at=NOW,
    )
    assert ok is not None and ok.url is not None and len(ok.url) <= MAX_URL_CHARS
    # The 1.2 MB <link> of the review: the item now fits a bus message.
    [parsed] = parse_feed(rss(rss_item("g", "Huge link", huge)))
    assert parsed.url is None and len(Envelope.wrap("item.raw", parsed).encode()) < MAX_MESSAGE_BYTES // 10


async def test_an_item_too_large_for_a_message_is_dead_lettered_not_fatal(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poller_module, "MAX_MESSAGE_BYTES", 4_000)  # instead of building a 900 kB item
    body = rss(
        rss_item("small", "A small item", "https://n.example/1"),
        rss_item("large", "A large item", "https://n.example/2", description="word " * 2000),
    )
    rig.serve("https://feeds.example/big.xml", body)
    source = await rig.add("https://feeds.example/big.xml")
    after = await rig.poll(source.id)
    assert after.last_status == "ok"
    assert [e.payload["title"] for e in rig.raw()] == ["A small item"]
    [dead] = published(rig.bus, rig.settings, TOPIC_DEADLETTER)
    letter = dead.payload_as(DeadLetter)
    assert letter.topic == rig.settings.topic(TOPIC_RAW) and "message limit" in letter.reason
    await rig.poll(source.id)
    assert len(published(rig.bus, rig.settings, TOPIC_DEADLETTER)) == 1, "marked seen: not dead-lettered every poll"


# 4. Entries per document, parsing off the event loop ---------------------------------------------


def test_entries_per_document_are_capped_to_the_newest() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # Oldest first, as an appending feed lists them: the cap keeps the last (newest) ones.
    body = rss(
        *(
            rss_item(f"g{n}", f"Entry {n}", pub=(start + timedelta(hours=n)).strftime("%a, %d %b %Y %H:%M:%S GMT"))
            for n in range(MAX_ENTRIES + 100)
        )
    )
    items = parse_feed(body)
    assert len(items) == MAX_ENTRIES
    assert {i.title for i in items} == {f"Entry {n}" for n in range(100, MAX_ENTRIES + 100)}
    undated = parse_source_document(
        rss(*(rss_item(f"u{n}", f"Undated {n}") for n in range(MAX_ENTRIES + 5))),
        kind="feed",
        source_id="s",
        source_url="https://n.example/feed",
        fetched_at=NOW,
    ).items
    assert [i.title for i in undated] == [f"Undated {n}" for n in range(MAX_ENTRIES)], "undated: the first, in order"


async def test_parsing_runs_off_the_event_loop_thread(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    real = poller_module.parse_source_document

    def recording(data: bytes, **kw: Any) -> Any:
        threads.append(threading.get_ident())
        return real(data, **kw)

    monkeypatch.setattr(poller_module, "parse_source_document", recording)
    rig.serve("https://feeds.example/a.xml", GOOD_FEED)
    await rig.poll((await rig.add("https://feeds.example/a.xml")).id)
    assert threads and threading.get_ident() not in threads


# 5. Health events are published before the state that says they were sent -----------------------


async def test_a_health_event_whose_publish_failed_is_sent_on_the_next_poll(rig: Rig) -> None:
    url = "https://feeds.example/flaky.xml"
    rig.serve(url, b"", status=500)
    source = await rig.add(url)
    rig.bus.fail_ops = 1
    with pytest.raises(BusUnavailable):
        await rig.poll(source.id)
    stored = await rig.store.get_source(source.id)
    assert stored is not None and not stored.broken, "not stored as broken: the event was not sent"
    assert (await rig.poll(source.id)).broken
    assert [e.type for e in published(rig.bus, rig.settings, TOPIC_OPS)] == ["source.broken"]

    rig.serve(url, GOOD_FEED)
    rig.bus.fail_ops = 1
    with pytest.raises(BusUnavailable):
        await rig.poll(source.id)
    stored = await rig.store.get_source(source.id)
    assert stored is not None and stored.broken, "still broken: the recovery was not announced"
    assert not (await rig.poll(source.id)).broken
    assert [e.type for e in published(rig.bus, rig.settings, TOPIC_OPS)] == ["source.broken", "source.recovered"]


# 6. Far-future publication dates ------------------------------------------------------------------


def test_a_publication_time_far_after_the_fetch_is_not_believed() -> None:
    def published_at(when: datetime) -> datetime | None:
        item = to_item(
            Entry(guid="g", link=None, title="t", summary="", published_at=when),
            source_id="s",
            source_url="u",
            fetched_at=NOW,
        )
        assert item is not None
        return item.published_at

    assert published_at(datetime(2099, 1, 1, tzinfo=UTC)) is None
    assert published_at(NOW + timedelta(days=2)) is None
    assert published_at(NOW + timedelta(hours=12)) == NOW + timedelta(hours=12), "clock skew is tolerated"
    assert published_at(NOW - timedelta(days=400)) == NOW - timedelta(days=400)


# 7. A selector change forgets the validators -------------------------------------------------------


async def test_changing_selectors_clears_etag_and_last_modified(store: SQLiteStore) -> None:
    selectors = HtmlSelectors(item="article")
    source = Source(id="src_h", url="https://mofa.example/press", kind="html", selectors=selectors, interval_s=900)
    await store.insert_source(source)
    validators = {"etag": '"v1"', "last_modified": "Sun, 01 Mar 2026 12:00:00 GMT"}
    await store.update_source(source.id, validators)

    renamed = await update_source(store, source.id, {"name": "MoFA"})
    assert renamed is not None and renamed.etag == '"v1"', "other changes keep them"
    same = await update_source(store, source.id, SourcePatch(selectors=selectors).changes())
    assert same is not None and same.etag == '"v1"' and same.last_modified, "the same selectors keep them"
    changed = await update_source(
        store, source.id, SourcePatch.model_validate({"selectors": {"item": "li.news"}}).changes()
    )
    assert changed is not None and changed.etag is None and changed.last_modified is None
    assert changed.selectors == HtmlSelectors(item="li.news")


# 8. Relative feed links -----------------------------------------------------------------------------


def test_relative_feed_links_resolve_against_the_feed_url() -> None:
    [item] = parse_feed(rss(rss_item("g", "Relative", "/news/2024/1")), source_url="https://n.example/feeds/all.xml")
    assert item.url == "https://n.example/news/2024/1" and item.canonical_url == "https://n.example/news/2024/1"
    [atom] = parse_feed(
        b"<feed xmlns='http://www.w3.org/2005/Atom'><title>t</title><entry><id>x</id><title>A</title>"
        b"<link href='2024/2'/></entry></feed>",
        source_url="https://n.example/news/feed",
    )
    assert atom.url == "https://n.example/news/2024/2"


# 9 and 10. PATCH: null refused, selectors stored as plain values ---------------------------------------


@pytest.fixture
async def api(store: SQLiteStore) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(
        build_router(
            store=store,
            policy=AddressPolicy(),
            default_interval_s=900,
            on_added=lambda: None,
            require_key=lambda: None,
            require_read=lambda: None,
        )
    )
    await store.insert_source(
        Source(id="src_p", url="https://mofa.example/p", kind="html", selectors=HtmlSelectors(item="a"), interval_s=900)
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://corridor") as client:
        yield client


@pytest.mark.parametrize("field", ["interval_s", "active", "official", "aggregator"])
async def test_patch_refuses_null_for_fields_a_source_always_has(
    api: httpx.AsyncClient, store: SQLiteStore, field: str
) -> None:
    response = await api.patch("/api/v1/sources/src_p", json={field: None})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", field]
    assert (await store.get_source("src_p")) is not None, "the stored source still reads back"
    assert (await api.get("/api/v1/sources")).status_code == 200


async def test_patch_null_still_clears_optional_fields_and_values_still_apply(api: httpx.AsyncClient) -> None:
    response = await api.patch("/api/v1/sources/src_p", json={"name": None, "interval_s": 120, "official": True})
    assert response.status_code == 200, response.text
    assert response.json()["name"] is None and response.json()["interval_s"] == 120 and response.json()["official"]
    assert response.json()["aggregator"] is False
    marked = await api.patch("/api/v1/sources/src_p", json={"aggregator": True})
    assert marked.status_code == 200 and marked.json()["aggregator"] is True, marked.text
    schema = SourcePatch.model_json_schema()["properties"]
    assert schema["interval_s"]["type"] == "number" and "anyOf" not in schema["interval_s"], "documented non-null"


async def test_patched_selectors_are_plain_values_both_adapters_can_store(
    api: httpx.AsyncClient, store: SQLiteStore
) -> None:
    changes = SourcePatch.model_validate({"selectors": {"item": "li", "date": "time"}}).changes()
    # What the MongoDB adapter sends: {"$set": changes}. A pydantic model in it cannot be encoded.
    bson.encode({"$set": changes})
    assert changes["selectors"] == {"item": "li", "link": None, "title": None, "date": "time", "summary": None}
    response = await api.patch("/api/v1/sources/src_p", json={"selectors": {"item": "li", "date": "time"}})
    assert response.status_code == 200, response.text
    stored = await store.get_source("src_p")
    assert stored is not None and stored.selectors == HtmlSelectors(item="li", date="time")


# 11. No query-string tokens in the logs ----------------------------------------------------------------


async def test_source_urls_are_logged_without_query_values(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="services.ingest.poller")
    ok = "https://feeds.example/a.xml?token=SECRET1&lang=en"
    failing = "https://feeds.example/b.xml?api_key=SECRET2"
    rig.serve(ok, GOOD_FEED)
    rig.serve(failing, b"", status=500)
    await rig.poll((await rig.add(ok)).id)
    await rig.poll((await rig.add(failing)).id)  # fails, is broken at once: three log lines
    assert "polled https://feeds.example/a.xml?token=…&lang=…: ok" in caplog.text
    assert "source.broken: https://feeds.example/b.xml?api_key=…" in caplog.text
    assert "SECRET" not in caplog.text
    assert "polling https://feeds.example/b.xml?api_key=… failed (http_status" in caplog.text
    assert shown_url("https://user:SECRET@a.example/p?x=1#frag") == "https://a.example/p?x=…"
