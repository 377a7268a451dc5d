"""MongoDB-wire adapter of the store contract, on PyMongo's async API.

Runs on MongoDB (compose) and FerretDB 1.24 (tests), so it uses only what both support: unique
and compound indexes, plain finds with $or/$lte and sort, bulk writes. No transactions, no change
streams, no TTL indexes, no $text.

Claims do not use findAndModify: on FerretDB 1.24 (SQLite) a filtered update is not an atomic
compare-and-set (measured: 8 concurrent conditional updates of one document all "won"), while a
unique-key insert is. So a claim reads a candidate, then inserts ``{kind}:{id}:{lease_seq+1}``
into the ``claims`` collection; only the one insert that succeeds owns the lease.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from shared.errors import Conflict
from shared.models import ClassifiedItem, Delivery, DeliveryStatus, DuplicateRef, Source, Subscription
from shared.store.base import MAX_SCAN, EventQuery, SectorCount
from shared.store.mongo_duplicates import DuplicateSlots
from shared.store.mongo_events import EventPartitions, item_from

SERVER_SELECTION_TIMEOUT_MS = 10_000
MIGRATE_BATCH = 500  # documents moved at a time from the earlier single-collection layout
SOCKET_TIMEOUT_MS = 30_000


def _doc(model: Source | Subscription | Delivery | ClassifiedItem | DuplicateRef) -> dict[str, Any]:
    doc = model.model_dump(mode="python")
    doc["_id"] = doc.pop("id")
    return doc


def _undoc(doc: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    doc["id"] = doc.pop("_id")
    return doc


MAX_CLAIM_CANDIDATES = 8
MAX_STALE_CLAIMS = 4


def _lease_free(now: datetime) -> dict[str, Any]:
    return {"$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}]}


class MongoStore:
    """The :class:`~shared.store.base.Store` contract on a MongoDB-wire server."""

    def __init__(self, uri: str, database: str, *, socket_timeout_ms: int = SOCKET_TIMEOUT_MS) -> None:
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            uri,
            tz_aware=True,
            serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
            socketTimeoutMS=socket_timeout_ms,
            connectTimeoutMS=SERVER_SELECTION_TIMEOUT_MS,
        )
        db = self._client[database]
        self._sources = db["sources"]
        self._seen = db["seen"]
        self.db = db
        self._events = EventPartitions(db)
        self._subscriptions = db["subscriptions"]
        self._deliveries = db["deliveries"]
        self._claims = db["claims"]
        self._keys = db["dedupe_keys"]
        self._duplicates = DuplicateSlots(db)

    async def start(self) -> None:
        await self._sources.create_index([("url", ASCENDING)], unique=True, name="url_unique")
        await self._sources.create_index([("next_check_at", ASCENDING)], name="next_check")
        await self._deliveries.create_index([("status", ASCENDING), ("next_attempt_at", ASCENDING)], name="due")
        await self._deliveries.create_index(
            [("subscription_id", ASCENDING), ("created_at", DESCENDING)], name="by_subscription"
        )
        collections = await self.db.list_collection_names()
        # Earlier versions kept all events in "items" and all duplicates in "duplicates".
        if "items" in collections:
            await self._drain("items", lambda docs: self._events.upsert([item_from(d) for d in docs]))
        if "duplicates" in collections:
            await self._drain(
                "duplicates",
                lambda docs: self._duplicates.add_many(DuplicateRef.model_validate(_undoc(d)) for d in docs),
            )

    async def _drain(self, legacy: str, move: Callable[[list[dict[str, Any]]], Awaitable[None]]) -> None:
        """Move a collection of the earlier layout, batch by batch, then drop it. A batch is
        deleted only after it was moved, so a restart mid-way resumes where it stopped."""
        coll = self.db[legacy]
        while batch := await coll.find().limit(MIGRATE_BATCH).to_list(None):
            await move(batch)
            await coll.delete_many({"_id": {"$in": [d["_id"] for d in batch]}})
        await self.db.drop_collection(legacy)

    async def close(self) -> None:
        await self._client.close()

    async def ping(self) -> bool:
        try:
            await self._client.admin.command("ping")
        except PyMongoError:
            return False
        return True

    async def _claim(
        self,
        collection: AsyncCollection[dict[str, Any]],
        kind: str,
        flt: dict[str, Any],
        now: datetime,
        lease_until: datetime,
        *,
        sort: list[tuple[str, int]] | None = None,
    ) -> dict[str, Any] | None:
        """Lease one document matching ``flt`` (see the module docstring for why this way)."""
        lost: list[Any] = []
        for _ in range(MAX_CLAIM_CANDIDATES):
            query = {"$and": [flt, {"_id": {"$nin": lost}}]} if lost else flt
            doc = await collection.find_one(query, sort=sort)
            if doc is None:
                return None
            seq = await self._take_claim(kind, doc["_id"], int(doc.get("lease_seq", 0)) + 1, now, lease_until)
            if seq is None:
                lost.append(doc["_id"])  # another worker won this one; try the next candidate
                continue
            await collection.update_one({"_id": doc["_id"]}, {"$set": {"lease_until": lease_until, "lease_seq": seq}})
            # Keep the claims collection bounded: older claims of this record are spent.
            await self._claims.delete_many({"_id": {"$in": [f"{kind}:{doc['_id']}:{k}" for k in range(seq - 3, seq)]}})
            doc["lease_until"] = lease_until
            return doc
        return None

    async def _take_claim(
        self, kind: str, record_id: Any, seq: int, now: datetime, lease_until: datetime
    ) -> int | None:
        """Insert claim ``seq`` (or a later one); the sequence number won, or None if another worker won.

        A claim whose lease ran out before its holder recorded it on the document (the holder died
        between the two writes) is skipped: the next sequence number is free to take, and only one
        worker can insert it.
        """
        for _ in range(MAX_STALE_CLAIMS):
            try:
                await self._claims.insert_one({"_id": f"{kind}:{record_id}:{seq}", "lease_until": lease_until})
                return seq
            except DuplicateKeyError:
                existing = await self._claims.find_one({"_id": f"{kind}:{record_id}:{seq}"})
                if existing is None or existing["lease_until"] > now:
                    return None
                seq += 1
        return None

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
        return [Source.model_validate(_undoc(d)) async for d in self._sources.find().sort("created_at", ASCENDING)]

    async def claim_due_source(self, now: datetime, lease_until: datetime) -> Source | None:
        doc = await self._claim(
            self._sources,
            "source",
            {"$and": [{"active": True, "next_check_at": {"$lte": now}}, _lease_free(now)]},
            now,
            lease_until,
            sort=[("next_check_at", ASCENDING)],
        )
        return Source.model_validate(_undoc(doc)) if doc else None

    async def update_source(self, source_id: str, fields: dict[str, Any]) -> None:
        await self._sources.update_one({"_id": source_id}, {"$set": fields})

    async def delete_source(self, source_id: str) -> bool:
        result = await self._sources.delete_one({"_id": source_id})
        return result.deleted_count > 0

    # ingest dedupe
    async def seen_hashes(self, ids: Iterable[str]) -> dict[str, str]:
        wanted = list(set(ids))
        if not wanted:
            return {}
        cursor = self._seen.find({"_id": {"$in": wanted}}, {"_id": 1, "hash": 1})
        return {d["_id"]: d.get("hash", "") async for d in cursor}

    async def mark_seen(self, hashes: dict[str, str], now: datetime) -> None:
        ops = [UpdateOne({"_id": i}, {"$set": {"hash": h, "seen_at": now}}, upsert=True) for i, h in hashes.items()]
        if ops:
            await self._seen.bulk_write(ops, ordered=False)

    async def claim_keys(self, keys: dict[str, str], now: datetime) -> dict[str, str]:
        if not keys:
            return {}
        owners: dict[str, str] = {}
        for key, item_id in keys.items():
            try:
                await self._keys.insert_one({"_id": key, "item_id": item_id, "at": now})
                owners[key] = item_id
            except DuplicateKeyError:
                pass
        missing = [k for k in keys if k not in owners]
        if missing:
            async for d in self._keys.find({"_id": {"$in": missing}}):
                owners[d["_id"]] = d["item_id"]
        return owners

    async def add_duplicate(self, ref: DuplicateRef) -> None:
        await self._duplicates.add(ref)

    async def list_duplicates(self, item_id: str) -> list[DuplicateRef]:
        return (await self._duplicates.of([item_id])).get(item_id, [])

    # items (events): partitioned by day, see shared/store/mongo_events.py
    async def upsert_item(self, item: ClassifiedItem) -> None:
        await self._events.upsert([item])

    async def upsert_items(self, items: list[ClassifiedItem]) -> None:
        await self._events.upsert(items)

    async def get_item(self, item_id: str) -> ClassifiedItem | None:
        return await self._events.get(item_id)

    async def list_items(self, query: EventQuery) -> list[ClassifiedItem]:
        return await self._events.find(query)

    async def sector_counts(self, *, country: str | None = None, since: datetime | None = None) -> list[SectorCount]:
        return await self._events.sector_counts(country=country, since=since)

    async def refresh_stats(self, max_days: int) -> int:
        return await self._events.refresh_stats(max_days)

    async def duplicates_of(self, item_ids: Iterable[str]) -> dict[str, list[DuplicateRef]]:
        return await self._duplicates.of(item_ids)

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
        cursor = self._subscriptions.find(flt).sort("created_at", ASCENDING)
        return [Subscription.model_validate(_undoc(d)) async for d in cursor]

    async def delete_subscription(self, subscription_id: str) -> bool:
        result = await self._subscriptions.delete_one({"_id": subscription_id})
        return result.deleted_count > 0

    async def update_subscription(self, subscription_id: str, fields: dict[str, Any]) -> None:
        await self._subscriptions.update_one({"_id": subscription_id}, {"$set": fields})

    # deliveries
    async def insert_delivery(self, delivery: Delivery) -> bool:
        try:
            await self._deliveries.insert_one(_doc(delivery))
        except DuplicateKeyError:
            return False
        return True

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        doc = await self._deliveries.find_one({"_id": delivery_id})
        return Delivery.model_validate(_undoc(doc)) if doc else None

    async def claim_delivery(self, delivery_id: str, now: datetime, lease_until: datetime) -> Delivery | None:
        doc = await self._claim(
            self._deliveries,
            "delivery",
            {"$and": [{"_id": delivery_id, "status": "pending"}, _lease_free(now)]},
            now,
            lease_until,
        )
        return Delivery.model_validate(_undoc(doc)) if doc else None

    async def claim_due_delivery(self, now: datetime, lease_until: datetime) -> Delivery | None:
        doc = await self._claim(
            self._deliveries,
            "delivery",
            {"$and": [{"status": "pending", "next_attempt_at": {"$lte": now}}, _lease_free(now)]},
            now,
            lease_until,
            sort=[("next_attempt_at", ASCENDING)],
        )
        return Delivery.model_validate(_undoc(doc)) if doc else None

    async def update_delivery(self, delivery_id: str, fields: dict[str, Any]) -> None:
        await self._deliveries.update_one({"_id": delivery_id}, {"$set": fields})

    async def list_deliveries(
        self,
        *,
        subscription_id: str | None = None,
        status: DeliveryStatus | None = None,
        item_id: str | None = None,
        digest_period: str | None = None,
        limit: int = 50,
    ) -> list[Delivery]:
        flt: dict[str, Any] = {}
        for key, value in (
            ("subscription_id", subscription_id),
            ("status", status),
            ("item_id", item_id),
            ("digest_period", digest_period),
        ):
            if value:
                flt[key] = value
        cursor = self._deliveries.find(flt).sort([("created_at", DESCENDING), ("_id", DESCENDING)])
        cursor = cursor.limit(max(1, min(limit, MAX_SCAN)))
        return [Delivery.model_validate(_undoc(d)) async for d in cursor]
