"""Event queries on both stores against a plain-Python oracle.

Random events over 20 days go into a store; every filter of the API alone and combined, both sort
orders and two page sizes are followed cursor by cursor, and the ids must be exactly what a
straightforward filter-and-sort in Python gives — before and after items are rewritten (new
sectors, a time on another day). Then the layout migrations of the MongoDB store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.cli import main
from shared.models import AgreementLink, ClassifiedItem, DuplicateRef, SectorScore
from shared.store import EventQuery, SectorCount, Store
from shared.store.mongo import MongoStore
from shared.store.sqlite import SQLiteStore
from shared.text import search_tokens

T0 = datetime(2026, 5, 4, 0, 0, tzinfo=UTC)  # a Monday
SECTORS = ["energy", "transport", "mining", "maritime"]
WORDS = ["rail", "gas", "port", "wheat", "copper", "tariff"]
AGREEMENTS = [("railways-mou", "railways"), ("transit-trade", "transit-trade"), ("media-app", "media")]


@pytest.fixture(params=["sqlite", pytest.param("mongo", marks=pytest.mark.mongo)])
async def store(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> AsyncIterator[Store]:
    s: Store
    if request.param == "mongo":
        s = MongoStore(request.getfixturevalue("mongo_uri"), f"test_{unique}")
    else:
        s = SQLiteStore(tmp_path / "store.sqlite3")
    await s.start()
    yield s
    if isinstance(s, MongoStore):
        await s.db.client.drop_database(s.db.name)
    await s.close()


def random_item(rng: random.Random, n: int, days: int) -> ClassifiedItem:
    sectors = rng.sample(SECTORS, rng.choice([0, 1, 1, 2]))
    countries = rng.choice([[], ["PK"], ["KZ"], ["PK", "KZ"]])
    # Few distinct scores and some equal times, so ties are broken by id.
    score = rng.choice([0.5, 1.0, 2.0, 3.5])
    at = T0 + timedelta(minutes=rng.randrange(days * 24 * 4) * 15)
    words = " ".join(rng.sample(WORDS, 2))
    linked = rng.sample(AGREEMENTS, rng.choice([0, 0, 1, 2]))
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
        agreements=[AgreementLink(id=a, area=area, score=1.0, terms=[]) for a, area in linked],
        stage=rng.choice(["signed", "follow_up_talks", "underway", "setback"]) if linked else None,
        classifier_version="test",
        publisher=rng.choice([None, None, "dawn.example", "tribune.example"]),  # an aggregator's entries
    )


def oracle(items: dict[str, ClassifiedItem], q: EventQuery) -> list[str]:
    """What the query means, without any index."""

    def keep(i: ClassifiedItem) -> bool:
        words = set(search_tokens(f"{i.title} {i.summary}"))
        return (
            (not q.any_sectors or bool(set(q.any_sectors) & set(i.sectors)))
            and (q.country is None or q.country in i.countries)
            and (q.bilateral is None or i.bilateral == q.bilateral)
            and (q.source_id is None or i.source_id == q.source_id)
            and (q.language is None or i.language == q.language)
            and (q.since is None or i.sort_at >= q.since)
            and (q.until is None or i.sort_at < q.until)
            and (q.min_score is None or i.top_score >= q.min_score)
            and set(q.q_tokens) <= words
            and (q.agreement is None or q.agreement in {a.id for a in i.agreements})
        )

    def key(i: ClassifiedItem) -> tuple[Any, str]:
        return (i.sort_at if q.sort == "time" else i.top_score, i.id)

    rows = sorted(filter(keep, items.values()), key=key, reverse=True)
    if q.after:
        rows = [i for i in rows if key(i) < q.after]
    return [i.id for i in rows[: q.limit]]


def oracle_counts(items: dict[str, ClassifiedItem], country: str | None, since: datetime | None) -> list[SectorCount]:
    counts: Counter[tuple[str, str]] = Counter()
    for i in items.values():
        if (country is None or country in i.countries) and (since is None or i.sort_at >= since):
            counts.update((s, i.week) for s in set(i.sectors))
    return sorted((SectorCount(s, w, n) for (s, w), n in counts.items()), key=lambda c: (c.week, c.sector))


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
    {"agreement": "railways-mou"},
    {"agreement": "transit-trade", "sector": "energy"},
    {"agreement": "media-app", "q_tokens": ("gas",), "sort": "score"},
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


async def assert_oracle(store: Store, items: dict[str, ClassifiedItem]) -> None:
    for query in QUERIES:
        for size in (7, 50):
            want, after = [], None
            while page := oracle(items, EventQuery(**query, limit=size, after=after)):
                want += page
                last = items[page[-1]]
                after = (last.sort_at if query.get("sort", "time") == "time" else last.top_score, last.id)
            assert await pages(store, query, size) == want, (query, size)
    for country in (None, "PK", "KZ"):
        for since in (None, T0 + timedelta(days=6), T0 + timedelta(days=6, hours=13)):
            got = await store.sector_counts(country=country, since=since)
            assert got == oracle_counts(items, country, since), (country, since)


async def assert_activity(store: Store, items: dict[str, ClassifiedItem]) -> None:
    """Linked items by (agreement, stage, source, publisher), with first and last times, as Python
    counts them; with ``since`` (the tracker's signing moment), only the items listed at or after it."""
    for since in (None, T0 + timedelta(days=6), T0 + timedelta(days=6, hours=13)):
        want: dict[tuple[str, str | None, str, str | None], list[datetime]] = {}
        for i in items.values():
            for a in i.agreements:
                if since is None or i.sort_at >= since:
                    want.setdefault((a.id, i.stage, i.source_id, i.publisher), []).append(i.sort_at)
        got = await store.agreement_activity(since=since)
        assert {(r.agreement_id, r.stage, r.source_id, r.publisher): (r.items, r.first_at, r.last_at) for r in got} == {
            k: (len(v), min(v), max(v)) for k, v in want.items()
        }, since
        one = await store.agreement_activity("railways-mou", since=since)
        assert {r.agreement_id for r in one} <= {"railways-mou"} and sum(r.items for r in one) == sum(
            len(v) for k, v in want.items() if k[0] == "railways-mou"
        ), since


async def assert_copies(store: Store, items: dict[str, ClassifiedItem], refs: list[DuplicateRef]) -> None:
    """Copies of linked items by (agreement, stage, copy's source), first and last seen, as Python
    counts them; ``since`` bounds the items, as for the activity, and the copies."""
    for since in (None, T0 + timedelta(days=6), T0 + timedelta(days=6, hours=13)):
        want: dict[tuple[str, str | None, str], list[datetime]] = {}
        for ref in refs:
            if ref.source_id == "src_b":
                continue  # not asked for
            i = items[ref.item_id]
            for a in i.agreements:
                if since is None or (i.sort_at >= since and ref.seen_at >= since):
                    want.setdefault((a.id, i.stage, ref.source_id), []).append(ref.seen_at)
        got = await store.agreement_copies(["src_app", "src_kazinform", "src_unknown"], since=since)
        assert {(r.agreement_id, r.stage, r.source_id): (r.items, r.first_at, r.last_at) for r in got} == {
            k: (len(v), min(v), max(v)) for k, v in want.items()
        }, since
        assert all(r.publisher is None for r in got)
        assert await store.agreement_copies([], since=since) == []
        one = await store.agreement_copies(["src_app", "src_kazinform"], "railways-mou", since=since)
        assert {(r.agreement_id, r.stage, r.source_id): r.items for r in one} == {
            k: len(v) for k, v in want.items() if k[0] == "railways-mou"
        }, since


async def test_queries_match_the_oracle(store: Store) -> None:
    rng = random.Random(11)
    items = {i.id: i for i in (random_item(rng, n, days=20) for n in range(300))}
    listed = list(items.values())
    await store.upsert_items(listed[:250])
    for i in listed[250:]:
        await store.upsert_item(i)
    await assert_oracle(store, items)
    # Rewrites: new sectors and words, and a time on another day; nothing stale may remain.
    changed = [random_item(rng, n, days=20) for n in (3, 60, 200, 301, 302)]
    moved = items["itm_0010"].model_copy(update={"published_at": T0 + timedelta(days=19, hours=23)})
    await store.upsert_items([*changed, moved])
    items.update({i.id: i for i in (*changed, moved)})
    await assert_oracle(store, items)
    assert await store.get_item("itm_0010") == moved
    await assert_activity(store, items)
    # Copies of some items (linked or not) from other sources, several of one item from one source.
    refs = [
        DuplicateRef(
            id=f"itm_copy{n:03d}",
            item_id=f"itm_{rng.randrange(300):04d}",
            source_id=rng.choice(["src_app", "src_b", "src_kazinform"]),
            reason="near_duplicate",
            seen_at=T0 + timedelta(days=rng.randrange(25), minutes=rng.randrange(60)),
        )
        for n in range(120)
    ]
    await store.add_duplicates(refs)
    await assert_copies(store, items, refs)
    assert await store.get_items(["itm_0301", "itm_9999", "itm_0010"]) == {"itm_0301": changed[3], "itm_0010": moved}
    assert await store.get_item("itm_9999") is None


async def test_duplicates_follow_their_story(store: Store) -> None:
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
    await store.add_duplicates(refs[:100])
    await store.add_duplicates(refs[100:] + refs[:3])  # idempotent
    wanted = [f"itm_{n:04d}" for n in range(0, 60, 3)]
    expected: dict[str, list[DuplicateRef]] = {}
    for ref in sorted(refs, key=lambda r: (r.seen_at, r.id)):
        if ref.item_id in wanted:
            expected.setdefault(ref.item_id, []).append(ref)
    assert await store.duplicates_of(wanted) == expected
    assert await store.list_duplicates(refs[7].item_id) == [
        r for r in sorted(refs, key=lambda r: (r.seen_at, r.id)) if r.item_id == refs[7].item_id
    ]
    assert await store.duplicates_of([]) == {}


async def test_items_stored_before_publishers_existed_count_with_the_others(store: Store) -> None:
    # A document written before items had a publisher lacks the field; MongoDB's $group kept it
    # apart from the null ones (two rows for one source), SQLite did not (review of 2026-12-05).
    rng = random.Random(3)
    linked = [
        random_item(rng, n, days=5).model_copy(
            update={
                "source_id": "src_a",
                "publisher": None,
                "stage": "underway",
                "agreements": [AgreementLink(id="railways-mou", area="railways", score=1.0, terms=[])],
            }
        )
        for n in range(2)
    ]
    await store.upsert_items(linked)
    if isinstance(store, MongoStore):
        await store.db["events"].update_one({"_id": linked[0].id}, {"$unset": {"publisher": ""}})
    else:
        assert isinstance(store, SQLiteStore)
        await store.db.execute("UPDATE events SET doc = json_remove(doc, '$.publisher') WHERE id = ?", (linked[0].id,))
        await store.db.commit()
    rows = await store.agreement_activity("railways-mou")
    assert [(r.source_id, r.publisher, r.items) for r in rows] == [("src_a", None, 2)]


LEGACY_DAY = "events_20260504"


def legacy_event_doc(item: ClassifiedItem, *, tokens: object) -> dict[str, Any]:
    doc = item.model_dump(mode="python")
    doc["_id"] = doc.pop("id")
    doc.update(sort_at=item.sort_at, top_score=item.top_score, tokens=tokens, week="x", sector_weeks=[])
    return doc


@pytest.mark.mongo
async def test_earlier_mongo_layouts_are_migrated(
    mongo_uri: str, unique: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Databases written by earlier versions: one ``items`` collection; day partitions with their
    bookkeeping; duplicates in ``{item}#n`` slots of 256 shards; the claims collection."""
    rng = random.Random(5)
    legacy = [random_item(rng, n, days=1) for n in range(30)]
    copies = [
        DuplicateRef(id=f"itm_c{n}", item_id=f"itm_{n % 3:04d}", source_id="s", reason="canonical_url", seen_at=T0)
        for n in range(9)
    ]
    name = f"test_{unique}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    db = client[name]
    try:
        await db["items"].insert_many([legacy_event_doc(i, tokens=["story"]) for i in legacy[:10]])
        await db[LEGACY_DAY].insert_many([legacy_event_doc(i, tokens=" story body ") for i in legacy[10:]])
        await db["events_days"].insert_one({"_id": "2026-05-04", "v": 3})
        await db["events_stats"].insert_one({"_id": "2026-05-04#1", "day": "2026-05-04", "stats_v": 3})
        await db["events_ids_07"].insert_one({"_id": "itm_0010", "day": "2026-05-04"})
        await db["claims"].insert_one({"_id": "source:src_1:1", "lease_until": T0})
        for n, ref in enumerate(copies):
            slot = {**ref.model_dump(mode="python", exclude={"id"}), "_id": f"{ref.item_id}#{n}", "dup_id": ref.id}
            await db[f"duplicates_{n % 2:03d}"].insert_one(slot)
        # An event the current code wrote meanwhile (a rolling upgrade) is newer than its legacy
        # copy: it is kept (before, the legacy copy replaced it).
        edited = legacy[0].model_copy(update={"title": "edited", "revision": 2})
        current = MongoStore(mongo_uri, name)
        await current.start()
        await current.upsert_items([edited])
        await current.close()
        monkeypatch.setenv("CORRIDOR_MONGODB_URI", mongo_uri)
        monkeypatch.setenv("CORRIDOR_MONGODB_DATABASE", name)
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        try:
            assert await asyncio.to_thread(main, ["store", "migrate"]) == 0
        finally:  # the CLI configures logging for its process; give pytest's back
            root.handlers[:], root.level = handlers, level
        assert json.loads(capsys.readouterr().out) == {"moved": {"events": 30, "duplicates": 9}}
        store = MongoStore(mongo_uri, name)
        await store.start()
        try:
            stored = await store.get_items(i.id for i in legacy)
            assert stored == {i.id: i for i in legacy} | {edited.id: edited}
            assert sorted(i.id for i in await store.list_items(EventQuery(limit=100))) == sorted(stored)
            assert [i.id for i in await store.list_items(EventQuery(q_tokens=("story",), limit=100))] != []
            got = await store.duplicates_of(["itm_0000", "itm_0001", "itm_0002"])
            assert sorted(r.id for refs in got.values() for r in refs) == sorted(r.id for r in copies)
            left = set(await store.db.list_collection_names())
            assert not left & {"items", LEGACY_DAY, "events_days", "events_stats", "events_ids_07", "claims"}
            assert not any(n.startswith("duplicates_") for n in left)
            assert await store.migrate() == {"events": 0, "duplicates": 0}  # idempotent
        finally:
            await store.close()
    finally:
        await client.drop_database(name)
        await client.close()


async def test_earlier_sqlite_layout_is_migrated(tmp_path: Path) -> None:
    """The embedded store of earlier versions: ``items`` + ``item_index`` + ``item_tokens``, and
    deliveries that kept their item id only inside the JSON document."""
    rng = random.Random(6)
    legacy = [random_item(rng, n, days=2) for n in range(40)]
    path = tmp_path / "old.sqlite3"
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE items (id TEXT PRIMARY KEY, sort_at TEXT NOT NULL, doc TEXT NOT NULL);"
        "CREATE TABLE item_index (id TEXT PRIMARY KEY);"
        "CREATE TABLE item_tokens (token TEXT, id TEXT);"
        "CREATE TABLE deliveries (id TEXT PRIMARY KEY, subscription_id TEXT NOT NULL, status TEXT NOT NULL,"
        " next_attempt_at TEXT NOT NULL, lease_until TEXT, created_at TEXT NOT NULL, doc TEXT NOT NULL);"
    )
    con.executemany("INSERT INTO items VALUES (?,?,?)", [(i.id, "x", i.model_dump_json()) for i in legacy])
    doc = '{"id": "msg_1", "subscription_id": "sub_1", "item_id": "itm_0001", "channel": "webhook"}'
    con.execute("INSERT INTO deliveries VALUES ('msg_1','sub_1','pending','x',NULL,'x',?)", (doc,))
    con.commit()
    con.close()
    store = SQLiteStore(path)
    await store.start()
    try:
        edited = legacy[0].model_copy(update={"title": "edited", "revision": 2})
        await store.upsert_items([edited])  # written by the current code: newer than the legacy copy
        assert await store.migrate() == {"events": 40}
        assert await store.get_items(i.id for i in legacy) == {i.id: i for i in legacy} | {edited.id: edited}
        assert [d.id for d in await store.list_deliveries(item_id="itm_0001")] == ["msg_1"]
        assert await store.migrate() == {}
    finally:
        await store.close()


async def test_sqlite_search_for_common_words_reads_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Words with more than WORD_SCAN matches are checked row by row on an ordered scan instead
    of sorting their matches: the same answers either way."""
    import shared.store.sqlite

    store = SQLiteStore(tmp_path / "s.sqlite3")
    await store.start()
    rng = random.Random(12)
    items = {i.id: i for i in (random_item(rng, n, days=10) for n in range(200))}
    await store.upsert_items(list(items.values()))
    monkeypatch.setattr(shared.store.sqlite, "WORD_SCAN", 3)
    await assert_oracle(store, items)
    await store.close()


async def test_sqlite_reads_the_tracker_queries_through_indexes(tmp_path: Path) -> None:
    # The statements the tracker's reads send (traced with their values), explained: no scan of
    # the events or the copies, whatever the copies table holds.
    store = SQLiteStore(tmp_path / "plans.sqlite3")
    await store.start()
    try:
        sent: list[str] = []
        await store.db.set_trace_callback(sent.append)
        await store.agreement_activity(since=T0)
        await store.agreement_activity("railways-mou", since=T0)
        await store.agreement_copies(["src_app", "src_kazinform"], since=T0)
        await store.agreement_copies(["src_app"], "railways-mou", since=T0)
        await store.db.set_trace_callback(None)
        reads = [sql for sql in sent if sql.lstrip().upper().startswith("SELECT")]
        assert len(reads) == 4, sent
        for sql in reads:
            plan = " | ".join(str(row[3]) for row in await store._rows("EXPLAIN QUERY PLAN " + sql, ()))
            assert "SCAN" not in plan.replace("SCAN TABLE", "SCAN"), (sql, plan)
            if "duplicates d" in sql:  # the copies first, by their source: they are few, the items many
                assert plan.startswith("SEARCH d USING INDEX duplicates_source"), plan
    finally:
        await store.close()
