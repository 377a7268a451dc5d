"""Parsing: pure functions from fetched bytes to normalised :class:`RawItem` records.

feedparser reads the bytes we fetched (never a URL, so it never does network I/O of its own);
HTML list pages go through selectolax with the source's CSS selectors; GDELT answers are JSON.
Every source kind gives :class:`Entry` values, which :func:`to_item` normalises the same way.
"""

from __future__ import annotations

import calendar
import codecs
import hashlib
import html
import io
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import unquote, unquote_plus, urldefrag, urlsplit, urlunsplit

import feedparser

from services.ingest.entry import Entry, newest_entries
from services.ingest.gdelt import parse_gdelt_entries
from services.ingest.htmllist import parse_html_entries
from services.ingest.normalize import canonical_url, content_hash
from services.ingest.zones import register as register_regional_zones
from shared.errors import FetchError
from shared.logs import shown_url
from shared.models import HtmlSelectors, RawItem, SourceKind, publisher_host, stable_id
from shared.text import text_chars

register_regional_zones()  # "10:00 PKT" is 05:00 UTC, not 10:00 (feedparser reads unknown zones as UTC)

MAX_TITLE_CHARS = 1_000
MAX_SUMMARY_CHARS = 20_000
MAX_URL_CHARS = 2_048  # a longer link is dropped (same bound as a source URL), not cut into a wrong one
MAX_AUTHOR_CHARS = 200
MAX_GUID_CHARS = 1_000  # a longer guid is replaced by its digest: same identity, bounded size
MAX_FUTURE_SKEW = timedelta(days=1)  # a publication time further ahead of the fetch is not believed
_SPACES = re.compile(r"\s+")
# Characters XML 1.0 does not allow (section 2.2: C0 controls but tab, LF and CR; lone surrogates;
# U+FFFE, U+FFFF) and DEL, which RFC 5545 counts as a control too: one in a title made every RSS
# and Atom answer that included the item fail (lxml refuses it) and put raw bytes into iCalendar.
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
    """Plain text of an HTML fragment: characters no feed or calendar can carry removed
    (:func:`text_chars`), whitespace collapsed, no leading or trailing space."""
    if "<" not in fragment and "&" not in fragment:
        return _SPACES.sub(" ", text_chars(fragment)).strip()
    extractor = _TextExtractor()
    extractor.feed(fragment)
    extractor.close()
    # After unescaping: a character reference can spell a forbidden character too.
    return _SPACES.sub(" ", text_chars(html.unescape("".join(extractor.parts)))).strip()


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
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC).timetuple()
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 moved out of range by its offset
        return None


def _json_id(value: object) -> str | None:
    # bool is an int: true is no identifier
    return str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else None


def _json_author(raw: dict[str, Any]) -> str | None:
    """The first author's name: 1.1's ``authors`` list, else 1.0's ``author`` object."""
    authors = raw.get("authors")
    first = authors[0] if isinstance(authors, list) and authors else raw.get("author")
    name = first.get("name") if isinstance(first, dict) else None
    return name if isinstance(name, str) else None


def _json_feed_entries(data: bytes) -> list[dict[str, Any]]:
    """Entries of a JSON Feed (1.0/1.1) in feedparser's entry shape; ``not_a_feed`` without a
    jsonfeed.org version, ``parse_error`` when ``items`` is not a list. Fields of the wrong JSON
    type are ignored (an entry without a string title has none)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise FetchError("not_a_feed", f"not a feed: invalid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not str(doc.get("version", "")).startswith("https://jsonfeed.org/version/"):
        raise FetchError("not_a_feed", "not a feed: JSON without a jsonfeed.org version")
    items = doc.get("items") or []
    if not isinstance(items, list):
        raise FetchError("parse_error", f"JSON Feed: 'items' is a JSON {type(items).__name__}, not a list")
    entries: list[dict[str, Any]] = []
    for raw in items:
        if not isinstance(raw, dict):
            continue
        entries.append(
            {
                "id": _json_id(raw.get("id")),
                "link": raw.get("url") if isinstance(raw.get("url"), str) else None,
                "title": raw.get("title") if isinstance(raw.get("title"), str) else "",
                "summary": next(
                    (raw[k] for k in ("content_html", "content_text", "summary") if isinstance(raw.get(k), str)), ""
                ),
                "author": _json_author(raw),
                "published_parsed": _json_time(raw.get("date_published")),
                "updated_parsed": _json_time(raw.get("date_modified")),
            }
        )
    return entries


def parse_feed_entries(data: bytes, base_url: str | None = None) -> list[Entry]:
    """Entries of an RSS 0.9x/1.0/2.0, Atom, RDF or JSON Feed document (see :func:`parse_feed_document`)."""
    return parse_feed_document(data, base_url)[0]


def _ttl_s(parsed: Any) -> float | None:
    ttl = parsed.get("feed", {}).get("ttl")
    try:
        return float(ttl) * 60 if ttl else None
    except (TypeError, ValueError):
        return None


# A numeric character reference: feedparser turns each into a character and encodes it as UTF-8,
# which raises for a surrogate (&#xD800;) or a code point past U+10FFFF (&#x110000;) and so lost
# the whole document for one bad reference in one title.
# Any number of digits: leading zeros (&#x0000000000D800;) must not hide one.
_CHAR_REF = re.compile(rb"&#([xX][0-9a-fA-F]+|[0-9]+);")


def _unsafe_ref(match: re.Match[bytes]) -> bytes:
    ref = match.group(1)
    hexadecimal = ref[:1] in b"xX"
    digits = (ref[1:] if hexadecimal else ref).lstrip(b"0") or b"0"
    if len(digits) > 8:  # past U+10FFFF whatever they say (and int() of thousands of digits is slow)
        return b"&#xFFFD;"
    code = int(digits, 16 if hexadecimal else 10)
    return b"&#xFFFD;" if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF else match.group(0)


def _safe_char_refs(data: bytes) -> bytes:
    """``data`` with every reference to a character UTF-8 cannot hold replaced by U+FFFD.

    The references are found in ASCII-compatible bytes, so a UTF-16 or UTF-32 document (a BOM, or
    the ``<?xml`` it must begin with) is first re-encoded as UTF-8, its declaration saying so."""
    data = _as_utf8(data)
    return _CHAR_REF.sub(_unsafe_ref, data) if b"&#" in data else data


# Longest first: the UTF-32 LE BOM begins with the UTF-16 LE one. Without a BOM, an XML document
# in these encodings is known by how its "<?" is written (XML 1.0, appendix F.1).
_WIDE_ENCODINGS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (b"<\0\0\0?\0\0\0", "utf-32-le"),
    (b"\0\0\0<\0\0\0?", "utf-32-be"),
    (b"<\0?\0", "utf-16-le"),
    (b"\0<\0?", "utf-16-be"),
)
_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_DECLARED_ENCODING = re.compile(rb"""\A(<\?xml[^>]*?\sencoding\s*=\s*)(["'])[^"']*\2""")


def _as_utf8(data: bytes) -> bytes:
    """``data`` re-encoded as UTF-8 when it is UTF-16 or UTF-32, else unchanged (also when it
    does not decode: feedparser's own recovery then has the original bytes)."""
    for mark, codec in _WIDE_ENCODINGS:
        if data.startswith(mark):
            body = data[len(mark) :] if mark in _BOMS else data
            try:
                text = body.decode(codec)
            except UnicodeDecodeError:
                return data
            encoded = text.encode("utf-8", "replace")  # lone surrogates cannot come out of a decode
            return _DECLARED_ENCODING.sub(rb"\1\2utf-8\2", encoded, count=1)
    return data


def parse_feed_document(data: bytes, base_url: str | None = None) -> tuple[list[Entry], float | None]:
    """Entries of a feed and its own <ttl> in seconds (RSS gives minutes), from one parse.

    Relative links (``<link>/news/1</link>``) are resolved against ``base_url`` (the feed's own
    URL; an ``xml:base`` in the feed takes precedence) and dropped without it. Raises
    :class:`FetchError` with kind ``not_a_feed`` when ``data`` is not a feed at all and
    ``parse_error`` for a JSON Feed of the wrong shape; a partly broken feed (feedparser's bozo
    flag) still gives the entries it could read.
    """
    ttl: float | None = None
    if data.lstrip()[:1] == b"{":
        raw_entries = _json_feed_entries(data)  # feedparser 6.0 has no JSON Feed support
    else:
        # Parsing bytes, feedparser knows no document URL: Content-Location is its documented
        # way to give one (it also accepts only http(s) and the like there, never file:).
        headers = {"content-location": base_url} if base_url else None
        parsed = feedparser.parse(
            io.BytesIO(_safe_char_refs(data)), sanitize_html=True, resolve_relative_uris=True, response_headers=headers
        )
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
                title=_without_source_name(entry.get("title") or "", entry),
                summary=summary,
                author=entry.get("author") or None,
                published_at=_entry_time(entry),
                publisher=_declared_publisher(entry),
            )
        )
    return entries, ttl


def _declared_publisher(entry: Any) -> str | None:
    """The URL of the publisher an entry names as its origin: RSS ``<source url>`` (Google News
    lists every story so) or Atom ``<source><link>``; None when it names none."""
    source = entry.get("source")
    if not isinstance(source, dict):
        return None
    url = source.get("href") or source.get("link")
    return url if isinstance(url, str) else None


def _without_source_name(title: str, entry: Any) -> str:
    """The title without the " - Dawn" an aggregator appends when the entry names its source
    (``<source>Dawn</source>``, as Google News does): the paper's own feed has the title without
    it, so the copy's story key matched nothing and the story was published twice (audit of
    2026-12-05). The paper is kept as the item's ``publisher``."""
    source = entry.get("source")
    name = source.get("title") if isinstance(source, dict) else None
    if isinstance(name, str) and name.strip():
        for dash in (" - ", " – ", " — ", " | "):
            suffix = f"{dash}{name.strip()}"
            if title.rstrip().endswith(suffix) and len(title.rstrip()) > len(suffix):
                return title.rstrip()[: -len(suffix)].rstrip()
    return title


def _guid(value: str | None) -> str | None:
    if value is None or len(value) <= MAX_GUID_CHARS:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _believable(published_at: datetime | None, fetched_at: datetime) -> datetime | None:
    """``published_at`` unless it is more than :data:`MAX_FUTURE_SKEW` after the fetch."""
    if published_at is None or published_at > fetched_at + MAX_FUTURE_SKEW:
        return None
    return published_at


MIN_TOKEN_CHARS = 6  # a query value shorter than this is never taken for a token


def _link(link: str | None) -> tuple[str | None, str | None]:
    """The entry's link and its canonical form, both None when either is too long (a cut URL
    would point elsewhere; the canonical form can be longer than the link: escapes)."""
    if not link or len(link) > MAX_URL_CHARS:
        return None, None
    canonical = canonical_url(link)
    if canonical is not None and len(canonical) > MAX_URL_CHARS:
        return None, None
    return link, canonical


def _into_page(link: str, page_url: str) -> bool:
    """Whether ``link`` points into the document at ``page_url`` itself (``#story-1``, resolved)
    while that URL carries a query or path parameters (``;jsessionid=…``), which may hold an
    access token."""
    parts = urlsplit(page_url)
    return bool(parts.query or ";" in parts.path) and urldefrag(link).url == urldefrag(page_url).url


def _forms(text: str) -> set[str]:
    """``text`` as written and decoded both ways (``%2B`` and ``+`` name the same token)."""
    return {text, unquote(text), unquote_plus(text)}


def _token_like(text: str) -> bool:
    """Whether a query value may be an access token: one run of characters, letters and digits
    mixed, or long. Words (``section=economy``, ``q=Kazakhstan+Pakistan``) are not, and are left
    in links."""
    if any(c.isspace() for c in unquote(text)):
        return False  # words: "%20" is always a space
    # "+" is a space in a form's query but also a character of base64 tokens: a value with one
    # is a token only by its mix of letters and digits, never by its length alone.
    by_length = "+" not in text
    for form in (text, unquote(text)):
        core = form.strip("=")
        if len(core) < MIN_TOKEN_CHARS:
            continue
        if (by_length and len(core) >= 20) or (any(c.isdigit() for c in core) and any(c.isalpha() for c in core)):
            return True
    return False


def _query_tokens(query: str) -> set[str]:
    """The token-like values of a query, in every form: a value, or a bare part (``?dG9rZW4=``)."""
    tokens: set[str] = set()
    for part in query.split("&"):
        _, _, value = part.partition("=")
        candidate = value if value.strip("=") else part
        if _token_like(candidate):
            tokens |= _forms(candidate)
    return tokens


def _path_tokens(path: str) -> set[str]:
    """The token-like values of a path's parameters (``/feed;jsessionid=8F3A…``), in every form."""
    tokens: set[str] = set()
    for segment in path.split("/"):
        for param in segment.split(";")[1:]:
            _, _, value = param.partition("=")
            candidate = value if value.strip("=") else param
            if _token_like(candidate):
                tokens |= _forms(candidate)
    return tokens


def _without_page_tokens(link: str, page_url: str) -> str:
    """``link`` without the query parameters and path parameters that repeat a token of the
    fetched page's query or path parameters (a feed passing its access token or session on to
    its links: ``?token=…&id=7``, ``/story/1;jsessionid=…``), whatever the host: it is the
    operator's token wherever it is sent; a fragment holding one is dropped too."""
    page = urlsplit(page_url)
    tokens = _query_tokens(page.query) | _path_tokens(page.path)
    if not tokens:
        return link
    target = urlsplit(link)

    def holds_token(part: str) -> bool:
        # A token anywhere in a parameter (a share link's ?u= holding the feed URL) counts.
        return any(t in form for t in tokens for form in _forms(part))

    kept = [part for part in target.query.split("&") if not holds_token(part)]
    path = "/".join(
        ";".join([head, *(p for p in params if not holds_token(p))])
        for segment in target.path.split("/")
        for head, *params in [segment.split(";")]
    )
    fragment = "" if target.fragment and holds_token(target.fragment) else target.fragment
    if len(kept) == len(target.query.split("&")) and fragment == target.fragment and path == target.path:
        return link
    return urlunsplit(target._replace(path=path, query="&".join(kept), fragment=fragment))


def to_item(
    entry: Entry, *, source_id: str, source_url: str, fetched_at: datetime, page_url: str | None = None
) -> RawItem | None:
    """Normalise one entry; None when it has nothing to identify or show it by.

    Identity, in order: the entry's guid, its canonical link, its text (so an edited title is the
    same entry), its title. ``content_hash`` covers title and text, so edits show as updates.

    Every field is bounded, so an item always fits a bus message: title and text are cut at
    :data:`MAX_TITLE_CHARS` / :data:`MAX_SUMMARY_CHARS`, the author at :data:`MAX_AUTHOR_CHARS`;
    a link longer than :data:`MAX_URL_CHARS` is dropped (``url`` and ``canonical_url`` None: a
    cut URL would point elsewhere), and so is a link into the fetched page itself (``page_url``)
    when that URL has a query; a guid longer than :data:`MAX_GUID_CHARS` identifies the
    entry by its digest. ``published_at`` is the publisher's stated time, or None when it states
    none or one more than :data:`MAX_FUTURE_SKEW` after ``fetched_at`` (a clock error or a
    placeholder such as 2099 that would otherwise sort first for ever); such an item is listed
    under its fetch time, like any undated one (:attr:`RawItem.sort_at`). ``publisher`` is the
    host of the publisher the entry names (an aggregator's entry), None when it names none or the
    source itself.
    """
    title = html_to_text(entry.title)[:MAX_TITLE_CHARS]
    summary = html_to_text(entry.summary)[:MAX_SUMMARY_CHARS]
    link, canonical = _link(entry.link)
    guid = _guid(entry.guid)
    key = guid or canonical or (f"text:{summary}" if summary else None) or (f"title:{title}" if title else None)
    if not key or not key.strip():
        return None
    if link and page_url:
        # An anchor of the fetched page, or a link repeating its query's token, would carry an
        # access token of the feed's URL to every reader. Cleaned after the identity is taken:
        # the same entry keeps its id.
        try:
            cleaned = None if _into_page(link, page_url) else _without_page_tokens(link, page_url)
        except ValueError:  # unreadable (a broken IPv6 literal): drop the link, never the feed
            cleaned = None
        if cleaned != link:
            link, canonical = _link(cleaned)
    author = _SPACES.sub(" ", entry.author).strip()[:MAX_AUTHOR_CHARS] if entry.author else None
    # An aggregator's entry names its publisher: kept when it is not the source itself.
    publisher = publisher_host(entry.publisher)
    if publisher == publisher_host(source_url):
        publisher = None
    return RawItem(
        id=stable_id("itm", source_id, key),
        source_id=source_id,
        source_url=source_url,
        url=link,
        canonical_url=canonical,
        title=title,
        summary=summary,
        author=author or None,
        published_at=_believable(entry.published_at, fetched_at),
        fetched_at=fetched_at,
        content_hash=content_hash(title, summary),
        publisher=publisher,
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
    """Normalised items of a fetched document of any source kind (a pure function of its input;
    see :func:`parse_source_document` and :func:`to_item` for the bounds)."""
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
    """Like :func:`parse_document`, with the document's TTL (parsed once).

    At most :data:`~services.ingest.entry.MAX_ENTRIES` entries of one document are kept (the
    newest: :func:`~services.ingest.entry.newest_entries`). Raises :class:`FetchError`
    (``not_a_feed``, ``parse_error``) for a document it cannot read; synchronous and CPU-bound
    (a 10 MB feed takes seconds), so the poller runs it in a thread.
    """
    ttl: float | None = None
    if kind == "html":
        if selectors is None:
            raise FetchError("parse_error", "an html source needs CSS selectors")
        entries = parse_html_entries(data, base_url=source_url, selectors=selectors)
    elif kind == "gdelt":
        entries = parse_gdelt_entries(data)
    else:
        entries, ttl = parse_feed_document(data, source_url)
    entries = newest_entries(entries)
    # Items travel to every subscriber and every reader: they name their source as logs do,
    # query values masked (a feed URL may carry an access token).
    shown = shown_url(source_url)
    items = [
        to_item(e, source_id=source_id, source_url=shown, fetched_at=fetched_at, page_url=source_url) for e in entries
    ]
    return Parsed([i for i in items if i is not None], ttl)
