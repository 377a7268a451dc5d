"""Query sources: the GDELT DOC 2.0 API in JSON mode (``mode=ArtList&format=json``).

GDELT asks for about one request per 5 s and returns at most 250 records per call; the poller
spaces requests to a GDELT host by the larger of CORRIDOR_GDELT_GAP_S and CORRIDOR_POLL_HOST_GAP_S,
and :func:`gdelt_url` caps maxrecords.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from services.ingest.entry import Entry
from shared.errors import FetchError

MAX_RECORDS = 250


def gdelt_url(url: str) -> str:
    """The query URL with ``format=json``, ``mode=ArtList`` and ``maxrecords`` ≤ 250."""
    parts = urlsplit(url)
    query = {k.lower(): v for k, v in parse_qsl(parts.query, keep_blank_values=True)}
    query["format"] = "json"
    query.setdefault("mode", "ArtList")
    try:
        records = int(query.get("maxrecords", MAX_RECORDS))
    except ValueError:
        records = MAX_RECORDS
    query["maxrecords"] = str(max(1, min(records, MAX_RECORDS)))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def _seen(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_gdelt_entries(data: bytes) -> list[Entry]:
    """Entries of a GDELT DOC API answer. An empty result set is ``{}`` there, not an error;
    anything but a JSON object whose ``articles`` is a list is ``parse_error``."""
    try:
        doc = json.loads(data) if data.strip() else {}
    except (ValueError, RecursionError) as exc:
        # GDELT answers query errors as plain text with status 200.
        raise FetchError("parse_error", f"GDELT: {data[:200].decode('utf-8', 'replace')}") from exc
    if not isinstance(doc, dict):
        raise FetchError("parse_error", "GDELT: answer is not a JSON object")
    articles = doc.get("articles") or []
    if not isinstance(articles, list):
        raise FetchError("parse_error", f"GDELT: 'articles' is a JSON {type(articles).__name__}, not a list")
    entries = []
    for article in articles:
        if isinstance(article, dict) and isinstance(article.get("url"), str):
            title = article.get("title") if isinstance(article.get("title"), str) else ""
            entries.append(
                Entry(
                    guid=None,
                    link=article["url"],
                    title=title or "",
                    summary="",
                    published_at=_seen(article.get("seendate")),
                    publisher=article["url"],  # GDELT lists other sites' articles: each is its own publisher's
                )
            )
    return entries
