"""Feed parsing: a pure function from fetched bytes to normalised :class:`RawItem` records.

feedparser reads the bytes we fetched (never a URL, so it never does network I/O of its own).
A document with no feed version and no entries is ``not_a_feed``; a feed that is only partly
broken (feedparser's bozo flag) still yields the entries it could read.
"""

from __future__ import annotations

import calendar
import html
import io
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import feedparser

from shared.errors import FetchError
from shared.models import RawItem, stable_id

MAX_TITLE_CHARS = 1_000
MAX_SUMMARY_CHARS = 20_000
_SPACES = re.compile(r"\s+")


class _TextExtractor(HTMLParser):
    """Collects the text of an HTML fragment, skipping script and style."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("p", "br", "div", "li"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

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
        value = entry.get(key)
        if value:
            try:
                return datetime.fromtimestamp(calendar.timegm(value), UTC)
            except (OverflowError, ValueError, OSError):
                continue
    return None


def parse_feed(data: bytes, *, source_id: str, source_url: str, fetched_at: datetime) -> list[RawItem]:
    """Normalise every entry of the feed in ``data``.

    Raises :class:`FetchError` with kind ``not_a_feed`` when ``data`` is not a feed at all.
    """
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
