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
