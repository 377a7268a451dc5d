"""What a security probe and a first run found (issue 13), one test per finding."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx

from services.app import create_app
from services.ingest.parser import parse_document
from services.runtime import ALL_ROLES, Runtime
from shared.models import web_link
from shared.settings import load_settings

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@asynccontextmanager
async def runtime_client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The app of ``runtime`` in process (started and stopped around the block)."""
    await runtime.start()
    try:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://corridor") as client:
            yield client
    finally:
        await runtime.stop()


RSS_WITH_SCRIPT_LINKS = b"""<?xml version="1.0"?>
<rss version="2.0"><channel><title>t</title><link>https://news.example/</link>
<item><title>Rail link to Gwadar agreed</title><link>javascript:alert(document.cookie)</link>
<guid isPermaLink="false">a1</guid><description>Pakistan and Kazakhstan railway text one</description></item>
<item><title>Wheat shipment leaves Aktau</title><link>data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==</link>
<guid isPermaLink="false">a2</guid><description>Kazakhstan wheat for Karachi text two</description></item>
<item><title>Customs protocol signed</title><link> JaVaScRiPt:alert(1)</link>
<guid isPermaLink="false">a3</guid><description>customs text three</description></item>
<item><title>A real link</title><link>https://news.example/real</link>
<guid isPermaLink="false">a4</guid><description>text four</description></item>
</channel></rss>"""


def test_feed_links_other_than_http_are_dropped() -> None:
    """Item 1: javascript:/data: links never become an item's url (dashboard href, feeds, emails)."""
    items = parse_document(RSS_WITH_SCRIPT_LINKS, kind="feed", source_id="s", source_url="https://n/", fetched_at=NOW)
    assert [i.url for i in items] == [None, None, None, "https://news.example/real"]
    assert all(i.canonical_url in (None, "https://news.example/real") for i in items)
    json_feed = json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": "t",
            "items": [
                {"id": "1", "url": "javascript:alert(1)", "title": "x", "content_text": "y"},
                {"id": "2", "url": "http://ok.example/2", "title": "x2", "content_text": "y2"},
            ],
        }
    ).encode()
    items = parse_document(json_feed, kind="feed", source_id="s", source_url="https://n/", fetched_at=NOW)
    assert [i.url for i in items] == [None, "http://ok.example/2"]
    for bad in ("javascript:x", "data:,x", "vbscript:x", "//evil.example/x", "http:evil", "https://a\x00b", "ftp://x"):
        assert web_link(bad) is None, bad


async def test_feed_out_never_echoes_the_read_key(tmp_path: Path) -> None:
    """Item 7: ``?key=`` is how feed readers authenticate; the RSS self link and Atom id omit it."""
    settings = load_settings(
        sqlite_path=tmp_path / "s.sqlite3", api_key="admin-key", read_api_keys="read-key-123", public_reads=False
    )
    runtime = Runtime(settings, ALL_ROLES)
    async with runtime_client(runtime) as client:
        for path in ("/api/v1/events.rss", "/api/v1/events.atom"):
            answer = await client.get(path, params={"key": "read-key-123", "sector": "energy"})
            assert answer.status_code == 200, answer.text
            assert "read-key-123" not in answer.text and "sector=energy" in answer.text
