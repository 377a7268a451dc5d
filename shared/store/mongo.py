"""MongoDB adapter of the store contract, on PyMongo's async API, written for MongoDB as it is.

One collection per kind of record, each with the indexes its query shapes need (equality fields
first, then the sort field); tests/contract/test_query_plans.py runs every shape the code issues
through ``explain()`` and fails on a collection scan.

============== ================================================ ===================================
collection     ``_id`` and indexes                              queries
============== ================================================ ===================================
sources        source id; ``url`` unique; (active, next_check)  claim the most overdue source
seen           item id; TTL on ``seen_at``                      seen marks of a poll's entries
dedupe_keys    dedupe key; TTL on ``at``                        first owner of a story key
duplicates     the copy's item id; (item_id, seen_at, _id);     copies of a page of events;
               (source_id, seen_at)                             official sources' copies (tracker)
events         item id; see :mod:`shared.store.mongo_events`    the events API, timelines
subscriptions  subscription id; (active, created_at, _id),        active subscriptions, list
               (created_at, _id)
agreement_*    stages: agreement id; events: event id,          the tracker: recorded stages (one
               (agreement_id, at, _id), (at, _id),               atomic swap), its events
               (published_at, at)
deliveries     delivery id; (status, next_attempt_at) and one   claim the most overdue delivery;
               per /deliveries filter, each + (created_at, _id) list newest first
============== ================================================ ===================================

Claims are one ``find_one_and_update`` each: the filter says "due and not leased", the update
sets the lease, and the server applies both atomically, so of two replicas only one gets the
document. A crashed worker's lease simply runs out.

No caller's cancellation reaches the driver: every public method runs shielded
(:mod:`shared.store.shielding` says why: on Python 3.11 a cancellation at the wrong moment can
leave the client's topology lock held for good), and the bounds are the client's own
(server selection, socket, and ``pymongo.timeout`` for the readiness ping).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any, cast

import pymongo
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, InsertOne, ReturnDocument, UpdateOne
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

from shared.errors import Conflict
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
from shared.store.base import (
    DEFAULT_RETENTION_S,
    DUE_COUNT_CAP,
    MAX_PAGE,
    MAX_SCAN,
    AgreementActivity,
    EventQuery,
    SectorCount,
    translate_errors,
)
from shared.store.mongo_events import DUPLICATE_KEY, EventCollection, insert_or_replace, linked_filter
from shared.store.mongo_indexes import INDEX_OPTIONS_CONFLICT, ensure_index, retire_index
from shared.store.mongo_migrate import migrate_layouts
from shared.store.shielding import ShieldedCalls, shield_calls

SERVER_SELECTION_TIMEOUT_MS = 10_000
SOCKET_TIMEOUT_MS = 30_000
PING_TIMEOUT_S = 1.5  # pymongo's own deadline (not a cancellation); under /readyz's 2 s
CLOSE_DRAIN_S = 2.0  # how long close() lets calls whose callers left run on
_BY_RECENT = [("created_at", DESCENDING), ("_id", DESCENDING)]


def _doc(model: Source | Subscription | Delivery | DuplicateRef | AgreementEvent) -> dict[str, Any]:
    doc = model.model_dump(mode="python")
    doc["_id"] = doc.pop("id")
    return doc


def _undoc(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    doc["id"] = doc.pop("_id")
    return doc


def _lease_free(now: datetime) -> dict[str, Any]:
    # Matches a null, missing or expired lease in one predicate (no $or, so the index on the
    # claim's other fields stays usable).
    return {"$not": {"$gt": now}}


def is_unavailable(exc: BaseException) -> bool:
    """Driver errors that mean "the server cannot answer now", not "this request is wrong"."""
    if isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError):
        return True
    return isinstance(exc, PyMongoError) and exc.has_error_label("RetryableWriteError")


def _only_duplicates(exc: BulkWriteError) -> list[int]:
    """The indexes of the documents a bulk insert refused as duplicates; re-raise anything else."""
    errors = exc.details.get("writeErrors", [])
    if any(e.get("code") != DUPLICATE_KEY for e in errors) or exc.details.get("writeConcernErrors"):
        raise exc
    return [int(e["index"]) for e in errors]


@shield_calls(lambda store: store._calls)
@translate_errors(is_unavailable)
class MongoStore:
    """The :class:`~shared.store.base.Store` contract on MongoDB (see the module docstring)."""

    def __init__(
        self,
        uri: str,
        database: str,
        *,
        socket_timeout_ms: int = SOCKET_TIMEOUT_MS,
        server_selection_timeout_ms: int = SERVER_SELECTION_TIMEOUT_MS,
        retention_s: float = DEFAULT_RETENTION_S,
    ) -> None:
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            uri,
            tz_aware=True,
            serverSelectionTimeoutMS=server_selection_timeout_ms,
            socketTimeoutMS=socket_timeout_ms,
            connectTimeoutMS=server_selection_timeout_ms,
            # Acknowledged means journaled: consumers commit their offsets once the store answers,
            # so a write must survive the store being killed right after. On a replica set,
            # majority is what survives failover. (The test server keeps this promise only with
            # --sync-on-commit; see deploy/secantus.sh and tests/faults/test_store_durability.py.)
            w="majority",
            journal=True,
        )
        self.db = self._client[database]
        self._retention_s = int(retention_s)
        self._calls = ShieldedCalls()  # see shared/store/shielding.py: no cancellation reaches the driver
        self._sources = self.db["sources"]
        self._seen = self.db["seen"]
        self._keys = self.db["dedupe_keys"]
        self._duplicates = self.db["duplicates"]
        self._subscriptions = self.db["subscriptions"]
        self._deliveries = self.db["deliveries"]
        self._events = EventCollection(self.db["events"])
        self._stages = self.db["agreement_stages"]
        self._agreement_events = self.db["agreement_events"]

    async def start(self) -> None:
        await ensure_index(self._sources, "url", unique=True, name="url_unique")
        await ensure_index(self._sources, [("active", ASCENDING), ("next_check_at", ASCENDING)], name="due")
        await ensure_index(self._sources, [("created_at", ASCENDING), ("_id", ASCENDING)], name="created")
        await self._expire(self._seen, "seen_at")
        await self._expire(self._keys, "at")
        await ensure_index(
            self._duplicates, [("item_id", ASCENDING), ("seen_at", ASCENDING), ("_id", ASCENDING)], name="by_item"
        )
        await ensure_index(self._duplicates, [("source_id", ASCENDING), ("seen_at", ASCENDING)], name="by_source")
        # "active" was (active, created_at), which cannot give the (created_at, _id) order.
        await ensure_index(
            self._subscriptions,
            [("active", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)],
            name="active_created",
        )
        await retire_index(self._subscriptions, "active")
        await ensure_index(self._subscriptions, [("created_at", ASCENDING), ("_id", ASCENDING)], name="created")
        await ensure_index(self._deliveries, [("status", ASCENDING), ("next_attempt_at", ASCENDING)], name="due")
        for name, keys in (
            ("recent", []),
            ("by_subscription", ["subscription_id"]),
            ("by_subscription_status", ["subscription_id", "status"]),
            ("by_item", ["item_id"]),
            ("by_status", ["status"]),
        ):
            await ensure_index(self._deliveries, [*((k, ASCENDING) for k in keys), *_BY_RECENT], name=name)
        await self._events.create_indexes()
        # "by_agreement" was (agreement_id, at): ties on at came back in insertion order.
        await ensure_index(
            self._agreement_events,
            [("agreement_id", ASCENDING), ("at", DESCENDING), ("_id", DESCENDING)],
            name="by_agreement_time",
        )
        await retire_index(self._agreement_events, "by_agreement")
        await ensure_index(self._agreement_events, [("at", DESCENDING), ("_id", DESCENDING)], name="recent")
        await ensure_index(self._agreement_events, [("published_at", ASCENDING), ("at", ASCENDING)], name="unpublished")

    async def _expire(self, collection: Any, field: str) -> None:
        """A TTL index on ``field``; a changed retention is applied to the existing index."""
        try:
            await collection.create_index(field, expireAfterSeconds=self._retention_s, name="expiry")
        except OperationFailure as exc:
            if exc.code not in INDEX_OPTIONS_CONFLICT:
                raise
            await self.db.command(
                "collMod",
                collection.name,
                index={"name": "expiry", "expireAfterSeconds": self._retention_s},
            )

    async def migrate(self) -> dict[str, int]:
        return await migrate_layouts(self.db, self._events)

    async def close(self) -> None:
        # Calls whose callers were cancelled run on to their own end (bounded), then the client
        # closes under whatever is left.
        await self._calls.drain(CLOSE_DRAIN_S)
        await self._client.close()

    async def ping(self) -> bool:
        # pymongo's own deadline, never asyncio.timeout: a cancellation must not reach the
        # driver (shared/store/shielding.py).
        try:
            with pymongo.timeout(PING_TIMEOUT_S):
                await self._client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    async def _claim(
        self, collection: Any, flt: dict[str, Any], lease_until: datetime, sort: list[tuple[str, int]] | None = None
    ) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = await collection.find_one_and_update(
            flt, {"$set": {"lease_until": lease_until}}, sort=sort, return_document=ReturnDocument.AFTER
        )
        return doc

    # sources
    async def insert_source(self, source: Source) -> None:
        try:
            await self._sources.insert_one(_doc(source))
        except DuplicateKeyError as exc:
            raise Conflict("source", source.url) from exc

    async def get_source(self, source_id: str) -> Source | None:
        doc = await self._sources.find_one({"_id": source_id})
        return Source.model_validate(_undoc(doc)) if doc else None

    async def list_sources(self) -> list[Source]:
        cursor = self._sources.find().sort([("created_at", ASCENDING), ("_id", ASCENDING)])
        return [Source.model_validate(_undoc(d)) async for d in cursor]

    async def claim_due_source(self, now: datetime, lease_until: datetime) -> Source | None:
        flt = {"active": True, "next_check_at": {"$lte": now}, "lease_until": _lease_free(now)}
        doc = await self._claim(self._sources, flt, lease_until, [("next_check_at", ASCENDING)])
        return Source.model_validate(_undoc(doc)) if doc else None

    async def count_due_sources(self, now: datetime) -> int:
        flt = {"active": True, "next_check_at": {"$lte": now}, "lease_until": _lease_free(now)}
        return int(await self._sources.count_documents(flt, limit=DUE_COUNT_CAP))

    async def update_source(self, source_id: str, fields: dict[str, Any]) -> None:
        await self._sources.update_one({"_id": source_id}, {"$set": fields})

    async def delete_source(self, source_id: str) -> bool:
        return (await self._sources.delete_one({"_id": source_id})).deleted_count > 0

    # ingest dedupe
    async def seen_hashes(self, ids: Iterable[str]) -> dict[str, str]:
        wanted = list(set(ids))
        if not wanted:
            return {}
        return {d["_id"]: d["hash"] async for d in self._seen.find({"_id": {"$in": wanted}}, {"hash": 1})}

    async def mark_seen(self, hashes: dict[str, str], now: datetime) -> None:
        await insert_or_replace(self._seen, [{"_id": i, "hash": h, "seen_at": now} for i, h in hashes.items()])

    async def claim_keys(self, keys: dict[str, str], now: datetime) -> dict[str, str]:
        if not keys:
            return {}
        try:
            await self._keys.insert_many([{"_id": k, "item_id": i, "at": now} for k, i in keys.items()], ordered=False)
        except BulkWriteError as exc:
            taken = [list(keys)[n] for n in _only_duplicates(exc)]  # owned already: read the owners
            owners = {d["_id"]: d["item_id"] async for d in self._keys.find({"_id": {"$in": taken}})}
            return {k: owners.get(k, i) for k, i in keys.items()}
        return dict(keys)  # every key inserted: this caller owns them all

    async def take_over_keys(
        self, keys: dict[str, tuple[str, str]], claimed_before: datetime, now: datetime
    ) -> set[str]:
        if not keys:
            return set()
        # Each update is conditional on the owner and claim time it was decided on (served by
        # _id), so of two replicas taking one key over, one wins; the read after says which.
        updates = [
            UpdateOne({"_id": k, "item_id": old, "at": {"$lt": claimed_before}}, {"$set": {"item_id": new, "at": now}})
            for k, (old, new) in keys.items()
        ]
        await self._keys.bulk_write(updates, ordered=False)
        owners = {d["_id"]: d["item_id"] async for d in self._keys.find({"_id": {"$in": list(keys)}})}
        return {k for k, (_, new) in keys.items() if owners.get(k) == new}

    async def add_duplicates(self, refs: list[DuplicateRef]) -> None:
        await insert_or_replace(self._duplicates, [_doc(r) for r in {r.id: r for r in refs}.values()])

    async def list_duplicates(self, item_id: str) -> list[DuplicateRef]:
        return (await self.duplicates_of([item_id])).get(item_id, [])

    async def duplicates_of(self, item_ids: Iterable[str]) -> dict[str, list[DuplicateRef]]:
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return {}
        # One pass over the (item_id, seen_at, _id) index, already in the order we return.
        order = [("item_id", ASCENDING), ("seen_at", ASCENDING), ("_id", ASCENDING)]
        cap = len(ids) * MAX_PAGE
        cursor = self._duplicates.find({"item_id": {"$in": ids}}).sort(order).limit(cap)
        found: dict[str, list[DuplicateRef]] = {}
        read, last = 0, ""
        async for doc in cursor:
            read, last = read + 1, doc["item_id"]
            refs = found.setdefault(last, [])
            if len(refs) < MAX_PAGE:
                refs.append(DuplicateRef.model_validate(_undoc(doc)))
        if read == cap:
            # An item with more than MAX_PAGE copies used up the pass's budget: the items after it
            # (and the last one read, perhaps cut short) get a bounded read of their own each.
            for item_id in (i for i in ids if i >= last):
                one = self._duplicates.find({"item_id": item_id}).sort(order).limit(MAX_PAGE)
                refs = [DuplicateRef.model_validate(_undoc(doc)) async for doc in one]
                if refs:
                    found[item_id] = refs
        return found

    # items (events)
    async def upsert_item(self, item: ClassifiedItem) -> None:
        await self._events.upsert([item])

    async def upsert_items(self, items: list[ClassifiedItem]) -> None:
        await self._events.upsert(items)

    async def replace_item_if(self, item: ClassifiedItem, revision: int, content_hash: str) -> bool:
        return await self._events.replace_if(item, revision, content_hash)

    async def get_item(self, item_id: str) -> ClassifiedItem | None:
        return (await self._events.get([item_id])).get(item_id)

    async def get_items(self, item_ids: Iterable[str]) -> dict[str, ClassifiedItem]:
        return await self._events.get(item_ids)

    async def list_items(self, query: EventQuery) -> list[ClassifiedItem]:
        return await self._events.find(query)

    async def sector_counts(self, *, country: str | None = None, since: datetime | None = None) -> list[SectorCount]:
        return await self._events.sector_counts(country=country, since=since)

    # agreements
    async def agreement_activity(
        self, agreement_id: str | None = None, *, since: datetime | None = None
    ) -> list[AgreementActivity]:
        return await self._events.agreement_activity(agreement_id, since)

    async def agreement_copies(
        self, source_ids: Collection[str], agreement_id: str | None = None, *, since: datetime | None = None
    ) -> list[AgreementActivity]:
        ids = sorted(set(source_ids))
        if not ids:
            return []
        # Those sources' copies since then (the by_source index), each joined to its item by _id;
        # the item's agreement and time filters apply after the join, as the copies are few.
        item = {f"item.{k}": v for k, v in linked_filter(agreement_id, since).items()}
        events = self._events.collection.name
        copies: dict[str, Any] = {"source_id": ids[0] if len(ids) == 1 else {"$in": ids}}
        if since is not None:
            copies["seen_at"] = {"$gte": since}
        pipeline: list[dict[str, Any]] = [
            {"$match": copies},
            {"$project": {"_id": 0, "item_id": 1, "source_id": 1, "seen_at": 1}},
            {"$lookup": {"from": events, "localField": "item_id", "foreignField": "_id", "as": "item"}},
            {"$unwind": "$item"},
            {"$match": item},
            {"$project": {"source_id": 1, "seen_at": 1, "a": "$item.agreement_ids", "stage": "$item.stage"}},
            {"$unwind": "$a"},
            *([{"$match": {"a": agreement_id}}] if agreement_id else []),
            {
                "$group": {
                    "_id": {"a": "$a", "stage": "$stage", "source": "$source_id"},
                    "n": {"$sum": 1},
                    "first": {"$min": "$seen_at"},
                    "last": {"$max": "$seen_at"},
                }
            },
        ]
        return [
            AgreementActivity(
                d["_id"]["a"], d["_id"].get("stage"), d["_id"]["source"], int(d["n"]), d["first"], d["last"]
            )
            async for d in await self._duplicates.aggregate(pipeline)
        ]

    async def get_agreement_stage(self, agreement_id: str) -> Stage | None:
        doc = await self._stages.find_one({"_id": agreement_id})
        return cast(Stage, doc["stage"]) if doc else None

    async def swap_agreement_stage(self, agreement_id: str, expected: Stage | None, new: Stage) -> bool:
        if expected is None:
            try:
                await self._stages.insert_one({"_id": agreement_id, "stage": new})
            except DuplicateKeyError:
                return False
            return True
        result = await self._stages.update_one({"_id": agreement_id, "stage": expected}, {"$set": {"stage": new}})
        return result.modified_count == 1

    async def insert_agreement_event(self, event: AgreementEvent) -> bool:
        try:
            await self._agreement_events.insert_one(_doc(event))
        except DuplicateKeyError:
            return False
        return True

    async def get_agreement_event(self, event_id: str) -> AgreementEvent | None:
        doc = await self._agreement_events.find_one({"_id": event_id})
        return AgreementEvent.model_validate(_undoc(doc)) if doc else None

    async def list_agreement_events(
        self, *, agreement_id: str | None = None, unpublished_before: datetime | None = None, limit: int = 50
    ) -> list[AgreementEvent]:
        flt: dict[str, Any] = {"agreement_id": agreement_id} if agreement_id else {}
        order = [("at", DESCENDING), ("_id", DESCENDING)]  # ties in SQLite's order too
        if unpublished_before is not None:
            flt, order = {"published_at": None, "at": {"$lt": unpublished_before}}, [("at", ASCENDING)]
        cursor = self._agreement_events.find(flt).sort(order).limit(max(1, min(limit, MAX_SCAN)))
        return [AgreementEvent.model_validate(_undoc(d)) async for d in cursor]

    async def mark_agreement_event_published(self, event_id: str, at: datetime) -> None:
        await self._agreement_events.update_one({"_id": event_id}, {"$set": {"published_at": at}})

    # subscriptions
    async def insert_subscription(self, subscription: Subscription) -> None:
        try:
            await self._subscriptions.insert_one(_doc(subscription))
        except DuplicateKeyError as exc:
            raise Conflict("subscription", subscription.id) from exc

    async def get_subscription(self, subscription_id: str) -> Subscription | None:
        doc = await self._subscriptions.find_one({"_id": subscription_id})
        return Subscription.model_validate(_undoc(doc)) if doc else None

    async def list_subscriptions(self, *, active_only: bool = False) -> list[Subscription]:
        flt = {"active": True} if active_only else {}
        cursor = self._subscriptions.find(flt).sort([("created_at", ASCENDING), ("_id", ASCENDING)])
        return [Subscription.model_validate(_undoc(d)) async for d in cursor]

    async def delete_subscription(self, subscription_id: str) -> bool:
        return (await self._subscriptions.delete_one({"_id": subscription_id})).deleted_count > 0

    async def update_subscription(
        self, subscription_id: str, fields: dict[str, Any], *, unless_reason: str | None = None
    ) -> bool:
        flt: dict[str, Any] = {"_id": subscription_id}
        if unless_reason is not None:
            flt["disabled_reason"] = {"$ne": unless_reason}
        result = await self._subscriptions.update_one(flt, {"$set": fields})
        return result.matched_count > 0

    # deliveries
    async def insert_delivery(self, delivery: Delivery) -> bool:
        return bool(await self.insert_deliveries([delivery]))

    async def insert_deliveries(self, deliveries: list[Delivery]) -> set[str]:
        if not deliveries:
            return set()
        refused: list[int] = []
        try:
            await self._deliveries.bulk_write([InsertOne(_doc(d)) for d in deliveries], ordered=False)
        except BulkWriteError as exc:
            refused = _only_duplicates(exc)
        return {d.id for n, d in enumerate(deliveries) if n not in set(refused)}

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        doc = await self._deliveries.find_one({"_id": delivery_id})
        return Delivery.model_validate(_undoc(doc)) if doc else None

    async def claim_delivery(self, delivery_id: str, now: datetime, lease_until: datetime) -> Delivery | None:
        flt = {"_id": delivery_id, "status": "pending", "lease_until": _lease_free(now)}
        doc = await self._claim(self._deliveries, flt, lease_until)
        return Delivery.model_validate(_undoc(doc)) if doc else None

    async def claim_due_delivery(
        self, now: datetime, lease_until: datetime, *, exclude_subscriptions: Collection[str] = ()
    ) -> Delivery | None:
        flt: dict[str, Any] = {"status": "pending", "next_attempt_at": {"$lte": now}, "lease_until": _lease_free(now)}
        if exclude_subscriptions:
            flt["subscription_id"] = {"$nin": sorted(exclude_subscriptions)}
        doc = await self._claim(self._deliveries, flt, lease_until, [("next_attempt_at", ASCENDING)])
        return Delivery.model_validate(_undoc(doc)) if doc else None

    async def update_delivery(self, delivery_id: str, fields: dict[str, Any]) -> None:
        await self._deliveries.update_one({"_id": delivery_id}, {"$set": fields})

    async def finish_delivery(self, delivery_id: str, lease_until: datetime, fields: dict[str, Any]) -> bool:
        # BSON keeps milliseconds, as the claim stored them; served by _id.
        result = await self._deliveries.update_one({"_id": delivery_id, "lease_until": lease_until}, {"$set": fields})
        return result.matched_count == 1

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
        wanted = {
            "subscription_id": subscription_id,
            "status": status,
            "item_id": item_id,
            "digest_period": digest_period,
        }
        flt: dict[str, Any] = {k: v for k, v in wanted.items() if v}
        if before is not None:
            # The bound the index seeks to, then the tie on created_at broken by _id.
            at, last_id = before
            flt["created_at"] = {"$lte": at}
            flt["$or"] = [{"created_at": {"$lt": at}}, {"_id": {"$lt": last_id}}]
        cursor = self._deliveries.find(flt).sort(_BY_RECENT).limit(max(1, min(limit, MAX_SCAN)))
        return [Delivery.model_validate(_undoc(d)) async for d in cursor]
