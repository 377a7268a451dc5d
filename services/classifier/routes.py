"""HTTP routes of the classifier: /api/v1/events (the stored, classified items)."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from shared.models import ClassifiedItem, Country
from shared.store import EventQuery, Store
from shared.store.base import MAX_PAGE


class EventPage(BaseModel):
    """One page of events, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[ClassifiedItem]
    next_cursor: str | None


def _encode_cursor(item: ClassifiedItem) -> str:
    raw = json.dumps([item.sort_at.isoformat(), item.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, item_id = json.loads(raw)
        return datetime.fromisoformat(at), str(item_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise HTTPException(
            422, detail=[{"loc": ["query", "cursor"], "msg": "invalid cursor", "type": "value_error"}]
        ) from exc


def build_router(*, store: Store, sector_ids: list[str]) -> APIRouter:
    """Routes for events; ``sector_ids`` are the valid values of the sector filter."""
    router = APIRouter(prefix="/api/v1/events", tags=["events"])

    @router.get("", response_model=EventPage)
    async def list_events(
        sector: Annotated[str | None, Query(max_length=64, description="sector id")] = None,
        country: Annotated[Country | None, Query(description="PK or KZ")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
    ) -> EventPage:
        if sector is not None and sector not in sector_ids:
            raise HTTPException(
                422,
                detail=[
                    {"loc": ["query", "sector"], "msg": f"unknown sector; one of {sector_ids}", "type": "value_error"}
                ],
            )
        after = _decode_cursor(cursor) if cursor else None
        items = await store.list_items(EventQuery(sector=sector, country=country, limit=limit, after=after))
        next_cursor = _encode_cursor(items[-1]) if len(items) == limit else None
        return EventPage(items=items, next_cursor=next_cursor)

    @router.get("/{event_id}", response_model=ClassifiedItem)
    async def get_event(event_id: str) -> ClassifiedItem:
        item = await store.get_item(event_id)
        if item is None:
            raise HTTPException(404, detail="no such event")
        return item

    return router
