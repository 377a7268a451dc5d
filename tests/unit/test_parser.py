"""The parser is a pure function of bytes: real feeds give items, garbage gives `not_a_feed`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from helpers import SHARED_DATA

from services.ingest.parser import html_to_text, parse_document
from shared.errors import FetchError

NOW = datetime(2026, 11, 1, tzinfo=UTC)
FEEDS = SHARED_DATA / "feeds"


def parse(data: bytes) -> list:  # type: ignore[type-arg]
    return parse_document(data, kind="feed", source_id="src_t", source_url="http://t/feed", fetched_at=NOW)


def test_real_urdu_feed() -> None:
    items = parse((FEEDS / "miniflux/internal/reader/parser/testdata/urdu_UTF8.xml").read_bytes())
    assert len(items) == 26
    assert all(i.title and i.url and i.published_at for i in items)
    assert len({i.id for i in items}) == 26
    again = parse((FEEDS / "miniflux/internal/reader/parser/testdata/urdu_UTF8.xml").read_bytes())
    assert [i.id for i in again] == [i.id for i in items], "ids are stable"


def test_json_feed() -> None:
    items = parse((FEEDS / "feedparser/tests/json/example.json").read_bytes())
    assert items and items[0].title


@pytest.mark.parametrize("data", [b"", b"\x00\x01\x02garbage", b"<html><body>hello</body></html>", b'{"a": 1}'])
def test_not_a_feed(data: bytes) -> None:
    with pytest.raises(FetchError) as info:
        parse(data)
    assert info.value.kind == "not_a_feed"


def test_html_to_text() -> None:
    assert html_to_text("<p>Oil &amp; gas</p><script>x()</script><b>deal</b>") == "Oil & gas deal"


def test_every_file_of_the_four_parser_suites_ends_as_items_or_a_classified_error() -> None:
    """All 3,376 files (inputs, expected outputs, ill-formed ones): nothing crashes or hangs."""
    rows = [json.loads(line) for line in (FEEDS / "index.jsonl").read_text().splitlines()]
    assert len(rows) >= 3376
    outcomes: dict[str, int] = {}
    partly_broken_with_items = 0
    missing = 0
    for row in rows:
        path = FEEDS / row["origin"] / row["path"]
        if not path.exists():
            missing += 1
            continue
        try:
            items = parse(path.read_bytes())
        except FetchError as exc:
            assert exc.kind in ("not_a_feed", "parse_error"), (row["path"], exc)
            outcomes[exc.kind] = outcomes.get(exc.kind, 0) + 1
            continue
        outcomes["items" if items else "no_items"] = outcomes.get("items" if items else "no_items", 0) + 1
        if items and row.get("well_formed") is False:
            partly_broken_with_items += 1
    print(
        f"\nparser over {len(rows)} files: {outcomes}; ill-formed files that still gave items: "
        f"{partly_broken_with_items}; missing: {missing}"
    )
    assert missing == 0
    assert outcomes.get("items", 0) >= 750
    assert partly_broken_with_items >= 20, "items are kept from feeds that are only partly broken"


def test_an_aggregators_entries_name_their_own_publisher() -> None:
    # Google News lists every story with <source url>; GDELT each article at its own site. The
    # tracker counts independent publishers by it, so it must survive parsing.
    rss = b"""<rss version="2.0"><channel><title>Google News</title>
      <item><title>Rail MoU moves - Dawn</title><link>https://news.google.example/rss/articles/CBMi1</link>
        <source url="https://www.Dawn.example">Dawn</source></item>
      <item><title>Rail MoU - Tribune</title><link>https://news.google.example/rss/articles/CBMi2</link>
        <source url="https://tribune.example/">The Express Tribune</source></item>
      <item><title>No source named</title><link>https://news.google.example/rss/articles/CBMi3</link></item>
      <item><title>Names a non-web source</title><link>https://news.google.example/a/4</link>
        <source url="javascript:alert(1)">x</source></item>
      <item><title>Names itself</title><link>https://news.google.example/a/5</link>
        <source url="https://news.google.example/">Google News</source></item>
    </channel></rss>"""
    items = parse_document(
        rss, kind="feed", source_id="gn", source_url="https://news.google.example/rss/search?q=x", fetched_at=NOW
    )
    assert [i.publisher for i in items] == ["dawn.example", "tribune.example", None, None, None]
    # The " - Dawn" the aggregator appends is not the paper's title (its own feed's copy would
    # match no story key); a suffix that is not the named source's stays.
    assert [i.title for i in items[:2]] == ["Rail MoU moves", "Rail MoU - Tribune"]
    atom = b"""<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><id>tag:t</id>
      <entry><id>tag:1</id><title>x</title><link href="https://agg.example/1"/>
        <source><id>tag:k</id><title>Kazinform</title><link href="https://www.inform.example/"/></source></entry>
    </feed>"""
    [item] = parse(atom)
    assert item.publisher == "inform.example"
    gdelt = b'{"articles": [{"url": "https://www.dawn.example/news/1", "title": "Rail MoU"}]}'
    [listed] = parse_document(
        gdelt,
        kind="gdelt",
        source_id="gd",
        source_url="https://api.gdelt.example/api/v2/doc/doc?query=x",
        fetched_at=NOW,
    )
    assert listed.publisher == "dawn.example"


@pytest.mark.parametrize(
    ("stamp", "utc"),
    [
        ("Mon, 26 Oct 2026 10:00:00 PKT", datetime(2026, 10, 26, 5, tzinfo=UTC)),
        ("Mon, 26 Oct 2026 10:00:00 ALMT", datetime(2026, 10, 26, 5, tzinfo=UTC)),
        ("Mon, 26 Oct 2026 10:00 AQTT", datetime(2026, 10, 26, 5, tzinfo=UTC)),
        # Almaty was UTC+6 until 1 March 2024.
        ("Thu, 01 Feb 2024 10:00:00 ALMT", datetime(2024, 2, 1, 4, tzinfo=UTC)),
        # Qyzylorda moved to UTC+5 in December 2018.
        ("Mon, 01 Jul 2019 12:00:00 QYZT", datetime(2019, 7, 1, 7, tzinfo=UTC)),
        ("Mon, 02 Jul 2018 12:00:00 QYZT", datetime(2018, 7, 2, 6, tzinfo=UTC)),
        ("Mon, 26 Oct 2026 10:00:00 +0500", datetime(2026, 10, 26, 5, tzinfo=UTC)),
        ("Mon, 26 Oct 2026 10:00:00 EST", datetime(2026, 10, 26, 15, tzinfo=UTC)),
    ],
)
def test_the_regions_zone_abbreviations_are_their_offsets(stamp: str, utc: datetime) -> None:
    # feedparser reads a zone name it does not know as UTC: "10:00 PKT" was 10:00 UTC, five hours
    # late (the audit of 2026-12-05).
    feed = (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><item><title>A story</title>'
        f"<link>http://t/a</link><pubDate>{stamp}</pubDate></item></channel></rss>"
    ).encode()
    [item] = parse_document(feed, kind="feed", source_id="src_t", source_url="http://t/feed", fetched_at=NOW)
    assert item.published_at == utc
