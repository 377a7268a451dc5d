"""HTTP routes of ingest: /api/v1/sources."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from services.ingest.sources import InvalidSource, add_source
from shared.errors import Conflict
from shared.models import Source
from shared.netguard import AddressPolicy
from shared.store import Store


class SourceIn(BaseModel):
    """Body of POST /api/v1/sources. Unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    url: str = Field(min_length=1, max_length=2048, description="feed URL (http or https)")
    name: str | None = Field(default=None, max_length=200)
    interval_s: float | None = Field(default=None, ge=60, le=86400, description="poll interval in seconds")


class SourceOut(BaseModel):
    """A source and its health."""

    id: str
    url: str
    name: str | None
    interval_s: float
    active: bool
    created_at: datetime
    next_check_at: datetime
    last_fetch_at: datetime | None
    last_success_at: datetime | None
    last_status: str | None
    consecutive_errors: int
    last_error: str | None
    last_error_kind: str | None
    items_seen: int

    @classmethod
    def of(cls, source: Source) -> SourceOut:
        return cls.model_validate(source.model_dump())


def build_router(
    *,
    store: Store,
    policy: AddressPolicy,
    default_interval_s: float,
    on_added: Callable[[], None],
    require_key: Callable[..., Any],
) -> APIRouter:
    """Routes for sources; ``on_added`` wakes the poller so a new source is polled at once."""
    router = APIRouter(prefix="/api/v1/sources", tags=["sources"])

    @router.get("", response_model=list[SourceOut])
    async def list_sources() -> list[SourceOut]:
        return [SourceOut.of(s) for s in await store.list_sources()]

    @router.post("", response_model=SourceOut, status_code=201, dependencies=[Depends(require_key)])
    async def create_source(body: SourceIn) -> SourceOut:
        try:
            source = await add_source(
                store, policy, url=body.url, name=body.name, interval_s=body.interval_s or default_interval_s
            )
        except InvalidSource as exc:
            raise HTTPException(422, detail=[{"loc": ["body", "url"], "msg": str(exc), "type": "value_error"}]) from exc
        except Conflict as exc:
            raise HTTPException(409, detail=str(exc)) from exc
        on_added()
        return SourceOut.of(source)

    @router.get("/{source_id}", response_model=SourceOut)
    async def get_source(source_id: str) -> SourceOut:
        source = await store.get_source(source_id)
        if source is None:
            raise HTTPException(404, detail="no such source")
        return SourceOut.of(source)

    return router
