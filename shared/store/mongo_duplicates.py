"""Duplicates (other sources' copies of a story) on a MongoDB-wire server, found by ``_id``.

Every page of events asks for the duplicates of its items, so this lookup sits on the hot path of
/api/v1/events. FerretDB 1.24 reads and decodes a whole collection for an ``item_id`` filter (see
shared/store/mongo_events.py): with 20,000 duplicates in one collection a page's lookup took
~0.9 s, and ~0.1–0.2 s even split into 256 collections (measured). A lone ``_id`` equality is the
one query it hands to SQLite, which then decodes a single document. So the copies of a story are
stored under ``{item_id}#0``, ``{item_id}#1``, … in one of 256 shards (CRC-32 of the item id, to
keep each SQLite scan short), and a page asks for ``#0`` of each item — most have none — then
``#1`` for those that had one, and so on.

Slots fill as a prefix. Recording a copy reads the story's slots in its shard (one small scan:
~80 documents at 20,000 duplicates), replaces the copy's slot if it is there already (idempotent),
or inserts it into the next slot by a unique insert — the same race-free pattern as the claims:
two ingest replicas recording copies of one story cannot overwrite each other, the loser takes
the next slot. Two processes recording the same copy at the same moment can leave it in two
slots; readers drop the repeat. At most MAX_COPIES copies of a story are kept (the API shows at
most MAX_PAGE). On MongoDB the same lookups use the ``_id`` index and the (item_id) index.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Iterable
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.models import DuplicateRef
from shared.store.base import MAX_PAGE

log = logging.getLogger("corridor.store")

SHARDS = 256
PREFIX = "duplicates_"
CONCURRENCY = 8  # lookups in flight for one page
MAX_COPIES = 1000


def _shard_name(item_id: str) -> str:
    return f"{PREFIX}{zlib.crc32(item_id.encode()) % SHARDS:03d}"


def _slot(item_id: str, n: int) -> str:
    return f"{item_id}#{n}"


def _doc(ref: DuplicateRef, n: int) -> dict[str, Any]:
    doc = ref.model_dump(mode="python")
    doc["dup_id"] = doc.pop("id")
    doc["_id"] = _slot(ref.item_id, n)
    return doc


def _ref(doc: dict[str, Any]) -> DuplicateRef:
    doc = dict(doc)
    doc.pop("_id")
    doc["id"] = doc.pop("dup_id")
    return DuplicateRef.model_validate(doc)


class DuplicateSlots:
    """Duplicates for :class:`~shared.store.mongo.MongoStore` (see the module docstring)."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._db = db
        self._prepared: set[str] = set()

    async def _shard(self, item_id: str) -> Any:
        name = _shard_name(item_id)
        if name not in self._prepared:
            await self._db[name].create_index([("item_id", ASCENDING)], name="by_item")
            self._prepared.add(name)
        return self._db[name]

    async def add(self, ref: DuplicateRef) -> None:
        shard = await self._shard(ref.item_id)
        slots = await shard.find({"item_id": ref.item_id}, {"dup_id": 1}).to_list(None)
        for slot in slots:
            if slot.get("dup_id") == ref.id:  # recorded before: refresh it in place
                n = int(str(slot["_id"]).rpartition("#")[2])
                await shard.replace_one({"_id": slot["_id"]}, _doc(ref, n))
                return
        for n in range(len(slots), MAX_COPIES):
            try:
                await shard.insert_one(_doc(ref, n))
                return
            except DuplicateKeyError:
                continue  # another replica took this slot first
        log.warning("story %s has %d copies already; copy %s not recorded", ref.item_id, MAX_COPIES, ref.id)

    async def add_many(self, refs: Iterable[DuplicateRef]) -> None:
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(ref: DuplicateRef) -> None:
            async with sem:
                await self.add(ref)

        await asyncio.gather(*(one(r) for r in refs))

    async def of(self, item_ids: Iterable[str], limit: int = MAX_PAGE) -> dict[str, list[DuplicateRef]]:
        """For each item id that has copies, at most ``limit`` of them, oldest first."""
        sem = asyncio.Semaphore(CONCURRENCY)

        async def copies(item_id: str) -> list[DuplicateRef]:
            shard, found = self._db[_shard_name(item_id)], []
            for n in range(limit):
                async with sem:
                    # A lone _id equality: the one filter FerretDB hands to SQLite.
                    doc = await shard.find_one({"_id": _slot(item_id, n)})
                if doc is None:
                    break
                found.append(_ref(doc))
            unique = {r.id: r for r in found}  # a copy in two slots (see the module docstring)
            return sorted(unique.values(), key=lambda r: (r.seen_at, r.id))

        ids = list(dict.fromkeys(item_ids))
        results = await asyncio.gather(*(copies(i) for i in ids))
        return {item_id: refs for item_id, refs in zip(ids, results, strict=True) if refs}
