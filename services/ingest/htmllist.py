"""HTML list pages of official sites without feeds: entries picked by the source's CSS selectors.

selectolax (Lexbor) parses the page; relative links are resolved against the page URL. Dates
are read from a ``datetime`` attribute or the element's text when it is ISO 8601 or one of a few
common press-release formats; otherwise the item is listed under its fetch time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urljoin

from selectolax.lexbor import LexborHTMLParser, LexborNode, SelectolaxError

from services.ingest.entry import MAX_ENTRIES, Entry
from shared.errors import FetchError
from shared.models import HtmlSelectors

__all__ = ["MAX_ENTRIES", "parse_date", "parse_html_entries"]
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
    try:
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset: outside what datetime holds in UTC
        return None


def _text(node: LexborNode | None) -> str:
    return " ".join((node.text(separator=" ") or "").split()) if node is not None else ""


def _join(base_url: str, href: str | None) -> str | None:
    if not href:
        return None
    try:
        return urljoin(base_url, href)
    except ValueError:  # e.g. "http://[::1" (an unclosed IPv6 literal): no usable link
        return None


def parse_html_entries(data: bytes, *, base_url: str, selectors: HtmlSelectors) -> list[Entry]:
    """Entries of an HTML list page (the first :data:`MAX_ENTRIES` items); ``parse_error`` when
    the item selector matches nothing or any selector is invalid."""
    try:
        tree = LexborHTMLParser(data.decode("utf-8", errors="replace"))
        nodes = tree.css(selectors.item)
        if not nodes:
            raise FetchError("parse_error", f"html list page: no element matches the item selector {selectors.item!r}")
        return [e for e in (_entry(node, base_url, selectors) for node in nodes[:MAX_ENTRIES]) if e is not None]
    # An invalid selector (item, link, title, date or summary) raises SelectolaxError in
    # selectolax 1.x, ValueError or RuntimeError in earlier releases.
    except (SelectolaxError, ValueError, RuntimeError) as exc:
        raise FetchError("parse_error", f"html list page: {exc}") from exc


def _entry(node: LexborNode, base_url: str, selectors: HtmlSelectors) -> Entry | None:
    link_node = node.css_first(selectors.link or "a[href]")
    href = link_node.attributes.get("href") if link_node is not None else None
    if link_node is None and node.tag == "a":
        href = node.attributes.get("href")
    link = _join(base_url, href)
    title = _text(node.css_first(selectors.title)) if selectors.title else (_text(link_node) or _text(node))
    date_node = node.css_first(selectors.date) if selectors.date else None
    date_value = (date_node.attributes.get("datetime") or _text(date_node)) if date_node is not None else None
    summary = _text(node.css_first(selectors.summary)) if selectors.summary else ""
    if not (link or title):
        return None
    return Entry(guid=None, link=link, title=title, summary=summary, published_at=parse_date(date_value))


def check_selectors(selectors: HtmlSelectors | None) -> None:
    """ValueError naming the first selector selectolax cannot parse: the poller would report it
    as ``parse_error`` on every poll, so the API and the CLI refuse it before it is stored."""
    if selectors is None:
        return
    empty = LexborHTMLParser("")
    for field, selector in selectors.model_dump(exclude_none=True).items():
        try:
            empty.css(selector)
        # SelectolaxError in selectolax 1.x, ValueError or RuntimeError in earlier releases
        except (SelectolaxError, ValueError, RuntimeError) as exc:
            raise ValueError(f"selectors.{field}: invalid CSS selector {selector!r} ({exc})") from exc
