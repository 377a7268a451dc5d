"""Fetching one source: conditional GET, body-size cap, and errors classified by kind."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from shared.errors import FetchError
from shared.http import classify_http_error, read_capped
from shared.models import Source


@dataclass(frozen=True)
class FetchResult:
    """What came back: ``body`` is None for 304 Not Modified."""

    status_code: int
    body: bytes | None
    etag: str | None
    last_modified: str | None


async def fetch_source(client: httpx.AsyncClient, source: Source, *, max_bytes: int) -> FetchResult:
    """GET the source with its validators; raise :class:`FetchError` on any failure."""
    headers: dict[str, str] = {
        "Accept": "application/rss+xml, application/atom+xml, application/feed+json, "
        "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
    }
    if source.etag:
        headers["If-None-Match"] = source.etag
    if source.last_modified:
        headers["If-Modified-Since"] = source.last_modified
    try:
        async with client.stream("GET", source.url, headers=headers) as response:
            if response.status_code == 304:
                return FetchResult(304, None, source.etag, source.last_modified)
            if response.status_code >= 400:
                raise FetchError("http_status", f"HTTP {response.status_code}", status_code=response.status_code)
            body = await read_capped(response, max_bytes)
            return FetchResult(
                response.status_code,
                body,
                response.headers.get("etag"),
                response.headers.get("last-modified"),
            )
    except httpx.HTTPError as exc:
        raise classify_http_error(exc) from exc
