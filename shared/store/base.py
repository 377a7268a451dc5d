"""The store contract every adapter honours (tests/contract/test_store_contract.py checks it).

Writes are idempotent on natural ids, so a message handled twice has one effect:
``upsert_item`` replaces by item id, ``insert_delivery`` refuses a second delivery for the same
(subscription, item, channel). Claims (``claim_due_source``, ``claim_delivery``,
``claim_due_delivery``) are single atomic find-and-modify operations with a lease, so two
replicas never work on one record at once and a crashed worker's lease simply runs out.

Errors: an adapter raises only :class:`~shared.errors.StoreError` subclasses of its own —
:class:`~shared.errors.Conflict` for a taken unique key, :class:`~shared.errors.StoreUnavailable`
when its server or file cannot answer (:func:`translate_errors` wraps every public method) — so
no driver exception type is known outside ``shared/store``.

Expiry: ingest's seen marks and dedupe keys are kept for the store's ``retention_s`` after they
were last written, then forgotten (a TTL index on MongoDB); an entry still in its feed after that
is published again, which downstream idempotency absorbs (same item id, same delivery ids).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, ParamSpec, Protocol, TypeVar

from shared.errors import StoreUnavailable
from shared.models import (
    AgreementEvent,
    ClassifiedItem,
    Delivery,
    DeliveryStatus,
    DuplicateRef,
    Source,
    Stage,
    Subscription,
)

MAX_PAGE = 200  # API pages
MAX_SCAN = 5000  # internal scans (a digest's queued deliveries)
DEFAULT_RETENTION_S = 180 * 86400.0  # seen marks and dedupe keys

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)


def translate_errors(is_unavailable: Callable[[BaseException], bool]) -> Callable[[C], C]:
    """Class decorator for an adapter: every public coroutine method re-raises the driver errors
    that ``is_unavailable`` accepts as :class:`StoreUnavailable` (the cause chained). Other
    errors pass unchanged: a failed query that is not an outage is a bug and must be loud."""

    def guard(method: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(method)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return await method(*args, **kwargs)
            except StoreUnavailable:
                raise
            except Exception as exc:
                if is_unavailable(exc):
                    raise StoreUnavailable(f"{method.__name__}: {type(exc).__name__}: {exc}") from exc
                raise

        return guarded

    return lambda cls: wrap_public_coroutines(cls, guard)


def wrap_public_coroutines(cls: C, wrap: Callable[[Any], Any], *, skip: frozenset[str] = frozenset()) -> C:
    """Replace each public coroutine method of ``cls`` (not those named in ``skip``) by
    ``wrap(method)``: the walk the adapters' class decorators share."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and name not in skip and inspect.iscoroutinefunction(member):
            setattr(cls, name, wrap(member))
    return cls


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
    agreement: str | None = None  # linked to this agreement
    sort: Literal["time", "score"] = "time"
    limit: int = 50
    after: tuple[datetime | float, str] | None = None

    @property
    def any_sectors(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*((self.sector,) if self.sector else ()), *self.sectors)))


@dataclass(frozen=True)
class AgreementActivity:
    """Items linked to one agreement, reporting one stage, from one source and one publisher
    (``publisher``: the items' own, :attr:`~shared.models.RawItem.publisher`, when the source
    aggregates others; None for the source's own items)."""

    agreement_id: str
    stage: Stage | None
    source_id: str
    items: int
    first_at: datetime
    last_at: datetime
    publisher: str | None = None


@dataclass(frozen=True)
class SectorCount:
    """Items per sector per ISO week (``week`` is the Monday, YYYY-MM-DD)."""

    sector: str
    week: str
    count: int


DUE_COUNT_CAP = 10_000  # a queue deeper than this reads as this: the gauge stays cheap to read


class Store(Protocol):
    """Persistent state of Corridor."""

    async def start(self) -> None:
        """Connect and create indexes (idempotent)."""

    async def close(self) -> None:
        """Release connections."""

    async def ping(self) -> bool:
        """True when the store answers within a couple of seconds (for /readyz); never raises."""

    async def migrate(self) -> dict[str, int]:
        """Move data written by an earlier layout into the current one (idempotent, resumable; the
        runtime runs it after ``start``); how many records were moved, by kind."""

    # sources
    async def insert_source(self, source: Source) -> None:
        """Add a source; :class:`~shared.errors.Conflict` if its URL is already known."""

    async def get_source(self, source_id: str) -> Source | None: ...

    async def list_sources(self) -> list[Source]: ...

    async def claim_due_source(self, now: datetime, lease_until: datetime) -> Source | None:
        """Atomically lease one active source whose next check is due and whose lease expired."""

    async def count_due_sources(self, now: datetime) -> int:
        """How many sources ``claim_due_source`` could lease now: the ingest queue's depth, read
        through the same index, counted up to :data:`DUE_COUNT_CAP`."""

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

    async def take_over_keys(
        self, keys: dict[str, tuple[str, str]], claimed_before: datetime, now: datetime
    ) -> set[str]:
        """For each dedupe key → (the owner it was found with, a new owner): give the key to the
        new owner, claimed at ``now``, if that owner still holds it and claimed it before
        ``claimed_before``, atomically per key. Return the keys the new owner holds afterwards.
        Ingest uses it for a claim whose item was never published (its poll ended first)."""

    async def add_duplicates(self, refs: list[DuplicateRef]) -> None:
        """Record that each ``ref.id`` is a copy of ``ref.item_id`` (idempotent, one round trip)."""

    async def list_duplicates(self, item_id: str) -> list[DuplicateRef]:
        """Copies of the item, oldest first."""

    # items (events)
    async def upsert_item(self, item: ClassifiedItem) -> None:
        """Insert or replace the item with this id."""

    async def upsert_items(self, items: list[ClassifiedItem]) -> None:
        """Upsert many items in one round trip (bulk loads, reclassification)."""

    async def replace_item_if(self, item: ClassifiedItem, revision: int, content_hash: str) -> bool:
        """Replace the stored item with ``item`` only while the stored one is still that
        ``revision`` and ``content_hash``, checked and written in one step; False when it is not
        (a newer revision was stored meanwhile) or there is none. Reclassification writes this
        way, so it never takes back an edit the live classifier stored while it ran."""

    async def get_item(self, item_id: str) -> ClassifiedItem | None: ...

    async def get_items(self, item_ids: Iterable[str]) -> dict[str, ClassifiedItem]:
        """The stored items among ``item_ids``, by id (one round trip)."""

    async def list_items(self, query: EventQuery) -> list[ClassifiedItem]:
        """Items matching ``query`` in its order, at most ``query.limit``."""

    async def sector_counts(self, *, country: str | None = None, since: datetime | None = None) -> list[SectorCount]:
        """Items per sector per week (by the time items are listed under)."""

    async def duplicates_of(self, item_ids: Iterable[str]) -> dict[str, list[DuplicateRef]]:
        """For each item id that has copies, its duplicates (oldest first)."""

    # agreements
    async def agreement_activity(
        self, agreement_id: str | None = None, *, since: datetime | None = None
    ) -> list[AgreementActivity]:
        """Linked items counted by (agreement, stage, source, publisher), of one agreement or all;
        with ``since``, only the items listed at or after it (the tracker passes the signing: a
        report from before it is no follow-through, and a source's row must not carry it)."""

    async def agreement_copies(
        self, source_ids: Collection[str], agreement_id: str | None = None, *, since: datetime | None = None
    ) -> list[AgreementActivity]:
        """The copies (:class:`~shared.models.DuplicateRef`) that the sources ``source_ids`` (the
        tracker asks for the official ones) made of linked items, counted like
        :meth:`agreement_activity` but by the *copy's* source, with the item's stage; first and
        last are when the copies were seen, and ``publisher`` is None. ``since`` bounds the items
        (when they are listed), as there, and the copies (when they were seen: a copy from before
        the signing is no follow-through either). Read from those sources' copies since then (an
        index on the copy's source and time), so it costs what they copied, not what the
        agreements hold."""

    async def get_agreement_stage(self, agreement_id: str) -> Stage | None:
        """The stage last recorded for the agreement (None before any)."""

    async def swap_agreement_stage(self, agreement_id: str, expected: Stage | None, new: Stage) -> bool:
        """Record ``new`` only if the recorded stage is still ``expected`` (atomic); whether it was."""

    async def insert_agreement_event(self, event: AgreementEvent) -> bool:
        """Insert; False (and no change) when an event with that id exists."""

    async def get_agreement_event(self, event_id: str) -> AgreementEvent | None: ...

    async def list_agreement_events(
        self, *, agreement_id: str | None = None, unpublished_before: datetime | None = None, limit: int = 50
    ) -> list[AgreementEvent]:
        """Newest first; with ``unpublished_before``, only those not marked published by then."""

    async def mark_agreement_event_published(self, event_id: str, at: datetime) -> None: ...

    # subscriptions
    async def insert_subscription(self, subscription: Subscription) -> None: ...

    async def get_subscription(self, subscription_id: str) -> Subscription | None: ...

    async def list_subscriptions(self, *, active_only: bool = False) -> list[Subscription]: ...

    async def delete_subscription(self, subscription_id: str) -> bool:
        """Delete; False if there was none."""

    async def update_subscription(
        self, subscription_id: str, fields: dict[str, Any], *, unless_reason: str | None = None
    ) -> bool:
        """Set the given fields of a subscription; False when there is none. With
        ``unless_reason``, a subscription disabled for that reason is left as it is (False): the
        check and the write are one step, so a recipient's unsubscribe that lands between an
        admin's read and write is never undone."""

    # deliveries
    async def insert_delivery(self, delivery: Delivery) -> bool:
        """Insert; False (and no change) when that delivery id already exists."""

    async def insert_deliveries(self, deliveries: list[Delivery]) -> set[str]:
        """Insert many in one round trip; the ids that were new (existing ones are left as they are)."""

    async def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    async def claim_delivery(self, delivery_id: str, now: datetime, lease_until: datetime) -> Delivery | None:
        """Lease a pending delivery whose lease has expired, whatever its next attempt time."""

    async def claim_due_delivery(
        self, now: datetime, lease_until: datetime, *, exclude_subscriptions: Collection[str] = ()
    ) -> Delivery | None:
        """Lease one pending delivery whose next attempt is due and whose lease has expired, the
        longest due first, skipping those of ``exclude_subscriptions`` (subscriptions the caller
        already has enough attempts in flight for)."""

    async def update_delivery(self, delivery_id: str, fields: dict[str, Any]) -> None: ...

    async def finish_delivery(self, delivery_id: str, lease_until: datetime, fields: dict[str, Any]) -> bool:
        """Update the delivery only while it still holds the lease ``lease_until`` (as a claim
        returned it; compared to the millisecond); whether it did. An attempt that outlived its
        lease must not overwrite the record another worker has claimed since."""

    async def list_deliveries(
        self,
        *,
        subscription_id: str | None = None,
        status: DeliveryStatus | None = None,
        item_id: str | None = None,
        digest_period: str | None = None,
        limit: int = 50,
        before: tuple[datetime, str] | None = None,
    ) -> list[Delivery]:
        """Newest first, at most ``limit`` (capped at MAX_SCAN); with ``before`` (a delivery's
        ``created_at`` and id), only those listed after it: the next page."""
