"""Duplicates (other sources' copies of a story) on a MongoDB-wire server, sharded by story.

Every page of events asks for the duplicates of its items, so this lookup sits on the hot path of
/api/v1/events. FerretDB 1.24 reads a whole collection for an ``item_id`` filter (see
shared/store/mongo_events.py); with 20,000 duplicates in one collection a page's lookup took
~0.9 s (measured). Split by CRC-32 of the story's item id into ``duplicates_NNN`` shards, a page
reads only the shards of its items, concurrently: ~0.1–0.2 s for 50 items at 20,000 duplicates
(measured). On MongoDB each shard has an (item_id, seen_at) index.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from pymongo import ASCENDING, ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from shared.models import DuplicateRef
from shared.store.base import MAX_PAGE

SHARDS = 256
PREFIX = "duplicates_"
CONCURRENCY = 8  # shards read at once for one page
MIGRATE_BATCH = 500


def _shard_name(item_id: str) -> str:
    return f"{PREFIX}{zlib.crc32(item_id.encode()) % SHARDS:03d}"


def _ref(doc: dict[str, Any]) -> DuplicateRef:
    doc = dict(doc)
    doc["id"] = doc.pop("_id")
    return DuplicateRef.model_validate(doc)


class DuplicateShards:
    """Duplicates for :class:`~shared.store.mongo.MongoStore` (see the module docstring)."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._db = db
        self._prepared: set[str] = set()

    async def _shard(self, name: str) -> Any:
        if name not in self._prepared:
            await self._db[name].create_index([("item_id", ASCENDING), ("seen_at", ASCENDING)], name="by_item")
            self._prepared.add(name)
        return self._db[name]

    async def add(self, ref: DuplicateRef) -> None:
        await self.add_many([ref])

    async def add_many(self, refs: Iterable[DuplicateRef]) -> None:
        """Record copies (idempotent): inserted, or replaced when already recorded."""
        by_shard: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for ref in refs:
            doc = ref.model_dump(mode="python")
            doc["_id"] = doc.pop("id")
            by_shard[_shard_name(ref.item_id)].append(doc)
        for name, docs in by_shard.items():
            shard = await self._shard(name)
            try:
                await shard.insert_many(docs, ordered=False)  # FerretDB: an upsert costs ~10x an insert
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if any(e.get("code") != 11000 for e in errors):
                    raise
                again = [docs[e["index"]] for e in errors]
                await shard.bulk_write([ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in again], ordered=False)

    async def of(self, item_ids: Iterable[str], limit: int = MAX_PAGE) -> dict[str, list[DuplicateRef]]:
        """For each item id that has copies, at most ``limit`` of them, oldest first."""
        by_shard: dict[str, list[str]] = defaultdict(list)
        for item_id in set(item_ids):
            by_shard[_shard_name(item_id)].append(item_id)
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(shard: str, ids: list[str]) -> list[dict[str, Any]]:
            async with sem:
                flt: dict[str, Any] = {"item_id": ids[0]} if len(ids) == 1 else {"item_id": {"$in": ids}}
                return await self._db[shard].find(flt).to_list(None)

        found: dict[str, list[DuplicateRef]] = {}
        for docs in await asyncio.gather(*(one(s, ids) for s, ids in by_shard.items())):
            for doc in docs:
                ref = _ref(doc)
                found.setdefault(ref.item_id, []).append(ref)
        for refs in found.values():
            refs.sort(key=lambda r: (r.seen_at, r.id))
            del refs[limit:]
        return found

    async def migrate_legacy(self, legacy: str = "duplicates") -> int:
        """Move duplicates from the single collection of earlier versions into shards."""
        coll = self._db[legacy]
        moved = 0
        while batch := await coll.find().limit(MIGRATE_BATCH).to_list(None):
            await self.add_many(_ref(doc) for doc in batch)
            await coll.delete_many({"_id": {"$in": [d["_id"] for d in batch]}})
            moved += len(batch)
        return moved
