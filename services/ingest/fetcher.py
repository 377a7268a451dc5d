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
MAX_VALIDATOR_CHARS = 1_024  # an ETag or Last-Modified longer than this is not worth storing or sending


def usable_validator(value: str | None) -> str | None:
    """``value`` if it can be sent back as an ETag / Last-Modified request header, else None.

    Only printable ASCII (space to ``~``), at most :data:`MAX_VALIDATOR_CHARS`: httpx encodes
    request header values as ASCII, so a validator a server sent in UTF-8 or Latin-1 would make
    every later request of the source fail before it is sent. Without a validator the source is
    simply fetched in full.
    """
    if not value or len(value) > MAX_VALIDATOR_CHARS or not all(" " <= c <= "~" for c in value):
        return None
    return value


@dataclass(frozen=True)
class FetchResult:
    """What came back: ``body`` is None for 304 Not Modified; ``fresh_for_s`` is the server's
    freshness hint (max-age, else Expires). ``etag`` and ``last_modified`` are safe to send back
    (:func:`usable_validator`), or None."""

    status_code: int
    body: bytes | None
    etag: str | None
    last_modified: str | None
    fresh_for_s: float | None = None


def _request(client: httpx.AsyncClient, source: Source) -> httpx.Request:
    """The GET of ``source``, with the validators that can be sent; ``invalid_url`` when the
    request cannot be built (a URL stored before it was checked as now)."""
    headers: dict[str, str] = {"Accept": ACCEPT[source.kind]}
    # A stored validator that cannot be sent (stored before they were checked) is left out
    # rather than failing the source for good; the next full answer replaces it.
    if etag := usable_validator(source.etag):
        headers["If-None-Match"] = etag
    if last_modified := usable_validator(source.last_modified):
        headers["If-Modified-Since"] = last_modified
    try:
        return client.build_request("GET", source.url, headers=headers)
    except httpx.InvalidURL as exc:  # not an HTTPError
        raise FetchError("invalid_url", f"invalid URL: {exc}") from exc
    except (UnicodeError, ValueError) as exc:  # what httpx raises for text it cannot encode
        raise FetchError("invalid_url", f"cannot build a request for this URL: {type(exc).__name__}: {exc}") from exc


async def fetch_source(client: httpx.AsyncClient, source: Source, *, max_bytes: int, now: datetime) -> FetchResult:
    """GET the source with its validators; raise :class:`FetchError` on any failure."""
    request = _request(client, source)
    try:
        response = await client.send(request, stream=True)
        try:
            hint = cache_hint_s(response.headers, now)
            if response.status_code == 304:
                return FetchResult(
                    304, None, usable_validator(source.etag), usable_validator(source.last_modified), hint
                )
            if response.status_code >= 400:
                raise FetchError(
                    "http_status",
                    f"HTTP {response.status_code}",
                    status_code=response.status_code,
                    retry_after_s=retry_after_s(response.headers, now),
                )
            body = await read_capped(response, max_bytes)
            return FetchResult(
                response.status_code,
                body,
                usable_validator(response.headers.get("etag")),
                usable_validator(response.headers.get("last-modified")),
                hint,
            )
        finally:
            await response.aclose()
    except httpx.HTTPError as exc:
        raise classify_http_error(exc) from exc
    except httpx.InvalidURL as exc:  # e.g. a redirect hop; not an HTTPError
        raise FetchError("invalid_url", f"invalid URL: {exc}") from exc
