"""HTML list pages of official sites without feeds: entries picked by the source's CSS selectors.

selectolax (Lexbor) parses the page; relative links are resolved against the page URL. Dates
are read from a ``datetime`` attribute or the element's text when it is ISO 8601 or one of a few
common press-release formats; otherwise the item is listed under its fetch time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urljoin

from selectolax.lexbor import LexborHTMLParser, LexborNode

from services.ingest.entry import Entry
from shared.errors import FetchError
from shared.models import HtmlSelectors

MAX_ENTRIES = 500
_DATE_FORMATS = ("%d %B %Y", "%B %d, %Y", "%d %b %Y", "%b %d, %Y", "%d.%m.%Y", "%d/%m/%Y", "%Y-%m-%d")


def parse_date(value: str | None) -> datetime | None:
    """A date from an attribute or text; None when it matches no known format."""
    if not value:
        return None
    value = " ".join(value.split())
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
        for fmt in _DATE_FORMATS:
            try:
                parsed = datetime.strptime(value, fmt)
                break
            except ValueError:
                continue
    if parsed is None:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _text(node: LexborNode | None) -> str:
    return " ".join((node.text(separator=" ") or "").split()) if node is not None else ""


def parse_html_entries(data: bytes, *, base_url: str, selectors: HtmlSelectors) -> list[Entry]:
    """Entries of an HTML list page; ``parse_error`` when the item selector matches nothing."""
    try:
        tree = LexborHTMLParser(data.decode("utf-8", errors="replace"))
        nodes = tree.css(selectors.item)
    except (ValueError, RuntimeError) as exc:  # selectolax raises these for invalid selectors
        raise FetchError("parse_error", f"html list page: {exc}") from exc
    if not nodes:
        raise FetchError("parse_error", f"html list page: no element matches the item selector {selectors.item!r}")
    entries: list[Entry] = []
    for node in nodes[:MAX_ENTRIES]:
        link_node = node.css_first(selectors.link or "a[href]")
        href = link_node.attributes.get("href") if link_node is not None else None
        if link_node is None and node.tag == "a":
            href = node.attributes.get("href")
        link = urljoin(base_url, href) if href else None
        title = _text(node.css_first(selectors.title)) if selectors.title else (_text(link_node) or _text(node))
        date_node = node.css_first(selectors.date) if selectors.date else None
        date_value = (date_node.attributes.get("datetime") or _text(date_node)) if date_node is not None else None
        summary = _text(node.css_first(selectors.summary)) if selectors.summary else ""
        if link or title:
            entries.append(
                Entry(guid=None, link=link, title=title, summary=summary, published_at=parse_date(date_value))
            )
    return entries
