"""The day-partitioned event layout of the MongoDB-wire store, on real FerretDB.

The SQLite store answers the same queries from one table with real indexes, so it is the oracle:
random events over many days go into both, and every query must give the same ids in the same
order, page after page — while the day statistics that let the Mongo store skip days are fresh,
stale, or partly stale.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from shared.models import ClassifiedItem, DuplicateRef, SectorScore
from shared.store import EventQuery, Store
from shared.store.mongo import MongoStore
from shared.store.sqlite import SQLiteStore

pytestmark = pytest.mark.mongo

T0 = datetime(2026, 5, 4, 0, 0, tzinfo=UTC)  # a Monday
SECTORS = ["energy", "transport", "mining", "maritime"]
WORDS = ["rail", "gas", "port", "wheat", "copper", "tariff"]


@pytest.fixture
async def stores(mongo_uri: str, unique: str, tmp_path: Path) -> AsyncIterator[tuple[MongoStore, SQLiteStore]]:
    mongo = MongoStore(mongo_uri, f"test_{unique}")
    sqlite = SQLiteStore(tmp_path / "oracle.sqlite3")
    await mongo.start()
    await sqlite.start()
    yield mongo, sqlite
    await mongo.db.client.drop_database(mongo.db.name)
    await mongo.close()
    await sqlite.close()


def random_item(rng: random.Random, n: int, days: int) -> ClassifiedItem:
    sectors = rng.sample(SECTORS, rng.choice([0, 1, 1, 2]))
    countries = rng.choice([[], ["PK"], ["KZ"], ["PK", "KZ"]])
    # Few distinct scores and some equal times, so ties are broken by id across days.
    score = rng.choice([0.5, 1.0, 2.0, 3.5])
    at = T0 + timedelta(minutes=rng.randrange(days * 24 * 4) * 15)
    words = " ".join(rng.sample(WORDS, 2))
    return ClassifiedItem(
        id=f"itm_{n:04d}",
        source_id=rng.choice(["src_a", "src_b", "src_c"]),
        source_url="http://feeds.example/rss",
        title=f"Story {n} {words}",
        summary="body",
        published_at=at,
        fetched_at=at,
        language=rng.choice(["en", "ru"]),
        sectors=sectors,
        sector_scores=[SectorScore(id=s, score=score, terms=[]) for s in sectors],
        countries=countries,  # type: ignore[arg-type]
        bilateral=len(countries) == 2,
        classifier_version="test",
    )


QUERIES: list[dict[str, Any]] = [
    {},
    {"sector": "energy"},
    {"sectors": ("mining", "maritime")},
    {"sector": "transport", "country": "KZ"},
    {"country": "PK", "bilateral": False},
    {"bilateral": True},
    {"source_id": "src_b", "language": "ru"},
    {"min_score": 2.0},  # equal to a score some days top out at
    {"q_tokens": ("rail",)},
    {"q_tokens": ("gas", "port")},
    {"since": T0 + timedelta(days=3, hours=5), "until": T0 + timedelta(days=9, hours=7)},
    {"sort": "score"},
    {"sort": "score", "sector": "energy", "country": "PK"},
    {"sort": "score", "q_tokens": ("copper",)},
]


async def pages(store: Store, query: dict[str, Any], size: int) -> list[str]:
    """Every id the query lists, following cursors page by page."""
    seen: list[str] = []
    after: tuple[datetime | float, str] | None = None
    for _ in range(200):
        page = await store.list_items(EventQuery(**query, limit=size, after=after))
        seen += [i.id for i in page]
        if len(page) < size:
            return seen
        last = page[-1]
        after = (last.sort_at if query.get("sort", "time") == "time" else last.top_score, last.id)
    raise AssertionError("pagination did not end")


async def assert_same(mongo: Store, oracle: Store) -> None:
    for query in QUERIES:
        for size in (7, 50):
            want = await pages(oracle, query, size)
            assert await pages(mongo, query, size) == want, (query, size)
    for country in (None, "PK", "KZ"):
        for since in (None, T0 + timedelta(days=6), T0 + timedelta(days=6, hours=13)):
            got = await mongo.sector_counts(country=country, since=since)
            assert got == await oracle.sector_counts(country=country, since=since), (country, since)


async def test_partitioned_queries_match_the_indexed_oracle(
    stores: tuple[MongoStore, SQLiteStore], mongo_uri: str
) -> None:
    mongo, oracle = stores
    rng = random.Random(11)
    items = [random_item(rng, n, days=20) for n in range(300)]
    for store in stores:
        await store.upsert_items(items[:250])
        for i in items[250:]:
            await store.upsert_item(i)
    await assert_same(mongo, oracle)  # stats stale: every day is read
    await assert_same(mongo, oracle)  # stats fresh (computed by sector_counts): days are skipped
    assert await mongo.refresh_stats(100) == 0 and await oracle.refresh_stats(100) == 0  # nothing stale
    other = MongoStore(mongo_uri, mongo.db.name)
    try:
        await assert_same(other, oracle)  # another process: the stats come from the store, not memory
    finally:
        await other.close()

    # Writes after the stats were computed: new items, reclassified items, and items whose time
    # moved them to another day. Stats of the touched days go stale; nothing may be missed.
    changed = [random_item(rng, n, days=20) for n in (3, 60, 200, 301, 302)]
    moved = items[10].model_copy(update={"published_at": T0 + timedelta(days=19, hours=23)})
    for store in stores:
        await store.upsert_items([*changed, moved])
    await assert_same(mongo, oracle)  # the touched days are stale (sector_counts in here refreshes them)
    await mongo.upsert_items(changed[:2])
    # What the classifier's background loop does: the stale days, a bounded number at a time.
    assert await mongo.refresh_stats(1) == 1 and await mongo.refresh_stats(100) >= 1
    assert await mongo.refresh_stats(100) == 0
    await assert_same(mongo, oracle)
    got = await mongo.get_item("itm_0010")
    assert got is not None and got.published_at == moved.published_at
    assert (await mongo.get_item("itm_0301")) == changed[3]
    assert await mongo.get_item("itm_9999") is None


async def test_stats_skip_days_but_see_new_writes(stores: tuple[MongoStore, SQLiteStore]) -> None:
    mongo, _ = stores
    rng = random.Random(3)
    base = random_item(rng, 1, days=1).model_copy(update={"sectors": ["transport"], "published_at": T0})
    await mongo.upsert_items([base.model_copy(update={"id": f"itm_t{n}"}) for n in range(5)])
    assert await mongo.list_items(EventQuery(sector="energy")) == []
    await mongo.sector_counts()  # the day's stats are now fresh: no energy on that day
    energy = base.model_copy(update={"id": "itm_e1", "sectors": ["energy"], "published_at": T0 + timedelta(hours=1)})
    await mongo.upsert_item(energy)
    assert [i.id for i in await mongo.list_items(EventQuery(sector="energy"))] == ["itm_e1"]
    counts = await mongo.sector_counts()
    assert {(c.sector, c.count) for c in counts} == {("transport", 5), ("energy", 1)}


async def test_events_of_the_single_collection_layout_are_migrated(mongo_uri: str, unique: str) -> None:
    """Databases written by earlier versions kept every event in one ``items`` collection."""
    rng = random.Random(5)
    legacy = [random_item(rng, n, days=3) for n in range(12)]
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    try:
        docs = []
        for i in legacy:
            doc = i.model_dump(mode="python")
            doc["_id"] = doc.pop("id")
            doc.update(sort_at=i.sort_at, top_score=i.top_score, tokens=["story"], week="x", sector_weeks=[])
            docs.append(doc)
        await client[f"test_{unique}"]["items"].insert_many(docs)
        store = MongoStore(mongo_uri, f"test_{unique}")
        await store.start()
        try:
            assert await store.get_item("itm_0004") == legacy[4]
            listed = await store.list_items(EventQuery(limit=50))
            assert sorted(i.id for i in listed) == sorted(i.id for i in legacy)
            assert "items" not in await store.db.list_collection_names()
        finally:
            await store.close()
    finally:
        await client.drop_database(f"test_{unique}")
        await client.close()


async def test_duplicates_across_shards_match_the_oracle(stores: tuple[MongoStore, SQLiteStore]) -> None:
    rng = random.Random(8)
    refs = [
        DuplicateRef(
            id=f"itm_copy{n:03d}",
            item_id=f"itm_{rng.randrange(40):04d}",
            source_id=f"src_{n % 5}",
            reason=rng.choice(["canonical_url", "near_duplicate"]),
            seen_at=T0 + timedelta(minutes=rng.randrange(30)),  # equal times: ordered by id
        )
        for n in range(150)
    ]
    for store in stores:
        for ref in refs:
            await store.add_duplicate(ref)
        await store.add_duplicate(refs[0])  # idempotent
    mongo, oracle = stores
    wanted = [f"itm_{n:04d}" for n in range(0, 60, 3)]
    assert await mongo.duplicates_of(wanted) == await oracle.duplicates_of(wanted)
    assert await mongo.list_duplicates(refs[7].item_id) == await oracle.list_duplicates(refs[7].item_id)
    assert await mongo.duplicates_of([]) == {}
    # Two ingest replicas recording copies of one story at once: each kept once, none overwritten.
    story = [
        DuplicateRef(id=f"itm_race{n}", item_id="itm_story", source_id="s", reason="near_duplicate", seen_at=T0)
        for n in range(12)
    ]
    await asyncio.gather(*(mongo.add_duplicate(r) for r in story + story[:6]))
    assert [r.id for r in await mongo.list_duplicates("itm_story")] == sorted(r.id for r in story)


async def test_duplicates_of_the_single_collection_layout_are_migrated(mongo_uri: str, unique: str) -> None:
    refs = [
        DuplicateRef(id=f"itm_c{n}", item_id=f"itm_{n % 3}", source_id="s", reason="canonical_url") for n in range(9)
    ]
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    try:
        docs = [{**r.model_dump(mode="python", exclude={"id"}), "_id": r.id} for r in refs]
        await client[f"test_{unique}"]["duplicates"].insert_many(docs)
        store = MongoStore(mongo_uri, f"test_{unique}")
        await store.start()
        try:
            got = await store.duplicates_of(["itm_0", "itm_1", "itm_2"])
            assert sorted(r.id for refs_ in got.values() for r in refs_) == sorted(r.id for r in refs)
            assert "duplicates" not in await store.db.list_collection_names()
        finally:
            await store.close()
    finally:
        await client.drop_database(f"test_{unique}")
        await client.close()


async def test_concurrent_writers_and_refreshers_of_one_new_day(stores: tuple[MongoStore, SQLiteStore]) -> None:
    """Two upserts of a new _id race on FerretDB (both insert, one fails): the first writes of a
    new day from several replicas, and the stats refresher racing a /sectors request, must not."""
    mongo, _ = stores
    rng = random.Random(4)
    items = [random_item(rng, n, days=1).model_copy(update={"sectors": ["energy"]}) for n in range(16)]
    await asyncio.gather(*(mongo.upsert_item(i) for i in items))
    results = await asyncio.gather(*(mongo.refresh_stats(10) for _ in range(4)), mongo.sector_counts())
    assert sum(c.count for c in results[-1]) == 16  # type: ignore[union-attr]
    assert len(await mongo.list_items(EventQuery(sector="energy", limit=100))) == 16
