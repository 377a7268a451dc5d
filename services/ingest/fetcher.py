"""Fetching one source: conditional GET, body-size cap, errors classified by kind, cache hints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import httpx

from services.ingest.schedule import cache_hint_s, retry_after_s
from shared.errors import FetchError
from shared.http import classify_http_error, read_capped
from shared.models import Source

ACCEPT = {
    "feed": "application/rss+xml, application/atom+xml, application/feed+json, application/xml;q=0.9, "
    "text/xml;q=0.9, */*;q=0.5",
    "html": "text/html, application/xhtml+xml;q=0.9, */*;q=0.5",
    "gdelt": "application/json, */*;q=0.5",
}


@dataclass(frozen=True)
class FetchResult:
    """What came back: ``body`` is None for 304 Not Modified; ``fresh_for_s`` is the server's
    freshness hint (max-age, else Expires)."""

    status_code: int
    body: bytes | None
    etag: str | None
    last_modified: str | None
    fresh_for_s: float | None = None


async def fetch_source(client: httpx.AsyncClient, source: Source, *, max_bytes: int, now: datetime) -> FetchResult:
    """GET the source with its validators; raise :class:`FetchError` on any failure."""
    headers: dict[str, str] = {"Accept": ACCEPT[source.kind]}
    if source.etag:
        headers["If-None-Match"] = source.etag
    if source.last_modified:
        headers["If-Modified-Since"] = source.last_modified
    try:
        async with client.stream("GET", source.url, headers=headers) as response:
            hint = cache_hint_s(response.headers, now)
            if response.status_code == 304:
                return FetchResult(304, None, source.etag, source.last_modified, hint)
            if response.status_code >= 400:
                raise FetchError(
                    "http_status",
                    f"HTTP {response.status_code}",
                    status_code=response.status_code,
                    retry_after_s=retry_after_s(response.headers, now),
                )
            body = await read_capped(response, max_bytes)
            return FetchResult(
                response.status_code, body, response.headers.get("etag"), response.headers.get("last-modified"), hint
            )
    except httpx.HTTPError as exc:
        raise classify_http_error(exc) from exc
    except httpx.InvalidURL as exc:  # not an HTTPError: a URL stored before it was checked as now
        raise FetchError("invalid_url", f"invalid URL: {exc}") from exc
