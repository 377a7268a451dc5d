"""Moves databases written by earlier layouts of the MongoDB store into the current one.

Earlier layouts, each shaped by the previous test server (FerretDB 1.24):

- one ``items`` collection of events (before the day partitions);
- day partitions ``events_YYYYMMDD`` with ``events_days`` (versions), ``events_stats`` (per-day
  statistics) and ``events_ids_NN`` (id → day locators);
- duplicates in 256 shards ``duplicates_NNN`` under ``_id`` slots ``{item}#n`` (the copy's own id
  in ``dup_id``);
- a ``claims`` collection of lease sequence numbers.

Events and duplicates are moved batch by batch: a batch is written into the current collection
(an event the current collection already holds is kept, not replaced by its legacy copy), then
deleted from the old one, so a restart (or a second replica migrating at the same time)
resumes where it stopped and never loses or doubles a record. Bookkeeping collections are
dropped once the data they described is moved.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pymongo.asynchronous.database import AsyncDatabase

from shared.store.mongo_events import insert_or_replace, item_from

if TYPE_CHECKING:
    from shared.store.mongo_events import EventCollection

BATCH = 500
_PARTITION = re.compile(r"^events_\d{8}$")
_DUPLICATE_SHARD = re.compile(r"^duplicates_\d{3}$")
_BOOKKEEPING = re.compile(r"^(events_days|events_stats|events_ids_\d{2}|claims)$")


def _duplicate_doc(slot: dict[str, Any]) -> dict[str, Any]:
    doc = {k: v for k, v in slot.items() if k not in ("_id", "dup_id")}
    doc["_id"] = slot["dup_id"]
    return doc


async def migrate_layouts(db: AsyncDatabase[dict[str, Any]], events: EventCollection) -> dict[str, int]:
    """Move every earlier-layout collection of ``db``; how many records were moved, by kind."""
    moved = {"events": 0, "duplicates": 0}
    names = sorted(await db.list_collection_names())

    async def events_batch(docs: list[dict[str, Any]]) -> None:
        # What the current layout already holds wins: it was written by the current code (a
        # rolling upgrade, a restart part way), and the legacy copy would take an edit back.
        items = [item_from(d) for d in docs]
        present = await events.get(i.id for i in items)
        await events.upsert([i for i in items if i.id not in present])

    async def duplicates_batch(docs: list[dict[str, Any]]) -> None:
        await insert_or_replace(db["duplicates"], [_duplicate_doc(d) for d in docs])

    for name in names:
        if name == "items" or _PARTITION.match(name):
            moved["events"] += await _drain(db, name, events_batch)
        elif _DUPLICATE_SHARD.match(name):
            moved["duplicates"] += await _drain(db, name, duplicates_batch)
    for name in names:
        if _BOOKKEEPING.match(name):
            await db.drop_collection(name)
    return moved


async def _drain(
    db: AsyncDatabase[dict[str, Any]], name: str, move: Callable[[list[dict[str, Any]]], Awaitable[None]]
) -> int:
    """Move ``name`` batch by batch (each deleted only after it was moved), then drop it."""
    old, count = db[name], 0
    while batch := await old.find().sort("_id", 1).limit(BATCH).to_list(None):
        await move(batch)
        await old.delete_many({"_id": {"$in": [d["_id"] for d in batch]}})
        count += len(batch)
    await db.drop_collection(name)
    return count
