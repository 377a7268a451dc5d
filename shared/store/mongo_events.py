"""Events on a MongoDB-wire server, partitioned by day so that no query reads the whole history.

Why partitions: FerretDB 1.24 on SQLite (our test server) pushes nothing but a single ``_id``
equality down to SQLite, and even that is not served by its ``_id`` index (the index expression
and the query expression differ), so every find reads — and decodes, ~0.2–0.4 ms per event — the
whole collection. Measured: a sector query over one 100,000-event collection 59.6 s; one ``_id``
lookup 0.14 s among 10,000 events and 0.2 s among 100,000 five-field documents. A query's cost is
therefore the size of the collections it touches, and the layout keeps those small; on MongoDB
(compose) every partition also carries the indexes below.

Layout (``events_`` prefix):

- ``events_YYYYMMDD``: the events whose ``sort_at`` falls on that UTC day, with the derived fields
  the queries filter on (``sort_at``, ``top_score``, ``tokens`` as one space-separated string,
  matched with an escaped ``$regex``: one string decodes about twice as fast as an array of 60).
- ``events_days``: one tiny document per day, ``{_id: day, v}``; ``v`` is bumped after every
  write to the day, and only writers touch it (a reader's ``$set`` on the same document could
  write an older ``v`` back: FerretDB updates are read-modify-write).
- ``events_stats``: for a day, counts per sector, country, source and language, the best score
  overall and per sector (a JSON string) and a Bloom filter of its words, tagged ``stats_v``, the
  ``v`` they were computed at, in slot ``v % 2``. Stats are trusted only when ``stats_v == v``; a
  stale day is read in full or recomputed. Readers use fresh stats to skip days that cannot match
  and to answer /sectors without reading events, and keep them in memory by (day, v): each query
  reads only the tiny ``events_days`` (stats documents are ~12 KB, and FerretDB decodes whole
  documents whatever the projection).
- ``events_ids_NN`` (64 shards by CRC-32 of the id): id → day, for ``get_item`` and for moving an
  event whose time changed.

Why a version and not counters: FerretDB 1.24 updates are read-modify-write without isolation
(measured: concurrent conditional updates all "won"), so ``$inc`` can lose an increment. That is
harmless here: a writer bumps ``v`` *after* its event write, and a reader reads ``v`` *before* it
scans, so stats tagged with a ``v`` that the reader saw include every write whose bump finished
before — a lost increment still moves ``v`` past any stats computed before that write. A writer
that dies between its write and its bump leaves the event hidden from skipping readers until the
message is redelivered and written again (at-least-once delivery does that).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import zlib
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING, ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared.models import ClassifiedItem
from shared.store.base import MAX_PAGE, EventQuery, SectorCount
from shared.text import search_tokens

PREFIX = "events_"
DAYS = PREFIX + "days"
STATS = PREFIX + "stats"
STATS_CACHE = 1024  # (day, version) → stats kept in memory (~8–32 KB each): years of days
ID_SHARDS = 64
STATS_CONCURRENCY = 4  # stale days recomputed at once for /sectors
DERIVED = ("sort_at", "top_score", "tokens", "week", "sector_weeks")  # stripped when read (the last two: legacy)

WAVE = 4  # days read at once by one query (measured on 2 cores: 0–25 % faster than one by one)
_STATS_FIELDS = {
    "sectors": 1,
    "sector_scores": 1,
    "countries": 1,
    "bilateral": 1,
    "source_id": 1,
    "language": 1,
    "top_score": 1,
    "tokens": 1,
}


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _partition_name(day: date) -> str:
    return f"{PREFIX}{day:%Y%m%d}"


def _stats_id(day: date, v: int) -> str:
    return f"{day.isoformat()}#{v % 2}"


def _shard_name(item_id: str) -> str:
    return f"{PREFIX}ids_{zlib.crc32(item_id.encode()) % ID_SHARDS:02d}"


def item_doc(item: ClassifiedItem) -> dict[str, Any]:
    doc = item.model_dump(mode="python")
    doc["_id"] = doc.pop("id")
    doc["sort_at"] = item.sort_at
    doc["top_score"] = item.top_score
    doc["tokens"] = " " + " ".join(search_tokens(f"{item.title} {item.summary}")) + " "
    return doc


def item_from(doc: dict[str, Any]) -> ClassifiedItem:
    doc = dict(doc)
    doc["id"] = doc.pop("_id")
    for derived in DERIVED:
        doc.pop(derived, None)
    return ClassifiedItem.model_validate(doc)


class WordFilter:
    """A Bloom filter of the words of one day: ``may_contain`` is False only for a word no event
    of the day has. Sized at ~10 bits per word with 3 probes (about 2 % false positives)."""

    PROBES = 3

    def __init__(self, bits: bytes) -> None:
        self.bits = bits
        self.size = len(bits) * 8

    @classmethod
    def of(cls, words: Iterable[str]) -> WordFilter:
        unique = set(words)
        size = 1024
        while size < len(unique) * 10:
            size *= 2
        bits = bytearray(size // 8)
        for word in unique:
            for pos in cls._probes(word, size):
                bits[pos >> 3] |= 1 << (pos & 7)
        return cls(bytes(bits))

    @classmethod
    def _probes(cls, word: str, size: int) -> list[int]:
        raw = word.encode()
        first, step = zlib.crc32(raw), zlib.adler32(raw) | 1  # double hashing, stable across processes
        return [(first + n * step) % size for n in range(cls.PROBES)]

    def may_contain(self, word: str) -> bool:
        return all(self.bits[pos >> 3] >> (pos & 7) & 1 for pos in self._probes(word, self.size))

    def dumps(self) -> str:
        return base64.b64encode(self.bits).decode()

    @classmethod
    def loads(cls, text: str) -> WordFilter:
        return cls(base64.b64decode(text))


@dataclass
class DayStats:
    """What one day holds, enough to rule the day out of a query without reading it."""

    n: int = 0
    max_score: float = 0.0
    bilateral: int = 0
    sectors: Counter[str] = field(default_factory=Counter)
    countries: Counter[str] = field(default_factory=Counter)
    by_country: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    sources: Counter[str] = field(default_factory=Counter)
    languages: Counter[str] = field(default_factory=Counter)
    sector_max: dict[str, float] = field(default_factory=dict)
    word_filter: WordFilter | None = None
    words: set[str] = field(default_factory=set)  # only while counting; kept as a WordFilter

    def add(self, doc: dict[str, Any]) -> None:
        self.n += 1
        self.max_score = max(self.max_score, float(doc.get("top_score") or 0.0))
        for score in doc.get("sector_scores") or []:
            sector, value = str(score["id"]), float(score["score"])
            self.sector_max[sector] = max(self.sector_max.get(sector, 0.0), value)
        self.words.update(str(doc.get("tokens") or "").split())
        self.bilateral += bool(doc.get("bilateral"))
        sectors = list(doc.get("sectors") or [])
        self.sectors.update(sectors)
        for country in doc.get("countries") or []:
            self.countries[country] += 1
            self.by_country[country].update(sectors)
        self.sources[str(doc.get("source_id"))] += 1
        if doc.get("language"):
            self.languages[str(doc["language"])] += 1

    def dumps(self) -> str:
        return json.dumps(
            {
                "n": self.n,
                "max_score": self.max_score,
                "bilateral": self.bilateral,
                "sectors": self.sectors,
                "countries": self.countries,
                "by_country": self.by_country,
                "sources": self.sources,
                "languages": self.languages,
                "sector_max": self.sector_max,
            }
        )

    @classmethod
    def loads(cls, text: str, words: str | None = None) -> DayStats:
        raw = json.loads(text)
        return cls(
            word_filter=WordFilter.loads(words) if words else None,
            n=int(raw["n"]),
            max_score=float(raw["max_score"]),
            bilateral=int(raw["bilateral"]),
            sectors=Counter(raw["sectors"]),
            countries=Counter(raw["countries"]),
            by_country=defaultdict(Counter, {c: Counter(s) for c, s in raw["by_country"].items()}),
            sources=Counter(raw["sources"]),
            languages=Counter(raw["languages"]),
            sector_max={k: float(v) for k, v in raw.get("sector_max", {}).items()},
        )

    def best_possible(self, query: EventQuery) -> float:
        """An upper bound of the score of any event of the day matching ``query``."""
        sectors = query.any_sectors
        if not sectors:
            return self.max_score
        return max((self.sector_max.get(s, 0.0) for s in sectors), default=0.0)

    def most_matches(self, query: EventQuery) -> int:
        """An upper bound of how many events of the day match ``query``."""
        bound = self.n
        sectors = query.any_sectors
        if sectors:
            pool = self.by_country[query.country] if query.country else self.sectors
            bound = min(bound, sum(pool[s] for s in sectors))
        for counter, key in ((self.countries, query.country), (self.sources, query.source_id)):
            if key:
                bound = min(bound, counter[key])
        if query.language:
            bound = min(bound, self.languages[query.language])
        if query.bilateral is True:
            bound = min(bound, self.bilateral)
        return bound

    def may_match(self, query: EventQuery) -> bool:
        """False only when no event of the day can match ``query`` (the text is not counted)."""
        sectors = query.any_sectors
        if sectors:
            pool = self.by_country[query.country] if query.country else self.sectors
            if not any(pool[s] for s in sectors):
                return False
        if query.country and not self.countries[query.country]:
            return False
        if query.bilateral is True and not self.bilateral:
            return False
        if query.bilateral is False and self.bilateral == self.n:
            return False
        if query.q_tokens and self.word_filter and not all(self.word_filter.may_contain(t) for t in query.q_tokens):
            return False
        if query.source_id and not self.sources[query.source_id]:
            return False
        if query.language and not self.languages[query.language]:
            return False
        return not (query.min_score is not None and self.best_possible(query) < query.min_score)


@dataclass
class Day:
    """An entry of ``events_days``; ``stats`` is None while stale."""

    day: date
    v: int
    stats: DayStats | None


def _filter(query: EventQuery) -> dict[str, Any]:
    clauses: list[dict[str, Any]] = []
    sectors = query.any_sectors
    if len(sectors) == 1:
        clauses.append({"sectors": sectors[0]})
    elif sectors:
        clauses.append({"sectors": {"$in": list(sectors)}})
    for name, wanted in (("countries", query.country), ("source_id", query.source_id), ("language", query.language)):
        if wanted:
            clauses.append({name: wanted})
    if query.bilateral is not None:
        clauses.append({"bilateral": query.bilateral})
    if query.since:
        clauses.append({"sort_at": {"$gte": query.since}})
    if query.until:
        clauses.append({"sort_at": {"$lt": query.until}})
    if query.min_score is not None:
        clauses.append({"top_score": {"$gte": query.min_score}})
    # Tokens are single folded words between spaces; every one must occur.
    clauses += [{"tokens": {"$regex": f" {re.escape(token)} "}} for token in query.q_tokens]
    if query.after:
        key = "sort_at" if query.sort == "time" else "top_score"
        value, last_id = query.after
        clauses.append({"$or": [{key: {"$lt": value}}, {key: value, "_id": {"$lt": last_id}}]})
    return {"$and": clauses} if clauses else {}


async def _upsert(write: Callable[..., Awaitable[Any]], flt: dict[str, Any], change: dict[str, Any]) -> None:
    """An upsert that survives a concurrent one: on FerretDB 1.24 two upserts of a new ``_id``
    both insert and one fails with a duplicate key (seen with the stats refresher and a /sectors
    request); the document exists then, so the write is simply repeated as an update."""
    try:
        await write(flt, change, upsert=True)
    except DuplicateKeyError:
        await write(flt, change)


class EventPartitions:
    """Event storage for :class:`~shared.store.mongo.MongoStore` (see the module docstring)."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]]) -> None:
        self._db = db
        self._days = db[DAYS]
        self._stats = db[STATS]
        self._stats_cache: OrderedDict[tuple[date, int], DayStats] = OrderedDict()
        self._prepared: set[date] = set()

    async def _partition(self, day: date) -> Any:
        coll = self._db[_partition_name(day)]
        if day not in self._prepared:
            # What MongoDB uses; FerretDB keeps them but scans (see the module docstring).
            await coll.create_index([("sort_at", DESCENDING), ("_id", DESCENDING)], name="recent")
            await coll.create_index([("top_score", DESCENDING), ("_id", DESCENDING)], name="best")
            await coll.create_index([("sectors", ASCENDING), ("sort_at", DESCENDING)], name="sector_recent")
            self._prepared.add(day)
        return coll

    # writes
    async def _locate(self, ids: Iterable[str]) -> dict[str, date]:
        by_shard: dict[str, list[str]] = defaultdict(list)
        for item_id in ids:
            by_shard[_shard_name(item_id)].append(item_id)

        async def one(shard: str, wanted: list[str]) -> list[dict[str, Any]]:
            # A lone _id equality is the one filter FerretDB hands to SQLite.
            flt: dict[str, Any] = {"_id": wanted[0]} if len(wanted) == 1 else {"_id": {"$in": wanted}}
            return await self._db[shard].find(flt).to_list(None)

        found = await asyncio.gather(*(one(s, w) for s, w in by_shard.items()))
        return {d["_id"]: date.fromisoformat(d["day"]) for docs in found for d in docs}

    async def upsert(self, items: list[ClassifiedItem]) -> None:
        """Insert or replace each item in the partition of its day; move it if its day changed.

        Order matters for a crash at any point: event first, then the day's version, then the
        locator; a redelivered message finds the event or its locator missing and redoes the rest.
        """
        docs = {i.id: (item_doc(i), day_of(i.sort_at)) for i in items}
        if not docs:
            return
        located = await self._locate(docs)
        by_day: dict[date, list[dict[str, Any]]] = defaultdict(list)
        for doc, day in docs.values():
            by_day[day].append(doc)
        for day, day_docs in by_day.items():
            coll = await self._partition(day)
            fresh = [d for d in day_docs if located.get(d["_id"]) != day]
            known = [d for d in day_docs if located.get(d["_id"]) == day]
            replace = known
            if fresh:
                try:
                    # Insert first: FerretDB inserts 500 in ~0.2 s but takes ~25 ms per upsert.
                    await coll.insert_many(fresh, ordered=False)
                except BulkWriteError as exc:
                    errors = exc.details.get("writeErrors", [])
                    if any(e.get("code") != 11000 for e in errors):
                        raise
                    replace = known + [fresh[e["index"]] for e in errors]
            if replace:
                await coll.bulk_write([ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in replace], ordered=False)
        moved = {i: old for i, old in located.items() if old != docs[i][1]}
        for item_id, old in moved.items():
            await self._db[_partition_name(old)].delete_one({"_id": item_id})
        for day in {*by_day, *moved.values()}:
            await _upsert(self._days.update_one, {"_id": day.isoformat()}, {"$inc": {"v": 1}})
        new_ids: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for item_id, (_, day) in docs.items():
            if item_id not in located:
                new_ids[_shard_name(item_id)].append({"_id": item_id, "day": day.isoformat()})
        for shard, locators in new_ids.items():
            try:
                await self._db[shard].insert_many(locators, ordered=False)
            except BulkWriteError as exc:  # a redelivery that got this far before
                if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                    raise
        for item_id in moved:
            day = docs[item_id][1]
            await self._db[_shard_name(item_id)].update_one({"_id": item_id}, {"$set": {"day": day.isoformat()}})

    # reads
    async def get(self, item_id: str) -> ClassifiedItem | None:
        located = await self._locate([item_id])
        if item_id not in located:
            return None
        doc = await self._db[_partition_name(located[item_id])].find_one({"_id": item_id})
        return item_from(doc) if doc else None

    async def _day_entries(self, first: date | None, last: date | None) -> list[Day]:
        """Days that hold events between ``first`` and ``last`` (inclusive), newest first, each
        with its stats when stats for its current version exist."""
        flt: dict[str, Any] = {}
        if first or last:
            bounds = {}
            if first:
                bounds["$gte"] = first.isoformat()
            if last:
                bounds["$lte"] = last.isoformat()
            flt = {"_id": bounds}
        versions = {date.fromisoformat(d["_id"]): int(d.get("v", 0)) async for d in self._days.find(flt)}
        missing = [_stats_id(day, v) for day, v in versions.items() if (day, v) not in self._stats_cache]
        if missing:
            # One lone _id is pushed down to SQLite; more are read in one pass over the collection.
            flt = {"_id": missing[0]} if len(missing) == 1 else {"_id": {"$in": missing}}
            async for doc in self._stats.find(flt):
                day, v = date.fromisoformat(doc["day"]), int(doc["stats_v"])
                if versions.get(day) == v:
                    self._remember(day, v, DayStats.loads(doc["stats"], doc.get("words")))
        days = [Day(day, v, self._stats_cache.get((day, v))) for day, v in versions.items()]
        return sorted(days, key=lambda d: d.day, reverse=True)

    def _remember(self, day: date, v: int, stats: DayStats) -> None:
        self._stats_cache[(day, v)] = stats
        self._stats_cache.move_to_end((day, v))
        while len(self._stats_cache) > STATS_CACHE:
            self._stats_cache.popitem(last=False)

    async def _fresh_stats(self, day: Day) -> DayStats:
        if day.stats is not None:
            return day.stats
        stats = DayStats()
        async for doc in self._db[_partition_name(day.day)].find({}, _STATS_FIELDS):
            stats.add(doc)
        stats.word_filter, stats.words = WordFilter.of(stats.words), set()
        # Tagged with the version read before the scan (see the module docstring), in one of two
        # slots per day so that a slower refresher of an older version cannot hide a newer one.
        doc = {
            "_id": _stats_id(day.day, day.v),
            "day": day.day.isoformat(),
            "stats_v": day.v,
            "stats": stats.dumps(),
            "words": stats.word_filter.dumps(),
        }
        await _upsert(self._stats.replace_one, {"_id": doc["_id"]}, doc)
        self._remember(day.day, day.v, stats)
        return stats

    async def _find(self, day: date, flt: dict[str, Any], order: list[tuple[str, int]], limit: int) -> list[Any]:
        cursor = self._db[_partition_name(day)].find(flt).sort(order).limit(limit)
        return await cursor.to_list(None)

    async def find(self, query: EventQuery) -> list[ClassifiedItem]:
        limit = max(1, min(query.limit, MAX_PAGE))
        last = None
        if query.until:
            last = day_of(query.until - timedelta(microseconds=1))
        if query.sort == "time" and query.after and isinstance(query.after[0], datetime):
            after_day = day_of(query.after[0])
            last = min(last, after_day) if last else after_day
        days = [
            d
            for d in await self._day_entries(day_of(query.since) if query.since else None, last)
            if d.stats is None or d.stats.may_match(query)
        ]
        flt = _filter(query)
        docs: list[dict[str, Any]] = []
        if query.sort == "time":
            order = [("sort_at", DESCENDING), ("_id", DESCENDING)]
            # Newest day first, a wave of days at a time: as many as the fresh stats say may be
            # needed, and at least twice the last wave while the page stays short (the text is
            # not counted in the stats).
            start, width = 0, 1
            while start < len(days) and len(docs) < limit:
                need, end = limit - len(docs), start
                while end < len(days) and end - start < WAVE and (end - start < width or need > 0):
                    stats = days[end].stats
                    need -= stats.most_matches(query) if stats else need
                    end += 1
                wave = days[start:end]
                found = await asyncio.gather(*(self._find(d.day, flt, order, limit - len(docs)) for d in wave))
                for day_docs in found:  # in day order, so the first ``limit`` are the answer
                    docs += day_docs
                start, width = end, min(WAVE, 2 * width)
        else:
            order = [("top_score", DESCENDING), ("_id", DESCENDING)]
            # Best days first; once the page is full, a day whose best possible score is below the
            # page's last cannot contribute (stale days count as unbounded and go first).
            days.sort(key=lambda d: d.stats.best_possible(query) if d.stats else float("inf"), reverse=True)
            for start in range(0, len(days), WAVE):
                wave = days[start : start + WAVE]
                if len(docs) >= limit:
                    floor = docs[-1]["top_score"]
                    wave = [d for d in wave if d.stats is None or d.stats.best_possible(query) >= floor]
                    if not wave:
                        break
                for day_docs in await asyncio.gather(*(self._find(d.day, flt, order, limit) for d in wave)):
                    docs += day_docs
                docs.sort(key=lambda d: (d["top_score"], d["_id"]), reverse=True)
                del docs[limit:]
        return [item_from(d) for d in docs[:limit]]

    async def refresh_stats(self, max_days: int) -> int:
        """Recompute the stats of up to ``max_days`` stale days, newest first; how many."""
        stale = [d for d in await self._day_entries(None, None) if d.stats is None][:max_days]
        sem = asyncio.Semaphore(STATS_CONCURRENCY)

        async def one(day: Day) -> None:
            async with sem:
                await self._fresh_stats(day)

        await asyncio.gather(*(one(d) for d in stale))
        return len(stale)

    async def sector_counts(self, *, country: str | None, since: datetime | None) -> list[SectorCount]:
        first = day_of(since) if since else None
        days = await self._day_entries(first, None)
        sem = asyncio.Semaphore(STATS_CONCURRENCY)

        async def stats_of(day: Day) -> DayStats:
            async with sem:
                if since and day.day == first and since > _midnight(day.day):
                    # A partial first day: count the events at or after ``since`` only.
                    partial = DayStats()
                    coll = self._db[_partition_name(day.day)]
                    async for doc in coll.find({"sort_at": {"$gte": since}}, _STATS_FIELDS):
                        partial.add(doc)
                    return partial
                return await self._fresh_stats(day)

        totals: Counter[tuple[str, str]] = Counter()
        for day, stats in zip(days, await asyncio.gather(*(stats_of(d) for d in days)), strict=True):
            week = (day.day - timedelta(days=day.day.weekday())).isoformat()
            pool = stats.by_country[country] if country else stats.sectors
            for sector, count in pool.items():
                if count:
                    totals[(sector, week)] += count
        counts = [SectorCount(sector, week, n) for (sector, week), n in totals.items()]
        return sorted(counts, key=lambda c: (c.week, c.sector))
