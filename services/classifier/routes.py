"""HTTP routes of the classifier: the events API (/api/v1/events, the same query as RSS and Atom)
and /api/v1/sectors (counts per sector and week)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from feedgen.feed import FeedGenerator
from pydantic import BaseModel, Field
from pydantic_core import to_json

from shared.models import LANGUAGE_TAG, ClassifiedItem, Country, DuplicateRef
from shared.store import EventQuery, Store
from shared.store.base import MAX_PAGE
from shared.text import MAX_QUERY_TOKENS, search_tokens, text_chars
from shared.timeutil import to_utc_ms

FEED_ITEMS = 50
SCORE_SCANS = 5  # store pages read at most to fill one page filtered by a sector's score
# A feed reader never follows a cursor: a feed reads more pages to fill itself (2,000 items of
# the filter's newest at most, all within the query's time budget), where a short API page says
# so with its next_cursor.
FEED_SCORE_SCANS = 40
T = TypeVar("T")
MAX_TIMELINE_WEEKS = 520


class Event(ClassifiedItem):
    """An event: the classified item, with the other sources that ran the same story."""

    duplicates: list[DuplicateRef] = Field(default_factory=list)


class EventPage(BaseModel):
    """One page of events; pass ``next_cursor`` as ``cursor`` (same filters and sort) for the next."""

    items: list[Event]
    next_cursor: str | None


class WeekCount(BaseModel):
    week: str
    count: int


class SectorTimeline(BaseModel):
    """One sector: its label, total in the window, and items per week (Monday, UTC)."""

    id: str
    total: int
    weeks: list[WeekCount]


class SectorsOut(BaseModel):
    country: Country | None
    since: datetime
    weeks: list[str]
    sectors: list[SectorTimeline]


def _invalid(field: str, msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["query", field], "msg": msg, "type": "value_error"}])


def _encode_cursor(sort: str, item: ClassifiedItem) -> str:
    value: Any = item.sort_at.isoformat() if sort == "time" else item.top_score
    return base64.urlsafe_b64encode(json.dumps([sort, value, item.id]).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str) -> tuple[datetime | float, str]:
    try:
        kind, value, item_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if kind != sort:
            raise ValueError("cursor from another sort order")
        parsed: datetime | float = datetime.fromisoformat(value) if sort == "time" else float(value)
        if isinstance(parsed, float) and not math.isfinite(parsed):
            raise ValueError("score is not a finite number")
        if isinstance(parsed, datetime):
            if parsed.tzinfo is None:
                raise ValueError("naive time")
            parsed.astimezone(UTC)  # the store converts it: year 9999 at -05:00 overflows
        if not isinstance(item_id, str):
            raise TypeError("cursor id is not a string")
        item_id.encode()  # a lone surrogate (JSON "\ud800") cannot reach the store: UnicodeEncodeError
        return parsed, item_id
    except (binascii.Error, ValueError, TypeError, UnicodeError, OverflowError) as exc:
        raise _invalid("cursor", "invalid cursor") from exc


class EventFilters:
    """The query parameters shared by the JSON, RSS and Atom event lists."""

    def __init__(
        self,
        sector: Annotated[list[str] | None, Query(max_length=20, description="sector id; repeat for any of")] = None,
        country: Annotated[Country | None, Query(description="PK or KZ")] = None,
        bilateral: Annotated[bool | None, Query(description="only items about both countries")] = None,
        source: Annotated[str | None, Query(min_length=1, max_length=64, description="source id")] = None,
        language: Annotated[str | None, Query(min_length=2, max_length=8, pattern=LANGUAGE_TAG)] = None,
        since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
        until: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
        min_score: Annotated[float | None, Query(ge=0, le=1000, allow_inf_nan=False)] = None,
        q: Annotated[str | None, Query(min_length=2, max_length=200, description="words that must all occur")] = None,
        agreement: Annotated[str | None, Query(max_length=80, description="agreement id (registry)")] = None,
        sort: Annotated[Literal["time", "score"], Query()] = "time",
    ) -> None:
        self.sectors = tuple(sector or ())
        self.country, self.bilateral, self.source, self.language = country, bilateral, source, language
        self.since, self.until, self.min_score, self.sort = since, until, min_score, sort
        self.agreement = agreement
        self.q_tokens = tuple(search_tokens(q or "", limit=MAX_QUERY_TOKENS + 1))
        if q and not self.q_tokens:
            raise _invalid("q", "the query has no searchable words")
        if len(self.q_tokens) > MAX_QUERY_TOKENS:
            # Dropping the words after the limit answered items that lack them.
            raise _invalid("q", f"at most {MAX_QUERY_TOKENS} searchable words (of two or more letters, not stopwords)")
        bounds: dict[str, datetime | None] = {"since": since, "until": until}
        for name, value in bounds.items():
            if value is None:
                continue
            if value.tzinfo is None:
                raise _invalid(name, "give a time zone (e.g. 2026-03-01T00:00:00Z)")
            try:
                bounds[name] = _ceil_ms(value)
            except (OverflowError, ValueError):
                raise _invalid(name, "out of range once converted to UTC") from None
        self.since, self.until = bounds["since"], bounds["until"]
        if self.since is not None and self.until is not None and self.since > self.until:
            raise _invalid("until", "until is before since")

    @classmethod
    def dependency(cls) -> Callable[..., Awaitable[EventFilters]]:
        """The filters as an async dependency with the same query parameters: FastAPI would run the
        class itself (a plain callable) in a worker thread."""

        async def filters(**params: Any) -> EventFilters:
            return cls(**params)

        filters.__signature__ = inspect.signature(cls)  # type: ignore[attr-defined]
        return filters

    def wanted_score(self, item: ClassifiedItem) -> bool:
        """Whether ``item`` reaches ``min_score`` as a subscription's ``min_score`` means it: its
        best score among the asked-for sectors (without sectors the store's top-score filter is
        already exact, and this is not asked)."""
        if self.min_score is None:
            return True
        return max((s.score for s in item.sector_scores if s.id in self.sectors), default=0.0) >= self.min_score

    def query(self, *, limit: int, after: tuple[datetime | float, str] | None = None) -> EventQuery:
        return EventQuery(
            sectors=self.sectors,
            country=self.country,
            bilateral=self.bilateral,
            source_id=self.source,
            language=self.language,
            since=self.since,
            until=self.until,
            min_score=self.min_score,
            q_tokens=self.q_tokens,
            agreement=self.agreement,
            sort=self.sort,
            limit=limit,
            after=after,
        )


def _ceil_ms(value: datetime) -> datetime:
    """``value`` in UTC, raised to the next millisecond when it falls between two. Moments are
    stored to the millisecond (BSON's precision); a bound between two stored values fell on
    different sides on MongoDB (which cut it) and SQLite (which kept it). Raised, an inclusive
    ``since`` of .1235 leaves out an item of .123 and an exclusive ``until`` keeps it in, as the
    bounds say."""
    spare = value.microsecond % 1000
    return to_utc_ms(value + timedelta(microseconds=1000 - spare) if spare else value)


Filters = Annotated[EventFilters, Depends(EventFilters.dependency())]


def build_router(
    *,
    store: Store,
    sector_ids: list[str],
    agreement_ids: list[str],
    require_read: Callable[..., Any],
    base_url: str,
    query_timeout_s: float = 30.0,
    agreement_titles: Mapping[str, str] | None = None,
) -> APIRouter:
    """Routes for events and sectors; ``require_read`` guards them (a no-op when reads are public).

    Each request's store reads get ``query_timeout_s`` in all: a query that would read too much
    (a rare combination of words over years of events) answers 503 instead of holding a worker.
    """
    router = APIRouter(prefix="/api/v1", tags=["events"], dependencies=[Depends(require_read)])

    async def bounded(work: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(query_timeout_s):
                return await work
        except TimeoutError:
            raise HTTPException(
                503,
                detail=f"the query took longer than {query_timeout_s:g} s; narrow it (since/until, sector, source)",
                headers={"Retry-After": "10"},
            ) from None

    def checked(filters: EventFilters) -> EventFilters:
        unknown = sorted(set(filters.sectors) - set(sector_ids))
        if unknown:
            raise _invalid("sector", f"unknown sectors {unknown}; valid: {sector_ids}")
        # A mistyped agreement id would answer an empty list, read as "nothing happened".
        if filters.agreement is not None and filters.agreement not in agreement_ids:
            raise _invalid("agreement", "unknown agreement id; see GET /api/v1/agreements")
        return filters

    async def events_json(items: list[ClassifiedItem]) -> bytes:
        """The items as a JSON array of :class:`Event`: each item's own JSON with its duplicates
        added. Items were validated when read and are serialised once, here (measured: a second
        validation, then FastAPI's response-model pass, cost more than reading the page)."""
        copies = await bounded(store.duplicates_of(i.id for i in items))
        parts = [
            # A model's JSON is an object: close it with the duplicates instead of "}".
            i.__pydantic_serializer__.to_json(i)[:-1] + b',"duplicates":' + to_json(copies.get(i.id, [])) + b"}"
            for i in items
        ]
        return b"[" + b",".join(parts) + b"]"

    @router.get("/events", response_model=EventPage)
    async def list_events(
        filters: Filters,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> Response:
        checked(filters)
        after = _decode_cursor(cursor, filters.sort) if cursor else None
        items, last = await bounded(page_of(filters, limit, after))
        next_cursor = _encode_cursor(filters.sort, last) if last is not None else None
        body = b'{"items":' + await events_json(items) + b',"next_cursor":' + to_json(next_cursor) + b"}"
        return Response(body, media_type="application/json")

    async def page_of(
        filters: EventFilters, limit: int, after: tuple[datetime | float, str] | None, scans: int = SCORE_SCANS
    ) -> tuple[list[ClassifiedItem], ClassifiedItem | None]:
        """One page and the item its next cursor starts after (None: nothing further).

        With sectors and ``min_score`` together, the store's index holds only each item's top
        score, which is never below the asked-for sectors' (a necessary bound); the items whose
        asked-for sectors stay under it are dropped here, and up to ``scans`` store pages are
        read to fill one. A page may then hold fewer than ``limit`` items while ``next_cursor``
        says more may follow."""
        if filters.min_score is None or not filters.sectors:
            items = await store.list_items(filters.query(limit=limit, after=after))
            return items, items[-1] if len(items) == limit else None
        kept: list[ClassifiedItem] = []
        last: ClassifiedItem | None = None
        for _ in range(scans):
            batch = await store.list_items(filters.query(limit=limit, after=after))
            for item in batch:
                if filters.wanted_score(item):
                    kept.append(item)
                    if len(kept) == limit:
                        return kept, item
            if len(batch) < limit:
                return kept, None
            last = batch[-1]
            after = (last.sort_at if filters.sort == "time" else last.top_score, last.id)
        return kept, last

    def feed_subject(filters: EventFilters) -> str:
        """What a feed lists, for its title: the agreement (a reader tells per-agreement feeds
        apart by it), else the sectors, and the country."""
        if filters.agreement:
            subject = (agreement_titles or {}).get(filters.agreement, filters.agreement)
        else:
            subject = "Pakistan–Kazakhstan agreements: " + (", ".join(filters.sectors) or "all sectors")
        return subject + (f" ({filters.country})" if filters.country else "")

    async def feed(request: Request, filters: EventFilters, kind: Literal["rss", "atom"]) -> Response:
        checked(filters)
        items, _ = await bounded(page_of(filters, FEED_ITEMS, None, FEED_SCORE_SCANS))
        fg = FeedGenerator()
        # The feed's own address on the public base URL: the request's Host is the proxy's
        # view (nginx passes no port with $host), and the Atom id must not depend on it. Never
        # echo a read key given as ?key= (feed readers that cannot send headers use it).
        query = request.url.remove_query_params("key").query
        self_url = f"{base_url.rstrip('/')}{request.url.path}" + (f"?{query}" if query else "")
        fg.id(self_url)
        fg.author({"name": "Corridor"})  # RFC 4287 4.1.1: a feed whose entries name no author needs one
        fg.title(f"Corridor — {feed_subject(filters)}")
        fg.link(href=self_url, rel="self")
        fg.link(href=base_url, rel="alternate")
        fg.description("Events matching this Corridor query")
        fg.language("en")
        # The feed changed when its newest entry did (entries' updated is when each was classified).
        fg.updated(max((i.classified_at for i in items), default=datetime.now(UTC)))
        for item in reversed(items):  # feedgen prepends: add oldest first to list newest first
            entry = fg.add_entry()
            event_url = f"{base_url.rstrip('/')}/api/v1/events/{item.id}"
            # feedgen's id() and guid() each set both the Atom id and the RSS guid: set only the
            # one this answer renders.
            if kind == "atom":
                entry.id(event_url)  # RFC 4287 4.2.6: an absolute IRI, stable for the event
            else:
                entry.guid(item.id, permalink=False)  # the guid RSS readers have always seen
            # Items stored before ingest removed them may still hold characters XML forbids.
            title = text_chars(item.title)
            entry.title(title or "(untitled)")
            entry.link(href=item.url or event_url)
            entry.published(item.sort_at)
            entry.updated(item.classified_at)
            entry.description(text_chars(item.summary[:1000]) or title)
            for sector in item.sectors:
                entry.category(term=sector)
        body = fg.rss_str(pretty=True) if kind == "rss" else fg.atom_str(pretty=True)
        media = "application/rss+xml" if kind == "rss" else "application/atom+xml"
        return Response(body, media_type=f"{media}; charset=utf-8")

    @router.get("/events.rss", response_class=Response, responses={200: {"content": {"application/rss+xml": {}}}})
    async def events_rss(request: Request, filters: Filters) -> Response:
        return await feed(request, filters, "rss")

    @router.get("/events.atom", response_class=Response, responses={200: {"content": {"application/atom+xml": {}}}})
    async def events_atom(request: Request, filters: Filters) -> Response:
        return await feed(request, filters, "atom")

    @router.get("/events/{event_id}", response_model=Event)
    async def get_event(event_id: str) -> Response:
        item = await bounded(store.get_item(event_id))
        if item is None:
            raise HTTPException(404, detail="no such event")
        return Response((await events_json([item]))[1:-1], media_type="application/json")

    @router.get("/sectors", response_model=SectorsOut)
    async def sectors(
        country: Annotated[Country | None, Query()] = None,
        weeks: Annotated[int, Query(ge=1, le=MAX_TIMELINE_WEEKS, description="how many weeks back")] = 26,
    ) -> SectorsOut:
        today = datetime.now(UTC).date()
        monday = today - timedelta(days=today.weekday())
        first = monday - timedelta(weeks=weeks - 1)
        since = datetime(first.year, first.month, first.day, tzinfo=UTC)
        week_keys = [(first + timedelta(weeks=n)).isoformat() for n in range(weeks)]
        counts: dict[str, dict[str, int]] = {s: {} for s in sector_ids}
        for c in await bounded(store.sector_counts(country=country, since=since)):
            counts.setdefault(c.sector, {})[c.week] = c.count
        timelines = [
            SectorTimeline(
                # Only the weeks shown: an item dated in the future is in no week of the window.
                id=s,
                total=sum(by_week.get(w, 0) for w in week_keys),
                weeks=[WeekCount(week=w, count=by_week.get(w, 0)) for w in week_keys],
            )
            for s, by_week in counts.items()
        ]
        return SectorsOut(country=country, since=since, weeks=week_keys, sectors=timelines)

    return router
