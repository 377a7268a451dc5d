"""HTTP routes of the agreement tracker: /api/v1/agreements (the board), one agreement's timeline
with its corroboration, and iCalendar (RFC 5545) feeds of stage events for calendar apps.

Events of one agreement are also its event list (``/api/v1/events?agreement=ID``) and feeds
(``/api/v1/events.rss?agreement=ID``), served by the events routes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from icalendar import Calendar, vText
from icalendar import Event as CalendarEvent
from pydantic import BaseModel, Field

from services.classifier.agreements import Registry, SourceRef
from services.classifier.tracker import AgreementState, signing_moment
from services.classifier.watch import AgreementWatch
from shared.models import AgreementEvent, Area, ClassifiedItem, Country, Evidence, LinkVia, Stage
from shared.store import EventQuery, Store
from shared.store.base import MAX_PAGE
from shared.text import text_chars

TIMELINE_ITEMS = 100
CALENDAR_EVENTS = 500


class AgreementOut(BaseModel):
    """One row of the board."""

    id: str
    area: Area
    area_label: str
    title: str
    signed_on: date
    stage: Stage
    stage_since: datetime
    setback: bool
    setback_at: datetime | None
    last_item_at: datetime | None
    last_progress_at: datetime | None
    days_quiet: int
    items: int
    sources: int
    stalled: bool
    stall_reason: str | None
    uncertain: list[str]


class SourceOut(BaseModel):
    id: str
    name: str | None
    country: Country | None
    official: bool


class Corroboration(BaseModel):
    """Who reports a stage, and whether that is enough."""

    stage: Stage
    items: int
    sources: list[SourceOut]
    publishers: list[str]  # the sources' hosts: two of them, or an official source, support a stage
    supported: bool
    both_countries: bool
    official: bool
    first_at: datetime | None
    last_at: datetime | None


class TimelineItem(BaseModel):
    id: str
    title: str
    url: str | None
    source_id: str
    source_name: str | None
    publisher: str | None = Field(default=None, description="the paper an aggregator's item names (its host)")
    stage: Stage | None
    at: datetime
    via: LinkVia = Field(
        default="agreement",
        description="how the item was linked: it names this agreement, or it reports on its area (area, sectors)",
    )
    score: float = Field(default=0.0, description="the link's score (the linker's, as on the event)")
    terms: list[str] = Field(default_factory=list, description="the agreement's or its area's terms the item matched")
    evidence: list[Evidence] = Field(
        default_factory=list,
        description="why: the sentences that link the item to this agreement (kind agreement) and the one that "
        "reports its stage (kind stage), each with its matched term",
    )


def timeline_item(item: ClassifiedItem, agreement_id: str, source_name: str | None) -> TimelineItem:
    """One linked item as the timeline shows it, with the evidence for this agreement only: an item
    linked to several agreements carries the others' evidence too, which says nothing here."""
    link = next((a for a in item.agreements if a.id == agreement_id), None)
    evidence = [
        e
        for e in item.evidence
        if (e.kind == "agreement" and e.label == agreement_id) or (e.kind == "stage" and e.label == item.stage)
    ]
    return TimelineItem(
        id=item.id,
        title=item.title,
        url=item.url,
        source_id=item.source_id,
        source_name=source_name,
        publisher=item.publisher,
        stage=item.stage,
        at=item.sort_at,
        via=link.via if link else "agreement",
        score=link.score if link else 0.0,
        terms=link.terms if link else [],
        evidence=evidence,
    )


class AgreementDetail(AgreementOut):
    """One agreement: the registry's facts, where it stands, who says so, what was reported."""

    parties: list[str]
    commits_to: str
    registry_sources: list[SourceRef]
    corroboration: list[Corroboration]
    timeline: list[TimelineItem]
    events: list[AgreementEvent]


def _row(state: AgreementState, registry: Registry) -> dict[str, Any]:
    a = state.agreement
    return {
        "id": a.id,
        "area": a.area,
        "area_label": registry.areas[a.area].label,
        "title": a.title,
        "signed_on": a.signed_on,
        "stage": state.stage,
        "stage_since": state.stage_since,
        "setback": state.setback,
        "setback_at": state.setback_at,
        "last_item_at": state.last_item_at,
        "last_progress_at": state.last_progress_at,
        "days_quiet": state.days_quiet,
        "items": state.items,
        "sources": state.sources,
        "stalled": state.stalled,
        "stall_reason": state.stall_reason,
        "uncertain": a.uncertain,
    }


def _text(value: str) -> vText:
    """``value`` as an iCalendar TEXT, without the control characters RFC 5545 forbids in one
    (3.3.11; tab stays, line breaks are escaped by vText)."""
    return vText(text_chars(value))


def build_router(
    *, store: Store, registry: Registry, watch: AgreementWatch, require_read: Callable[..., Any], base_url: str
) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["agreements"], dependencies=[Depends(require_read)])
    agreements = registry.by_id()

    def known(agreement_id: str) -> None:
        if agreement_id not in agreements:
            raise HTTPException(404, detail="no such agreement")

    @router.get("/agreements", response_model=list[AgreementOut])
    async def board(
        area: Annotated[Area | None, Query()] = None,
        stage: Annotated[Stage | None, Query()] = None,
        stalled: Annotated[bool | None, Query()] = None,
    ) -> list[AgreementOut]:
        rows = [AgreementOut(**_row(s, registry)) for s in await watch.states()]
        return [
            r
            for r in rows
            if (area is None or r.area == area)
            and (stage is None or r.stage == stage or (stage == "setback" and r.setback))
            and (stalled is None or r.stalled == stalled)
        ]

    async def calendar(agreement_id: str | None) -> Response:
        """The signings (all-day events on the signing date) and stage events (a moment each) of
        one agreement, or of all; every text value is a TEXT (RFC 5545 3.3.11: commas,
        semicolons and line breaks escaped) without control characters."""
        cal = Calendar()
        cal.add("prodid", "-//Corridor//agreement stages//EN")
        cal.add("version", "2.0")
        # An X- property is written as given unless typed: a title with a comma came out raw, one
        # with a line break failed the whole answer.
        cal.add(
            "x-wr-calname", _text("Corridor: " + (agreements[agreement_id].title if agreement_id else "agreements"))
        )
        chosen = [agreements[agreement_id]] if agreement_id else registry.agreements
        for a in chosen:
            signed = CalendarEvent()
            signed.add("uid", f"signed-{a.id}@corridor")
            # DTSTAMP is the last change of the entry when a calendar has no METHOD (RFC 5545
            # 3.8.7.2): a fixed one, or every poll tells sync clients every event changed.
            signed.add("dtstamp", signing_moment(a))
            # A DATE start without DTEND is one whole day (RFC 5545 3.6.1): the signing day.
            signed.add("dtstart", a.signed_on)
            signed.add("summary", _text(f"{a.title}: signed"))
            signed.add("url", f"{base_url.rstrip('/')}/api/v1/agreements/{a.id}")
            cal.add_component(signed)
        events = await store.list_agreement_events(agreement_id=agreement_id, limit=CALENDAR_EVENTS)
        for e in events:
            entry = CalendarEvent()
            entry.add("uid", f"{e.id}@corridor")
            entry.add("dtstamp", e.at)
            # A moment, not a span: a DATE-TIME start without DTEND ends when it starts (RFC 5545
            # 3.6.1), where a DTEND equal to it is invalid (3.8.2.2: DTEND must be later).
            entry.add("dtstart", e.at)
            what = {"agreement.stage_changed": f"{e.before} → {e.after}", "agreement.setback": "setback"}
            entry.add("summary", _text(f"{e.title}: {what.get(e.kind, 'stalled')}"))
            entry.add("description", _text(e.detail))  # an item's title: stored ones may predate ingest's cleaning
            entry.add("url", f"{base_url.rstrip('/')}/api/v1/agreements/{e.agreement_id}")
            cal.add_component(entry)
        return Response(cal.to_ical(), media_type="text/calendar; charset=utf-8")

    calendar_doc: dict[int | str, dict[str, Any]] = {200: {"content": {"text/calendar": {}}}}

    @router.get("/agreements.ics", response_class=Response, responses=calendar_doc)
    async def all_calendar() -> Response:
        """Every agreement's signing and stage events, for calendar apps (RFC 5545)."""
        return await calendar(None)

    @router.get(
        "/agreements/{agreement_id}.ics", response_class=Response, responses={200: {"content": {"text/calendar": {}}}}
    )
    async def one_calendar(agreement_id: str) -> Response:
        known(agreement_id)
        return await calendar(agreement_id)

    @router.get("/agreements/{agreement_id}", response_model=AgreementDetail)
    async def detail(agreement_id: str) -> AgreementDetail:
        known(agreement_id)
        # One read of the sources for the state and for the sources shown beside it.
        sources = {s.id: s for s in await store.list_sources()}
        state = await watch.state(agreement_id, sources=sources)

        def source(source_id: str) -> SourceOut:
            s = sources.get(source_id)
            return SourceOut(
                id=source_id,
                name=s.name if s else None,
                country=s.country if s else None,
                official=bool(s and s.official),
            )

        a = state.agreement
        # From the signing, as the state counts (`items`): reports before it are no follow-through.
        query = EventQuery(agreement=agreement_id, since=signing_moment(a), limit=min(TIMELINE_ITEMS, MAX_PAGE))
        items = await store.list_items(query)
        return AgreementDetail(
            **_row(state, registry),
            parties=a.parties,
            commits_to=a.commits_to,
            registry_sources=a.sources,
            corroboration=[
                Corroboration(
                    stage=s.stage,
                    items=s.items,
                    sources=[source(i) for i in s.sources],
                    publishers=s.publishers,
                    supported=s.supported,
                    both_countries=s.both_countries,
                    official=s.official,
                    first_at=s.first_at,
                    last_at=s.last_at,
                )
                for s in state.supports.values()
            ],
            timeline=[timeline_item(i, agreement_id, source(i.source_id).name) for i in items],
            events=await store.list_agreement_events(agreement_id=agreement_id),
        )

    return router
