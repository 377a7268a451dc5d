"""The store contract every adapter honours (tests/contract/test_store_contract.py checks it).

Writes are idempotent on natural ids, so a message handled twice has one effect:
``upsert_item`` replaces by item id, ``insert_delivery`` refuses a second delivery for the same
(subscription, item, channel). Claims (``claim_due_source``, ``claim_delivery``,
``claim_due_delivery``) are single atomic find-and-modify operations with a lease, so two
replicas never work on one record at once and a crashed worker's lease simply runs out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from shared.models import ClassifiedItem, Delivery, DeliveryStatus, DuplicateRef, Source, Subscription

MAX_PAGE = 200  # API pages
MAX_SCAN = 5000  # internal scans (a digest's queued deliveries)


@dataclass(frozen=True)
class EventQuery:
    """Filters for listing events. Sorted by ``sort`` (time: newest first; score: best first,
    then newest), ties broken by id; ``after`` is the (sort value, id) of the last row seen."""

    sector: str | None = None
    sectors: tuple[str, ...] = ()  # any of; combined with ``sector``
    country: str | None = None
    bilateral: bool | None = None
    source_id: str | None = None
    language: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_score: float | None = None
    q_tokens: tuple[str, ...] = ()  # all of (see shared.text.search_tokens)
    sort: Literal["time", "score"] = "time"
    limit: int = 50
    after: tuple[datetime | float, str] | None = None

    @property
    def any_sectors(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*((self.sector,) if self.sector else ()), *self.sectors)))


@dataclass(frozen=True)
class SectorCount:
    """Items per sector per ISO week (``week`` is the Monday, YYYY-MM-DD)."""

    sector: str
    week: str
    count: int


class Store(Protocol):
    """Persistent state of Corridor."""

    async def start(self) -> None:
        """Connect and create indexes (idempotent)."""

    async def close(self) -> None:
        """Release connections."""

    async def ping(self) -> bool:
        """True when the store answers (for /readyz)."""

    # sources
    async def insert_source(self, source: Source) -> None:
        """Add a source; :class:`~shared.errors.Conflict` if its URL is already known."""

    async def get_source(self, source_id: str) -> Source | None: ...

    async def list_sources(self) -> list[Source]: ...

    async def claim_due_source(self, now: datetime, lease_until: datetime) -> Source | None:
        """Atomically lease one active source whose next check is due and whose lease expired."""

    async def update_source(self, source_id: str, fields: dict[str, Any]) -> None:
        """Set the given fields of a source (fetch results, health, next check, lease)."""

    async def delete_source(self, source_id: str) -> bool:
        """Delete; False if there was none. Items already ingested stay."""

    # ingest dedupe
    async def seen_hashes(self, ids: Iterable[str]) -> dict[str, str]:
        """For the ids already seen, the content hash recorded last."""

    async def mark_seen(self, hashes: dict[str, str], now: datetime) -> None:
        """Record (or update) the content hash of each id (idempotent)."""

    async def claim_keys(self, keys: dict[str, str], now: datetime) -> dict[str, str]:
        """For each dedupe key (canonical URL, fingerprint band) → candidate item id, insert it if
        absent; return key → the item id that owns it (the first one ever to claim it)."""

    async def add_duplicate(self, ref: DuplicateRef) -> None:
        """Record that ``ref.id`` is a copy of ``ref.item_id`` (idempotent)."""

    async def list_duplicates(self, item_id: str) -> list[DuplicateRef]:
        """Copies of the item, oldest first."""

    # items (events)
    async def upsert_item(self, item: ClassifiedItem) -> None:
        """Insert or replace the item with this id."""

    async def upsert_items(self, items: list[ClassifiedItem]) -> None:
        """Upsert many items in one round trip (bulk loads, reclassification)."""

    async def get_item(self, item_id: str) -> ClassifiedItem | None: ...

    async def list_items(self, query: EventQuery) -> list[ClassifiedItem]:
        """Items matching ``query`` in its order, at most ``query.limit``."""

    async def sector_counts(self, *, country: str | None = None, since: datetime | None = None) -> list[SectorCount]:
        """Items per sector per week (by the time items are listed under)."""

    async def duplicates_of(self, item_ids: Iterable[str]) -> dict[str, list[DuplicateRef]]:
        """For each item id that has copies, its duplicates (oldest first)."""

    async def refresh_stats(self, max_days: int) -> int:
        """Bring up to ``max_days`` stale summaries of stored events up to date (the per-day
        statistics of the MongoDB-wire store); how many. Queries are right either way; fresh
        summaries make them read less. An adapter without summaries returns 0."""

    # subscriptions
    async def insert_subscription(self, subscription: Subscription) -> None: ...

    async def get_subscription(self, subscription_id: str) -> Subscription | None: ...

    async def list_subscriptions(self, *, active_only: bool = False) -> list[Subscription]: ...

    async def delete_subscription(self, subscription_id: str) -> bool:
        """Delete; False if there was none."""

    async def update_subscription(self, subscription_id: str, fields: dict[str, Any]) -> None:
        """Set the given fields of a subscription."""

    # deliveries
    async def insert_delivery(self, delivery: Delivery) -> bool:
        """Insert; False (and no change) when that delivery id already exists."""

    async def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    async def claim_delivery(self, delivery_id: str, now: datetime, lease_until: datetime) -> Delivery | None:
        """Lease a pending delivery whose lease has expired, whatever its next attempt time."""

    async def claim_due_delivery(self, now: datetime, lease_until: datetime) -> Delivery | None:
        """Lease one pending delivery whose next attempt is due and whose lease has expired."""

    async def update_delivery(self, delivery_id: str, fields: dict[str, Any]) -> None: ...

    async def list_deliveries(
        self,
        *,
        subscription_id: str | None = None,
        status: DeliveryStatus | None = None,
        item_id: str | None = None,
        digest_period: str | None = None,
        limit: int = 50,
    ) -> list[Delivery]:
        """Newest first, at most ``limit`` (capped at MAX_SCAN)."""
