"""Defects a security review of 2026-12-04 reproduced: a feed URL's token shown to every reader
and subscriber, placeholder secrets served to a network, a refused feed's credentials logged,
log lines forged by remote text. Each test fails without its fix."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from helpers import runtime_client

from services.ingest.parser import parse_source_document
from services.runtime import ALL_ROLES, Runtime
from shared.errors import ConfigError
from shared.logs import configure_logging
from shared.models import RawItem, SourceKind
from shared.settings import load_settings

KEY = {"Authorization": "Bearer api-test-key"}
TOKEN_URL = "http://127.0.0.1:9/feed.xml?lang=en&apikey=TOPSECRET_KEY_123"
FEED = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<item><guid>1</guid><title>Astana and Islamabad sign a rail MoU</title><link>http://x.example/1</link></item>
</channel></rss>"""


def parsed_items(document: bytes, source_url: str, kind: SourceKind = "feed") -> list[RawItem]:
    """The items of ``document`` fetched from ``source_url``."""
    fetched = datetime(2026, 12, 4, tzinfo=UTC)
    return parse_source_document(
        document,
        kind=kind,
        source_id="src_1",
        source_url=source_url,
        fetched_at=fetched,
    ).items


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(
        sqlite_path=tmp_path / "c.sqlite3", api_key="api-test-key", allow_private_networks=["127.0.0.0/8"]
    )
    async with runtime_client(Runtime(settings, ALL_ROLES)) as c:
        yield c


async def test_read_routes_mask_a_source_urls_query_values(client: httpx.AsyncClient) -> None:
    # Reads are public by default in compose: GET /api/v1/sources showed the feed's access token.
    created = await client.post("/api/v1/sources", headers=KEY, json={"url": TOKEN_URL})
    assert created.status_code == 201 and created.json()["url"] == TOKEN_URL, "the admin's answer is whole"
    source_id = created.json()["id"]
    listed = (await client.get("/api/v1/sources")).json()
    one = (await client.get(f"/api/v1/sources/{source_id}")).json()
    for shown in (listed[0]["url"], one["url"]):
        assert "TOPSECRET" not in shown and shown == "http://127.0.0.1:9/feed.xml?lang=…&apikey=…"
    paused = await client.post(f"/api/v1/sources/{source_id}/pause", headers=KEY)
    assert paused.json()["url"] == TOKEN_URL


def test_items_name_their_source_without_its_query_values() -> None:
    # An item's source_url went into every webhook body, alert email and events answer.
    parsed = parsed_items(FEED, TOKEN_URL)
    [item] = parsed
    assert item.source_url == "http://127.0.0.1:9/feed.xml?lang=…&apikey=…"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "corridor.example"])
def test_placeholder_secrets_are_refused_when_the_api_listens_beyond_loopback(host: str) -> None:
    # The image listens on 0.0.0.0; `docker run` of it in development served "change-me".
    with pytest.raises(ConfigError, match="CORRIDOR_API_KEY must be set to a real secret when CORRIDOR_HTTP_HOST"):
        load_settings(http_host=host)
    with pytest.raises(ConfigError, match="at least 16 characters when CORRIDOR_HTTP_HOST"):
        load_settings(http_host=host, api_key="short", link_secret="also-short")
    assert load_settings(http_host=host, api_key="k" * 16, link_secret="s" * 16).env == "development"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST."])
def test_placeholders_stay_usable_on_loopback_in_development(host: str) -> None:
    assert load_settings(http_host=host).api_key.get_secret_value() == "change-me"


def test_the_image_runs_in_production() -> None:
    dockerfile = (Path(__file__).parents[2] / "deploy" / "Dockerfile").read_text()
    assert "CORRIDOR_ENV=production" in dockerfile


async def test_a_refused_configured_feed_is_logged_without_its_credentials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    feed = "https://alice:Sup3rS3cretPw@127.0.0.1:9/feed?token=tok_ABCDEF123456"
    settings = load_settings(sqlite_path=tmp_path / "c.sqlite3", feeds=[feed], allow_private_networks=["127.0.0.0/8"])
    caplog.set_level(logging.ERROR, logger="services.runtime")
    async with runtime_client(Runtime(settings, ALL_ROLES)):
        pass
    [line] = [r.getMessage() for r in caplog.records if "configured feed" in r.getMessage()]
    assert "Sup3rS3cretPw" not in line and "tok_ABCDEF123456" not in line and "127.0.0.1:9/feed?token=…" in line


def test_remote_text_cannot_forge_a_log_line() -> None:
    # A webhook's answer (its reason phrase and body) ends up in a delivery's failure log line.
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", stream=out)
        answer = "oops\r\n2026-12-04 23:00:00,000 CRITICAL services.runtime: admin key rotated\x1b[2J"
        logging.getLogger("services.alerts.deliverer").info("attempt failed: HTTP 500: %s", answer)
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("t").exception("with a trace")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    lines = out.getvalue().splitlines()
    escaped = "HTTP 500: oops\\r\\n2026-12-04 23:00:00,000 CRITICAL services.runtime: admin key rotated\\x1b[2J"
    assert lines[0].endswith(escaped)
    assert not any(line.startswith("2026-12-04 23:00:00,000") for line in lines)
    assert "Traceback (most recent call last):" in lines, "a trace keeps its lines"


def test_a_link_into_the_fetched_page_does_not_carry_its_query() -> None:
    # "#story-1" resolved against the feed URL: the token masked in source_url reached readers
    # in the item's own link (a review of the fix above).
    page = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<item><guid isPermaLink="false">g1</guid><title>Rail talks</title><link>#story-1</link></item>
<item><guid isPermaLink="false">g2</guid><title>Port deal</title><link>http://x.example/2</link></item>
</channel></rss>"""
    parsed = parsed_items(page, TOKEN_URL)
    assert [(i.title, i.url) for i in parsed] == [("Rail talks", None), ("Port deal", "http://x.example/2")]
    without_query = parsed_items(page, "http://127.0.0.1:9/feed.xml")
    assert without_query[0].url == "http://127.0.0.1:9/feed.xml#story-1", "no query: the anchor stays"


def test_a_bare_token_query_is_masked() -> None:
    from shared.logs import shown_url

    assert shown_url("https://a.example/rss?8f3a9c2e7b1d4f60") == "https://a.example/rss?…"
    assert shown_url("https://a.example/rss?lang=en&8f3a9c2e") == "https://a.example/rss?lang=…&…"
    assert shown_url("https://a.example/rss?dG9rZW4tU0VDUkVULTEyMzQ=") == "https://a.example/rss?…", "base64 padding"
    assert shown_url("https://a.example/rss?c2VjcmV0MTIzNA==") == "https://a.example/rss?…"


def test_a_session_in_the_path_is_masked() -> None:
    # A feed URL can carry its session as a path parameter (Java servlets: ``;jsessionid=``);
    # it reached items' source_url and the public read routes whole.
    from shared.logs import shown_url

    assert shown_url("https://a.example/feed;jsessionid=8F3A9C2E1B7D?x=1") == "https://a.example/feed;jsessionid=…?x=…"
    assert shown_url("https://a.example/a;v=1;k=2/rss.xml") == "https://a.example/a;v=…;k=…/rss.xml"
    assert shown_url("https://a.example/rss;8F3A9C2E1B7D") == "https://a.example/rss;…", "a bare one, whole"
    assert shown_url("https://a.example/news/rss.xml") == "https://a.example/news/rss.xml"
    assert shown_url("https://a.example/feed;c2VjcmV0==") == "https://a.example/feed;…", "base64 padding, as in a query"


def test_a_session_in_the_feeds_path_does_not_reach_its_items_links() -> None:
    # Masked where the URL is shown, the session still rode along in the items' links: a link
    # into the page itself, and links repeating it as their own path parameter (review of
    # 2026-12-05).
    feed = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<item><guid isPermaLink="false">g1</guid><title>Rail talks</title><link>#story-1</link></item>
<item><guid isPermaLink="false">g2</guid><title>Port deal</title>
<link>https://news.example/story/2;jsessionid=8F3A9C2E77B1?id=2</link></item>
<item><guid isPermaLink="false">g3</guid><title>Wheat</title><link>https://news.example/story/3;v=2</link></item>
</channel></rss>"""
    parsed = parsed_items(feed, "https://news.example/feed;jsessionid=8F3A9C2E77B1")
    assert [i.url for i in parsed] == [None, "https://news.example/story/2?id=2", "https://news.example/story/3;v=2"]
    assert all("8F3A9C2E77B1" not in i.source_url for i in parsed)


def test_a_link_repeating_the_feeds_token_loses_it() -> None:
    # A feed at ?token=SECRET whose items link to ?token=SECRET&id=7 passed the token on.
    feed = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<item><guid isPermaLink="false">g1</guid><title>Rail talks</title><link>?token=SECRET123&amp;id=7</link></item>
<item><guid isPermaLink="false">g2</guid><title>Port deal</title><link>http://x.example/2?token=SECRET123</link></item>
</channel></rss>"""
    parsed = parsed_items(feed, "http://127.0.0.1:9/feed.xml?token=SECRET123")
    assert [i.url for i in parsed] == ["http://127.0.0.1:9/feed.xml?id=7", "http://x.example/2"]


@pytest.mark.parametrize(
    ("feed_query", "link", "cleaned"),
    [
        ("token=abc%2Bdef123", "http://x.example/a?id=7&token=abc+def123", "http://x.example/a?id=7"),
        ("token=abc+def123", "http://x.example/a?id=7&token=abc%2Bdef123", "http://x.example/a?id=7"),
        ("dG9rZW4tU0VDUkVU=", "http://x.example/a?id=7&dG9rZW4tU0VDUkVU=", "http://x.example/a?id=7"),
        ("token=SECRET123", "http://x.example/a?id=7#token=SECRET123", "http://x.example/a?id=7"),
        # Words are no tokens: a section or a search stays in the links (and their ids stay).
        ("section=economy", "http://x.example/a?id=5&section=economy", "http://x.example/a?id=5&section=economy"),
        (
            "q=Kazakhstan+Pakistan",
            "http://x.example/a?q=Kazakhstan+Pakistan",
            "http://x.example/a?q=Kazakhstan+Pakistan",
        ),
        (
            "query=Pakistan%20Kazakhstan%20railway%20link",  # GDELT's kind of query: words, however long
            "http://x.example/a?q=Pakistan%20Kazakhstan%20railway%20link",
            "http://x.example/a?q=Pakistan%20Kazakhstan%20railway%20link",
        ),
        (
            "token=abc123XYZ9",  # a token inside a parameter: a share link holding the feed's own URL
            "http://x.example/share?u=https%3A%2F%2Ff.example%2Frss%3Ftoken%3Dabc123XYZ9&n=1",
            "http://x.example/share?n=1",
        ),
    ],
)
def test_a_token_is_known_in_every_form_and_the_entry_keeps_its_id(feed_query: str, link: str, cleaned: str) -> None:
    from services.ingest.entry import Entry
    from services.ingest.normalize import canonical_url
    from services.ingest.parser import to_item
    from shared.models import stable_id

    fetched = datetime(2026, 12, 4, tzinfo=UTC)
    page = f"http://feeds.example/rss?{feed_query}"
    entry = Entry(guid=None, link=link, title="Rail talks", summary="")
    made = to_item(entry, source_id="s1", source_url="x", fetched_at=fetched, page_url=page)
    assert made is not None and made.url == cleaned
    assert made.id == stable_id("itm", "s1", canonical_url(link)), "identity from the link as the feed gave it"


def test_an_unreadable_link_is_dropped_not_the_feed() -> None:
    # Cleaning a link raised ValueError on a broken IPv6 literal, and the whole document of a
    # source whose URL has a query (GDELT's always has) became a parse_error.
    feed = b"""{"version": "https://jsonfeed.org/version/1.1", "title": "t", "items": [
      {"id": "1", "url": "http://[2001:db8::1/x", "title": "Broken link"},
      {"id": "2", "url": "http://x.example/2", "title": "Fine"}]}"""
    parsed = parsed_items(feed, "http://127.0.0.1:9/feed.json?token=abc123XYZ9", kind="feed")
    assert [(i.title, i.url) for i in parsed] == [("Broken link", None), ("Fine", "http://x.example/2")]
