"""Parsing: pure functions from fetched bytes to normalised :class:`RawItem` records.

feedparser reads the bytes we fetched (never a URL, so it never does network I/O of its own);
HTML list pages go through selectolax with the source's CSS selectors; GDELT answers are JSON.
Every source kind gives :class:`Entry` values, which :func:`to_item` normalises the same way.
"""

from __future__ import annotations

import calendar
import html
import io
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import feedparser

from services.ingest.entry import Entry
from services.ingest.gdelt import parse_gdelt_entries
from services.ingest.htmllist import parse_html_entries
from services.ingest.normalize import canonical_url, content_hash
from shared.errors import FetchError
from shared.models import HtmlSelectors, RawItem, SourceKind, stable_id

MAX_TITLE_CHARS = 1_000
MAX_SUMMARY_CHARS = 20_000
_SPACES = re.compile(r"\s+")
_BLOCKS = frozenset({"p", "br", "div", "li", "ul", "ol", "h1", "h2", "h3", "h4", "tr", "td", "blockquote"})


class _TextExtractor(HTMLParser):
    """Collects the text of an HTML fragment, skipping script and style."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in _BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        elif tag in _BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment, whitespace collapsed."""
    if "<" not in fragment and "&" not in fragment:
        return _SPACES.sub(" ", fragment).strip()
    extractor = _TextExtractor()
    extractor.feed(fragment)
    extractor.close()
    return _SPACES.sub(" ", html.unescape("".join(extractor.parts))).strip()


def _entry_time(entry: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = dict.get(entry, key)  # plain dict access: skips feedparser's deprecated key aliasing
        if value:
            try:
                return datetime.fromtimestamp(calendar.timegm(value), UTC)
            except (OverflowError, ValueError, OSError):
                continue
    return None


def _json_time(value: object) -> time.struct_time | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).timetuple()


def _json_feed_entries(data: bytes) -> list[dict[str, Any]]:
    """Entries of a JSON Feed (1.0/1.1) in feedparser's entry shape."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise FetchError("not_a_feed", f"not a feed: invalid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not str(doc.get("version", "")).startswith("https://jsonfeed.org/version/"):
        raise FetchError("not_a_feed", "not a feed: JSON without a jsonfeed.org version")
    entries: list[dict[str, Any]] = []
    for raw in doc.get("items") or []:
        if not isinstance(raw, dict):
            continue
        authors = raw.get("authors") or ([raw["author"]] if isinstance(raw.get("author"), dict) else [])
        author = authors[0].get("name") if authors and isinstance(authors[0], dict) else None
        entries.append(
            {
                "id": str(raw["id"]) if raw.get("id") is not None else None,
                "link": raw.get("url") if isinstance(raw.get("url"), str) else None,
                "title": raw.get("title") if isinstance(raw.get("title"), str) else "",
                "summary": next(
                    (raw[k] for k in ("content_html", "content_text", "summary") if isinstance(raw.get(k), str)), ""
                ),
                "author": author if isinstance(author, str) else None,
                "published_parsed": _json_time(raw.get("date_published")),
                "updated_parsed": _json_time(raw.get("date_modified")),
            }
        )
    return entries


def parse_feed_entries(data: bytes) -> list[Entry]:
    """Entries of an RSS 0.9x/1.0/2.0, Atom, RDF or JSON Feed document (see :func:`parse_feed_document`)."""
    return parse_feed_document(data)[0]


def _ttl_s(parsed: Any) -> float | None:
    ttl = parsed.get("feed", {}).get("ttl")
    try:
        return float(ttl) * 60 if ttl else None
    except (TypeError, ValueError):
        return None


def parse_feed_document(data: bytes) -> tuple[list[Entry], float | None]:
    """Entries of a feed and its own <ttl> in seconds (RSS gives minutes), from one parse.

    Raises :class:`FetchError` with kind ``not_a_feed`` when ``data`` is not a feed at all; a
    partly broken feed (feedparser's bozo flag) still gives the entries it could read.
    """
    ttl: float | None = None
    if data.lstrip()[:1] == b"{":
        raw_entries = _json_feed_entries(data)  # feedparser 6.0 has no JSON Feed support
    else:
        parsed = feedparser.parse(io.BytesIO(data), sanitize_html=True, resolve_relative_uris=True)
        raw_entries = parsed.get("entries") or []
        if not parsed.get("version") and not raw_entries:
            reason = parsed.get("bozo_exception")
            raise FetchError("not_a_feed", f"not a feed: {reason or 'no feed elements found'}")
        ttl = _ttl_s(parsed)
    entries = []
    for entry in raw_entries:
        summary = entry.get("summary") or ""
        if not summary and entry.get("content"):
            summary = entry["content"][0].get("value") or ""
        entries.append(
            Entry(
                guid=entry.get("id") or None,
                link=entry.get("link") or None,
                title=entry.get("title") or "",
                summary=summary,
                author=entry.get("author") or None,
                published_at=_entry_time(entry),
            )
        )
    return entries, ttl


def to_item(entry: Entry, *, source_id: str, source_url: str, fetched_at: datetime) -> RawItem | None:
    """Normalise one entry; None when it has nothing to identify or show it by.

    Identity, in order: the entry's guid, its canonical link, its text (so an edited title is the
    same entry), its title. ``content_hash`` covers title and text, so edits show as updates.
    """
    title = html_to_text(entry.title)[:MAX_TITLE_CHARS]
    summary = html_to_text(entry.summary)[:MAX_SUMMARY_CHARS]
    canonical = canonical_url(entry.link)
    key = entry.guid or canonical or (f"text:{summary}" if summary else None) or (f"title:{title}" if title else None)
    if not key or not key.strip():
        return None
    return RawItem(
        id=stable_id("itm", source_id, key),
        source_id=source_id,
        source_url=source_url,
        url=entry.link,
        canonical_url=canonical,
        title=title,
        summary=summary,
        author=entry.author,
        published_at=entry.published_at,
        fetched_at=fetched_at,
        content_hash=content_hash(title, summary),
    )


@dataclass(frozen=True)
class Parsed:
    """Normalised items of one document, and the document's own refresh hint (RSS <ttl>)."""

    items: list[RawItem]
    ttl_s: float | None = None


def parse_document(
    data: bytes,
    *,
    kind: SourceKind,
    source_id: str,
    source_url: str,
    fetched_at: datetime,
    selectors: HtmlSelectors | None = None,
) -> list[RawItem]:
    """Normalised items of a fetched document of any source kind (a pure function of its input)."""
    return parse_source_document(
        data, kind=kind, source_id=source_id, source_url=source_url, fetched_at=fetched_at, selectors=selectors
    ).items


def parse_source_document(
    data: bytes,
    *,
    kind: SourceKind,
    source_id: str,
    source_url: str,
    fetched_at: datetime,
    selectors: HtmlSelectors | None = None,
) -> Parsed:
    """Like :func:`parse_document`, with the document's TTL (parsed once)."""
    ttl: float | None = None
    if kind == "html":
        if selectors is None:
            raise FetchError("parse_error", "an html source needs CSS selectors")
        entries = parse_html_entries(data, base_url=source_url, selectors=selectors)
    elif kind == "gdelt":
        entries = parse_gdelt_entries(data)
    else:
        entries, ttl = parse_feed_document(data)
    items = [to_item(e, source_id=source_id, source_url=source_url, fetched_at=fetched_at) for e in entries]
    return Parsed([i for i in items if i is not None], ttl)
