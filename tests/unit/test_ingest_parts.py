"""Ingest stages, each alone: schedule, normalisation, HTML list pages, GDELT, per-host limits."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta

import pytest

from services.ingest.gdelt import gdelt_url, parse_gdelt_entries
from services.ingest.htmllist import parse_date, parse_html_entries
from services.ingest.limits import HostLimiter
from services.ingest.normalize import LanguageDetector, canonical_url, content_hash, story_keys
from services.ingest.parser import parse_document, parse_feed_document
from services.ingest.schedule import cache_hint_s, next_delay_s, retry_after_s
from shared.errors import FetchError
from shared.models import HtmlSelectors

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_next_delay_takes_the_largest_hint_and_clamps() -> None:
    assert next_delay_s(interval_s=900, max_interval_s=6 * 3600, jitter=False) == 900
    assert next_delay_s(interval_s=900, max_interval_s=6 * 3600, hints=(3600.0, None, 60.0), jitter=False) == 3600
    assert next_delay_s(interval_s=900, max_interval_s=6 * 3600, hints=(10**9,), jitter=False) == 6 * 3600
    backoff = [next_delay_s(interval_s=60, max_interval_s=3600, errors=e, jitter=False) for e in range(1, 9)]
    assert backoff == [60, 120, 240, 480, 960, 1920, 3600, 3600], "capped exponential, never dropped"
    jittered = {next_delay_s(interval_s=900, max_interval_s=10**6) for _ in range(20)}
    assert len(jittered) > 1 and all(810 <= d <= 990 for d in jittered)


def test_header_hints() -> None:
    assert cache_hint_s({"cache-control": "public, max-age=1800"}, NOW) == 1800
    expires = (NOW + timedelta(hours=2)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert cache_hint_s({"expires": expires}, NOW) == 7200
    assert cache_hint_s({}, NOW) is None
    assert retry_after_s({"retry-after": "120"}, NOW) == 120
    assert (
        retry_after_s({"retry-after": (NOW + timedelta(minutes=5)).strftime("%a, %d %b %Y %H:%M:%S GMT")}, NOW) == 300
    )
    assert retry_after_s({"retry-after": "soon"}, NOW) is None


def test_feed_ttl() -> None:
    rss = b"<rss version='2.0'><channel><title>t</title><ttl>60</ttl><item><title>a</title></item></channel></rss>"
    assert parse_feed_document(rss)[1] == 3600
    assert parse_feed_document(b"<rss version='2.0'><channel><title>t</title></channel></rss>")[1] is None


def test_canonical_url_and_hashes() -> None:
    assert (
        canonical_url("https://www.Dawn.com/news/1?utm_source=x&utm_medium=y&fbclid=z#top")
        == "https://www.dawn.com/news/1"
    )
    assert canonical_url("https://example.org/a?id=5") == "https://example.org/a?id=5"
    assert canonical_url(None) is None
    assert content_hash("Title", "Some  text") == content_hash("title", "some text")
    assert content_hash("Title", "Some text") != content_hash("Title", "Other text")


def test_story_keys_match_near_identical_copies_only() -> None:
    a = story_keys("Pakistan and Kazakhstan sign 37 MoUs to boost trade", "")
    b = story_keys("Pakistan, Kazakhstan sign 37 MoUs to boost trade!", "")
    c = story_keys("Kazakhstan wheat harvest sets a record this year", "")
    assert a and a == b and set(a).isdisjoint(c)
    assert story_keys("Daily briefing", "") == [], "generic short titles identify nothing"


def test_language_detection() -> None:
    detector = LanguageDetector()
    assert detector.detect("Pakistan and Kazakhstan signed agreements on rail transit") == "en"
    assert detector.detect("Казахстан и Пакистан обсудили поставки нефти и зерна") == "ru"
    assert detector.detect("پاکستان اور قازقستان کے درمیان تجارت میں اضافہ") == "ur"
    assert detector.detect("short") is None


PAGE = b"""<html><body><div class="news">
<article><a href="/en/news/1">Visit of the Prime Minister to Astana</a><time datetime="2026-02-03">3 Feb</time>
<p class="lead">Talks on rail transit.</p></article>
<article><a href="https://mofa.example/en/news/2">Joint statement</a><time>4 February 2026</time></article>
</div></body></html>"""


def test_html_list_page() -> None:
    selectors = HtmlSelectors(item="article", date="time", summary="p.lead")
    entries = parse_html_entries(PAGE, base_url="https://mofa.example/en/press", selectors=selectors)
    assert [e.link for e in entries] == ["https://mofa.example/en/news/1", "https://mofa.example/en/news/2"]
    assert (
        entries[0].title == "Visit of the Prime Minister to Astana" and entries[0].summary == "Talks on rail transit."
    )
    assert entries[0].published_at == datetime(2026, 2, 3, tzinfo=UTC)
    assert entries[1].published_at == datetime(2026, 2, 4, tzinfo=UTC)
    items = parse_document(
        PAGE,
        kind="html",
        source_id="s",
        source_url="https://mofa.example/en/press",
        fetched_at=NOW,
        selectors=selectors,
    )
    assert len(items) == 2 and items[0].canonical_url == "https://mofa.example/en/news/1"
    with pytest.raises(FetchError) as info:
        parse_html_entries(PAGE, base_url="https://x", selectors=HtmlSelectors(item="li.nothing"))
    assert info.value.kind == "parse_error"
    assert parse_date("March 5, 2026") == datetime(2026, 3, 5, tzinfo=UTC) and parse_date("yesterday") is None


def test_gdelt() -> None:
    url = gdelt_url("https://api.gdeltproject.org/api/v2/doc/doc?query=Pakistan%20Kazakhstan&maxrecords=1000")
    assert "maxrecords=250" in url and "format=json" in url and "mode=ArtList" in url
    data = b'{"articles": [{"url": "https://a.example/x", "title": "Gwadar transit", "seendate": "20260301T101500Z"}]}'
    [entry] = parse_gdelt_entries(data)
    assert entry.link == "https://a.example/x" and entry.published_at == datetime(2026, 3, 1, 10, 15, tzinfo=UTC)
    assert parse_gdelt_entries(b"{}") == []
    with pytest.raises(FetchError):
        parse_gdelt_entries(b"Your query was too short or too long.")


async def test_host_limiter_bounds_concurrency_and_spaces_requests() -> None:
    limiter = HostLimiter(per_host=2)
    active = peak = 0

    async def fetch() -> None:
        nonlocal active, peak
        async with limiter.slot("a.example"):
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.02)
            active -= 1

    await asyncio.gather(*(fetch() for _ in range(8)))
    assert peak == 2 and limiter.waiting == 0
    starts: list[float] = []

    async def spaced() -> None:
        async with limiter.slot("gdelt.example", gap_s=0.1):
            starts.append(time.monotonic())

    await asyncio.gather(*(spaced() for _ in range(3)))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g >= 0.09 for g in gaps), gaps


def test_entity_expansion_attack_is_refused_quickly() -> None:
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">' for n in range(1, 10)
    )
    bomb = (
        f'<?xml version="1.0"?><!DOCTYPE lolz [{entities}]><rss version="2.0"><channel><title>&lol9;</title>'
        "<item><title>&lol9;</title><description>&lol9;</description></item></channel></rss>"
    ).encode()
    started = time.monotonic()
    try:
        items = parse_document(bomb, kind="feed", source_id="s", source_url="u", fetched_at=NOW)
    except FetchError as exc:
        assert exc.kind == "not_a_feed"
    else:
        assert all(len(i.title) < 10_000 and len(i.summary) < 100_000 for i in items), "no billion laughs expansion"
    assert time.monotonic() - started < 5
