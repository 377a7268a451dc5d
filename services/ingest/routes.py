"""HTTP routes of ingest: /api/v1/sources — list with health, create, update, pause/resume,
delete, poll now."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.config import JsonDict

from services.ingest.htmllist import check_selectors
from services.ingest.sources import InvalidSource, add_source, poll_now, update_source
from shared.api import Body
from shared.errors import Conflict
from shared.logs import shown_url
from shared.models import LANGUAGE_TAG, Country, HtmlSelectors, Source, SourceKind
from shared.netguard import AddressPolicy
from shared.store import Store

AGGREGATOR = (
    "lists other publishers' stories (Google News): the publisher an entry names (RSS <source url>, "
    "Atom <source>) counts as its publisher for the agreement tracker; GDELT sources always do"
)


class SourceIn(Body):
    """Body of POST /api/v1/sources. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    url: str = Field(min_length=1, max_length=2048, description="feed, page or query URL (http or https)")
    name: str | None = Field(default=None, max_length=200)
    kind: SourceKind = Field(default="feed", description="feed (RSS/Atom/RDF/JSON Feed), html (list page), gdelt")
    language: str | None = Field(default=None, min_length=2, max_length=8, pattern=LANGUAGE_TAG)
    selectors: HtmlSelectors | None = Field(default=None, description="CSS selectors, required for kind=html")
    interval_s: float | None = Field(default=None, ge=60, le=86400, description="poll interval in seconds")
    country: Country | None = Field(default=None, description="where the publisher is (PK or KZ)")
    official: bool = Field(default=False, description="a government or state body's own channel")
    aggregator: bool = Field(default=False, description=AGGREGATOR)

    @field_validator("selectors")
    @classmethod
    def _parsable(cls, value: HtmlSelectors | None) -> HtmlSelectors | None:
        check_selectors(value)  # a selector selectolax cannot parse would fail every poll
        return value

    async def add(self, store: Store, policy: AddressPolicy, default_interval_s: float) -> Source:
        """Store this source (:func:`~services.ingest.sources.add_source`: its errors pass through);
        the API and the CLI both add sources this way."""
        return await add_source(
            store,
            policy,
            url=self.url,
            name=self.name,
            interval_s=self.interval_s or default_interval_s,
            kind=self.kind,
            language=self.language,
            selectors=self.selectors,
            country=self.country,
            official=self.official,
            aggregator=self.aggregator,
        )


def _non_nullable(schema: JsonDict) -> None:
    """Show an optional field as its value type only in the OpenAPI schema (``null`` refused)."""
    options = schema.pop("anyOf", None)
    if isinstance(options, list):
        schema.update(next(o for o in options if isinstance(o, dict) and o.get("type") != "null"))


class SourcePatch(Body):
    """Body of PATCH /api/v1/sources/{id}: only the fields given change.

    ``null`` clears ``name``, ``language``, ``country`` and (for a feed or GDELT source)
    ``selectors``; ``interval_s``, ``active``, ``official`` and ``aggregator`` always have a value on a source,
    so ``null`` for them is refused (422) rather than stored where no source could be read back.
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    language: str | None = Field(default=None, min_length=2, max_length=8, pattern=LANGUAGE_TAG)
    selectors: HtmlSelectors | None = None
    # None only as "not given": _not_null refuses null, and the schema shows them non-nullable.
    interval_s: float | None = Field(default=None, ge=60, le=86400, json_schema_extra=_non_nullable)
    active: bool | None = Field(default=None, json_schema_extra=_non_nullable)
    country: Country | None = None
    official: bool | None = Field(default=None, json_schema_extra=_non_nullable)
    aggregator: bool | None = Field(default=None, json_schema_extra=_non_nullable, description=AGGREGATOR)

    @field_validator("selectors")
    @classmethod
    def _parsable(cls, value: HtmlSelectors | None) -> HtmlSelectors | None:
        check_selectors(value)
        return value

    @field_validator("interval_s", "active", "official", "aggregator", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Runs only for fields given (defaults are not validated), so this refuses an explicit null.
        if value is None:
            raise ValueError("must not be null (leave the field out to keep its value)")
        return value

    def changes(self) -> dict[str, Any]:
        """The fields given, for :func:`~services.ingest.sources.update_source`, as plain values:
        ``selectors`` is a dict with every selector (as a source stores it), so the MongoDB
        adapter can ``$set`` it (BSON encodes no pydantic model) and SQLite's re-validation
        reads the same shape."""
        changes = self.model_dump(exclude_unset=True)
        if self.selectors is not None:
            # exclude_unset would also drop the selectors not given; a source stores them all.
            changes["selectors"] = self.selectors.model_dump()
        return changes


class SourceOut(BaseModel):
    """A source and its health."""

    id: str
    url: str
    name: str | None
    kind: SourceKind
    language: str | None
    selectors: HtmlSelectors | None
    note: str | None
    interval_s: float
    active: bool
    broken: bool
    created_at: datetime
    next_check_at: datetime
    last_fetch_at: datetime | None
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_status: str | None
    consecutive_errors: int
    last_error: str | None
    last_error_kind: str | None
    items_seen: int
    country: Country | None
    official: bool
    aggregator: bool

    @classmethod
    def of(cls, source: Source, *, whole_url: bool = False) -> SourceOut:
        """The source as an answer. Read routes (open to read keys, or to everyone with public
        reads) show its URL as logs do, query values masked: a feed URL may carry an access
        token. The admin's own answers (create, patch, pause, resume, poll) show it whole."""
        out = cls.model_validate(source.model_dump())
        return out if whole_url else out.model_copy(update={"url": shown_url(source.url)})


def _invalid(field: str, msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["body", field], "msg": msg, "type": "value_error"}])


def build_router(
    *,
    store: Store,
    policy: AddressPolicy,
    default_interval_s: float,
    on_added: Callable[[], None],
    require_key: Callable[..., Any],
    require_read: Callable[..., Any],
) -> APIRouter:
    """Routes for sources; ``on_added`` wakes the poller so a new or resumed source is polled at once."""
    router = APIRouter(prefix="/api/v1/sources", tags=["sources"])
    admin = [Depends(require_key)]

    async def found(source_id: str) -> Source:
        source = await store.get_source(source_id)
        if source is None:
            raise HTTPException(404, detail="no such source")
        return source

    @router.get("", response_model=list[SourceOut], dependencies=[Depends(require_read)])
    async def list_sources() -> list[SourceOut]:
        return [SourceOut.of(s) for s in await store.list_sources()]

    @router.post("", response_model=SourceOut, status_code=201, dependencies=admin)
    async def create_source(body: SourceIn) -> SourceOut:
        try:
            source = await body.add(store, policy, default_interval_s)
        except InvalidSource as exc:
            raise _invalid("selectors" if "selectors" in str(exc) else "url", str(exc)) from exc
        except Conflict as exc:
            raise HTTPException(409, detail=str(exc)) from exc
        on_added()
        return SourceOut.of(source, whole_url=True)

    @router.get("/{source_id}", response_model=SourceOut, dependencies=[Depends(require_read)])
    async def get_source(source_id: str) -> SourceOut:
        return SourceOut.of(await found(source_id))

    @router.patch("/{source_id}", response_model=SourceOut, dependencies=admin)
    async def patch_source(source_id: str, body: SourcePatch) -> SourceOut:
        source = await found(source_id)
        changes = body.changes()
        if source.kind == "html" and "selectors" in changes and changes["selectors"] is None:
            raise _invalid("selectors", "an html source needs selectors")
        updated = await update_source(store, source_id, changes)
        on_added()
        return SourceOut.of(updated or source, whole_url=True)

    @router.post("/{source_id}/pause", response_model=SourceOut, dependencies=admin)
    async def pause_source(source_id: str) -> SourceOut:
        await found(source_id)
        return SourceOut.of(
            await update_source(store, source_id, {"active": False}) or await found(source_id), whole_url=True
        )

    @router.post("/{source_id}/resume", response_model=SourceOut, dependencies=admin)
    async def resume_source(source_id: str) -> SourceOut:
        await found(source_id)
        updated = await update_source(store, source_id, {"active": True})
        on_added()
        return SourceOut.of(updated or await found(source_id), whole_url=True)

    @router.post("/{source_id}/poll", response_model=SourceOut, status_code=202, dependencies=admin)
    async def poll_source(source_id: str) -> SourceOut:
        await found(source_id)
        updated = await poll_now(store, source_id)
        on_added()
        return SourceOut.of(updated or await found(source_id), whole_url=True)

    @router.delete("/{source_id}", status_code=204, dependencies=admin)
    async def delete_source(source_id: str) -> Response:
        if not await store.delete_source(source_id):
            raise HTTPException(404, detail="no such source")
        return Response(status_code=204)

    return router
