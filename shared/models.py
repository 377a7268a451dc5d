"""Domain records shared by the services, the bus payloads and the store.

Documents avoid what our MongoDB-wire test server (FerretDB 1.24) lacks: no dotted keys and no
arrays of arrays. Every datetime is aware UTC with millisecond precision (see timeutil).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.timeutil import to_utc_ms, utcnow

Country = Literal["PK", "KZ"]
Channel = Literal["webhook", "email"]
DeliveryStatus = Literal["pending", "delivered", "failed"]


def stable_id(prefix: str, *parts: str) -> str:
    """A short deterministic id: the same parts always give the same id."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]
    return f"{prefix}_{digest}"


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @field_validator("*", mode="after")
    @classmethod
    def _utc_ms(cls, value: object) -> object:
        return to_utc_ms(value) if isinstance(value, datetime) else value


class Source(_Record):
    """A polled feed and its health."""

    id: str
    url: str
    name: str | None = None
    kind: Literal["feed"] = "feed"
    interval_s: float
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    etag: str | None = None
    last_modified: str | None = None
    next_check_at: datetime = Field(default_factory=utcnow)
    lease_until: datetime | None = None
    last_fetch_at: datetime | None = None
    last_success_at: datetime | None = None
    last_status: Literal["ok", "not_modified", "error"] | None = None
    consecutive_errors: int = 0
    last_error: str | None = None
    last_error_kind: str | None = None
    items_seen: int = 0


class RawItem(_Record):
    """Payload of corridor.items.raw.v1: one normalised feed entry."""

    id: str
    source_id: str
    source_url: str
    url: str | None = None
    title: str = ""
    summary: str = ""
    author: str | None = None
    published_at: datetime | None = None
    fetched_at: datetime

    @property
    def sort_at(self) -> datetime:
        """The time the event is listed under: published time, else fetch time."""
        return self.published_at or self.fetched_at


class SectorScore(BaseModel):
    """One sector the item concerns, with its score and the matched terms."""

    id: str
    score: float
    terms: list[str]


class Evidence(BaseModel):
    """One matched term and the snippet around it, for a sector or a country."""

    kind: Literal["sector", "country"]
    label: str
    term: str
    snippet: str


class ClassifiedItem(RawItem):
    """Payload of corridor.items.classified.v1 and the stored event."""

    sectors: list[str] = Field(default_factory=list)
    sector_scores: list[SectorScore] = Field(default_factory=list)
    countries: list[Country] = Field(default_factory=list)
    bilateral: bool = False
    evidence: list[Evidence] = Field(default_factory=list)
    classifier_version: str
    classified_at: datetime = Field(default_factory=utcnow)


class Subscription(_Record):
    """Who wants which alerts, and where. ``secret`` is never returned after creation."""

    id: str
    channel: Channel
    webhook_url: str | None = None
    email: str | None = None
    secret: str | None = None
    sectors: list[str] = Field(default_factory=list)
    countries: list[Country] = Field(default_factory=list)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)

    def matches(self, item: ClassifiedItem) -> bool:
        """True when the item is in any wanted sector and concerns any wanted country.

        An empty filter means "any"; but an item in no sector never matches a sector filter.
        """
        if not self.active:
            return False
        if self.sectors and not set(self.sectors) & set(item.sectors):
            return False
        return not (self.countries and not set(self.countries) & set(item.countries))


class Delivery(_Record):
    """One alert for one subscription and one item on one channel; unique on that triple."""

    id: str
    subscription_id: str
    item_id: str
    channel: Channel
    status: DeliveryStatus = "pending"
    attempts: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    next_attempt_at: datetime = Field(default_factory=utcnow)
    lease_until: datetime | None = None
    last_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = None

    @staticmethod
    def make_id(subscription_id: str, item_id: str, channel: str) -> str:
        """The delivery id, also the webhook-id: stable across retries and restarts."""
        return stable_id("msg", subscription_id, item_id, channel)


class AlertPayload(BaseModel):
    """Payload of corridor.alerts.v1: a delivery to attempt, with the item it is about."""

    delivery_id: str
    subscription_id: str
    channel: Channel
    item: ClassifiedItem
