"""The ``events`` collection of the MongoDB store: one document per classified item.

Besides the item's own fields each document carries what the queries filter and sort on:
``sort_at`` (published, else fetched time), ``top_score`` (best sector score), ``week`` (the
Monday of ``sort_at``, for timelines), ``agreement_ids`` (the linked agreements) and ``tokens``
(the item's normalised words, :func:`shared.text.search_tokens`: ``q`` is ``tokens: {$all:
[...]}`` on a multikey index, as the server has no text index we may rely on). Readers never see
these fields.

Every page is ``find(filter).sort([(key, -1), ("_id", -1)]).limit(n)``; the keyset cursor adds
``key <= v`` (a bound the index seeks to) and ``key < v or _id < id`` (a filter on the rows at the
bound). The indexes follow the API's filters: each equality field first, then the sort keys, so
the winning plan reads the page in order and stops at ``limit`` (no in-memory sort). Time order
has one index per filter (sector, country, source, language, word, bilateral, agreement); score order has
the plain and per-sector ones, and other filters combined with it read one of the above and sort
at most what matches.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from shared.models import ClassifiedItem
from shared.store.base import MAX_PAGE, AgreementActivity, EventQuery, SectorCount
from shared.store.mongo_indexes import ensure_index
from shared.text import search_tokens

DERIVED = ("sort_at", "top_score", "week", "tokens", "agreement_ids")
DUPLICATE_KEY = 11000
_TIME = [("sort_at", DESCENDING), ("_id", DESCENDING)]
_SCORE = [("top_score", DESCENDING), ("_id", DESCENDING)]
INDEXES: dict[str, list[tuple[str, int]]] = {
    "recent": _TIME,
    "best": _SCORE,
    "sector_recent": [("sectors", ASCENDING), *_TIME],
    "sector_best": [("sectors", ASCENDING), *_SCORE],
    "country_recent": [("countries", ASCENDING), *_TIME],
    "source_recent": [("source_id", ASCENDING), *_TIME],
    "language_recent": [("language", ASCENDING), *_TIME],
    "bilateral_recent": [("bilateral", ASCENDING), *_TIME],
    "token_recent": [("tokens", ASCENDING), *_TIME],
    "agreement_recent": [("agreement_ids", ASCENDING), *_TIME],
}


def item_doc(item: ClassifiedItem) -> dict[str, Any]:
    """The stored document of ``item``: its fields plus the derived query fields."""
    doc = item.model_dump(mode="python")
    doc["_id"] = doc.pop("id")
    doc.update(
        sort_at=item.sort_at,
        top_score=item.top_score,
        week=item.week,
        tokens=search_tokens(f"{item.title} {item.summary}"),
        agreement_ids=[a.id for a in item.agreements],
    )
    return doc


async def insert_or_replace(collection: AsyncCollection[dict[str, Any]], docs: list[dict[str, Any]]) -> None:
    """Upsert ``docs`` by ``_id``: one unordered bulk insert, then a replace of each one that
    existed. New records are the common case, and an insert costs a third of an upsert on the
    test server (measured: ~1,000 vs ~330 events/s); on MongoDB it saves the upserts' lookups."""
    if not docs:
        return
    try:
        await collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors) or exc.details.get("writeConcernErrors"):
            raise
        existing = [docs[int(e["index"])] for e in errors]
        await collection.bulk_write([ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in existing], ordered=False)


def item_from(doc: dict[str, Any]) -> ClassifiedItem:
    """The item of a stored document (derived fields dropped; extra legacy fields ignored)."""
    fields = {k: v for k, v in doc.items() if k not in DERIVED}
    fields["id"] = fields.pop("_id")
    return ClassifiedItem.model_validate(fields)


def event_filter(query: EventQuery) -> dict[str, Any]:
    """The MongoDB filter of ``query`` (keyset cursor included)."""
    flt: dict[str, Any] = {}
    sectors = query.any_sectors
    if sectors:
        flt["sectors"] = sectors[0] if len(sectors) == 1 else {"$in": list(sectors)}
    for field, wanted in (("countries", query.country), ("source_id", query.source_id), ("language", query.language)):
        if wanted:
            flt[field] = wanted
    if query.bilateral is not None:
        flt["bilateral"] = query.bilateral
    if query.agreement:
        flt["agreement_ids"] = query.agreement
    when: dict[str, Any] = {}
    if query.since:
        when["$gte"] = query.since
    if query.until:
        when["$lt"] = query.until
    if when:
        flt["sort_at"] = when
    if query.min_score is not None:
        flt["top_score"] = {"$gte": query.min_score}
    if query.q_tokens:
        flt["tokens"] = query.q_tokens[0] if len(query.q_tokens) == 1 else {"$all": list(query.q_tokens)}
    if query.after:
        key = "sort_at" if query.sort == "time" else "top_score"
        value, last_id = query.after
        flt[key] = {**flt.get(key, {}), "$lte": value}
        flt["$or"] = [{key: {"$lt": value}}, {"_id": {"$lt": last_id}}]
    return flt


def linked_filter(agreement_id: str | None, since: datetime | None) -> dict[str, Any]:
    """Items linked to ``agreement_id`` (any agreement: any non-empty id, an index range) and
    listed from ``since``: a range of the ``agreement_recent`` index."""
    match: dict[str, Any] = {"agreement_ids": agreement_id if agreement_id else {"$gt": ""}}
    if since is not None:
        match["sort_at"] = {"$gte": since}
    return match


class EventCollection:
    """Events for :class:`~shared.store.mongo.MongoStore` (see the module docstring)."""

    def __init__(self, collection: AsyncCollection[dict[str, Any]]) -> None:
        self.collection = collection

    async def create_indexes(self) -> None:
        for name, keys in INDEXES.items():
            await ensure_index(self.collection, keys, name=name)

    async def upsert(self, items: list[ClassifiedItem]) -> None:
        """Insert or replace each item by id (the last of repeated ids wins)."""
        await insert_or_replace(self.collection, [item_doc(i) for i in {i.id: i for i in items}.values()])

    async def replace_if(self, item: ClassifiedItem, revision: int, content_hash: str) -> bool:
        """Replace ``item`` while the stored one is that revision: one conditional replace on
        ``_id`` (a document written before these fields existed holds their defaults by absence)."""
        flt: dict[str, Any] = {
            "_id": item.id,
            "revision": {"$in": [revision, None]} if revision == 0 else revision,
            "content_hash": {"$in": [content_hash, None]} if content_hash == "" else content_hash,
        }
        result = await self.collection.replace_one(flt, item_doc(item))
        return result.matched_count > 0

    async def get(self, item_ids: Iterable[str]) -> dict[str, ClassifiedItem]:
        wanted = list(dict.fromkeys(item_ids))
        if not wanted:
            return {}
        flt = {"_id": wanted[0]} if len(wanted) == 1 else {"_id": {"$in": wanted}}
        return {d["_id"]: item_from(d) async for d in self.collection.find(flt)}

    async def find(self, query: EventQuery) -> list[ClassifiedItem]:
        order = _TIME if query.sort == "time" else _SCORE
        cursor = self.collection.find(event_filter(query)).sort(order).limit(max(1, min(query.limit, MAX_PAGE)))
        return [item_from(d) async for d in cursor]

    async def agreement_activity(self, agreement_id: str | None, since: datetime | None) -> list[AgreementActivity]:
        """Linked items by (agreement, stage, source, publisher): one aggregation on the agreement index
        (``agreement_recent``: the agreement, then the time ``since`` bounds)."""
        pipeline: list[dict[str, Any]] = [
            {"$match": linked_filter(agreement_id, since)},
            {"$project": {"_id": 0, "agreement_ids": 1, "stage": 1, "source_id": 1, "publisher": 1, "sort_at": 1}},
            {"$unwind": "$agreement_ids"},
            *([{"$match": {"agreement_ids": agreement_id}}] if agreement_id else []),
            {
                "$group": {
                    # A document from before items had a publisher lacks the field: grouped with
                    # the null ones ($group would keep "missing" and null apart; SQLite does not).
                    "_id": {
                        "a": "$agreement_ids",
                        "stage": "$stage",
                        "source": "$source_id",
                        "p": {"$ifNull": ["$publisher", None]},
                    },
                    "n": {"$sum": 1},
                    "first": {"$min": "$sort_at"},
                    "last": {"$max": "$sort_at"},
                }
            },
        ]
        return [
            AgreementActivity(
                d["_id"]["a"],
                d["_id"].get("stage"),
                d["_id"]["source"],
                int(d["n"]),
                d["first"],
                d["last"],
                d["_id"].get("p"),
            )
            async for d in await self.collection.aggregate(pipeline)
        ]

    async def sector_counts(self, *, country: str | None, since: datetime | None) -> list[SectorCount]:
        """Items per (sector, week): one aggregation over the events in the window."""
        match: dict[str, Any] = {}
        if country:
            match["countries"] = country
        if since:
            match["sort_at"] = {"$gte": since}
        pipeline: list[dict[str, Any]] = [
            {"$match": match},
            {"$project": {"_id": 0, "sectors": 1, "week": 1}},
            {"$unwind": "$sectors"},
            {"$group": {"_id": {"sector": "$sectors", "week": "$week"}, "n": {"$sum": 1}}},
        ]
        counts = [
            SectorCount(d["_id"]["sector"], d["_id"]["week"], int(d["n"]))
            async for d in await self.collection.aggregate(pipeline)
        ]
        return sorted(counts, key=lambda c: (c.week, c.sector))
