"""Feed parsing: a pure function from fetched bytes to normalised :class:`RawItem` records.

feedparser reads the bytes we fetched (never a URL, so it never does network I/O of its own).
A document with no feed version and no entries is ``not_a_feed``; a feed that is only partly
broken (feedparser's bozo flag) still yields the entries it could read.
"""

from __future__ import annotations

import calendar
import html
import io
import json
import re
import time
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import feedparser

from shared.errors import FetchError
from shared.models import RawItem, stable_id

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


def parse_feed(data: bytes, *, source_id: str, source_url: str, fetched_at: datetime) -> list[RawItem]:
    """Normalise every entry of the feed in ``data``.

    Raises :class:`FetchError` with kind ``not_a_feed`` when ``data`` is not a feed at all.
    """
    if data.lstrip()[:1] == b"{":
        entries = _json_feed_entries(data)  # feedparser 6.0 has no JSON Feed support
    else:
        parsed = feedparser.parse(io.BytesIO(data), sanitize_html=True, resolve_relative_uris=True)
        entries = parsed.get("entries") or []
        if not parsed.get("version") and not entries:
            reason = parsed.get("bozo_exception")
            raise FetchError("not_a_feed", f"not a feed: {reason or 'no feed elements found'}")
    items: list[RawItem] = []
    for entry in entries:
        link = entry.get("link") or None
        guid = entry.get("id") or link
        title = html_to_text(entry.get("title") or "")[:MAX_TITLE_CHARS]
        summary_html = entry.get("summary") or ""
        if not summary_html and entry.get("content"):
            summary_html = entry["content"][0].get("value") or ""
        summary = html_to_text(summary_html)[:MAX_SUMMARY_CHARS]
        key = guid or f"{title}\x1f{summary}"
        if not key.strip():
            continue  # an entry with no id, link, title or text cannot be identified or shown
        items.append(
            RawItem(
                id=stable_id("itm", source_id, key),
                source_id=source_id,
                source_url=source_url,
                url=link,
                title=title,
                summary=summary,
                author=entry.get("author") or None,
                published_at=_entry_time(entry),
                fetched_at=fetched_at,
            )
        )
    return items
