"""The parser is a pure function of bytes: real feeds give items, garbage gives `not_a_feed`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from helpers import SHARED_DATA

from services.ingest.parser import html_to_text, parse_feed
from shared.errors import FetchError

NOW = datetime(2026, 11, 1, tzinfo=UTC)
FEEDS = SHARED_DATA / "feeds"


def parse(data: bytes) -> list:  # type: ignore[type-arg]
    return parse_feed(data, source_id="src_t", source_url="http://t/feed", fetched_at=NOW)


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


def test_every_input_file_parses_or_fails_cleanly() -> None:
    """Run the parser over every input file of the four parsers' suites: items or a classified error."""
    rows = [json.loads(line) for line in (FEEDS / "index.jsonl").read_text().splitlines()]
    inputs = [r for r in rows if r["role"] == "input"]
    assert len(inputs) > 1000
    outcomes = {"items": 0, "empty": 0, "not_a_feed": 0}
    for row in inputs:
        path = FEEDS / row["origin"] / row["path"] if (FEEDS / row["origin"] / row["path"]).exists() else None
        if path is None:
            matches = list(FEEDS.glob(f"{row['origin']}/**/{row['path']}"))
            path = matches[0] if matches else None
        if path is None:
            continue
        try:
            items = parse(path.read_bytes())
        except FetchError as exc:
            assert exc.kind == "not_a_feed"
            outcomes["not_a_feed"] += 1
            continue
        outcomes["items" if items else "empty"] += 1
    print(f"\nparser over {len(inputs)} input files: {outcomes}")
    assert outcomes["items"] > 500
