"""One contract, two adapters: SQLite (embedded) and MongoDB (on the real Mongo-wire test server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.errors import Conflict
from shared.models import AgreementEvent, ClassifiedItem, Delivery, DuplicateRef, Source, Subscription
from shared.store import EventQuery, Store
from shared.store.base import MAX_PAGE
from shared.store.mongo import MongoStore
from shared.store.sqlite import SQLiteStore

T0 = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("mongo", marks=pytest.mark.mongo)])
async def store(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> AsyncIterator[Store]:
    s: Store
    if request.param == "mongo":
        s = MongoStore(request.getfixturevalue("mongo_uri"), f"test_{unique}")
    else:
        s = SQLiteStore(tmp_path / "store.sqlite3")
    await s.start()
    yield s
    await s.close()


def item(n: int, *, sectors: list[str], countries: list[str], at: datetime | None = None) -> ClassifiedItem:
    return ClassifiedItem(
        id=f"itm_{n:03d}",
        source_id="src_1",
        source_url="http://feeds.example/rss",
        url=f"http://example/{n}",
        title=f"Item {n}",
        summary="text",
        published_at=at or T0 + timedelta(minutes=n),
        fetched_at=T0,
        sectors=sectors,
        countries=countries,  # type: ignore[arg-type]
        classifier_version="test",
    )


async def test_source_url_is_unique_and_claims_are_exclusive(store: Store) -> None:
    src = Source(id="src_a", url="http://a.example/feed", interval_s=60, next_check_at=T0)
    await store.insert_source(src)
    with pytest.raises(Conflict):
        await store.insert_source(src.model_copy(update={"id": "src_b"}))
    claimed = await store.claim_due_source(T0, T0 + timedelta(seconds=30))
    assert claimed is not None and claimed.id == "src_a"
    assert await store.claim_due_source(T0 + timedelta(seconds=10), T0 + timedelta(seconds=40)) is None, "leased"
    again = await store.claim_due_source(T0 + timedelta(seconds=31), T0 + timedelta(seconds=90))
    assert again is not None, "an expired lease can be claimed again"
    await store.update_source(
        "src_a",
        {
            "lease_until": None,
            "next_check_at": T0 + timedelta(hours=1),
            "consecutive_errors": 2,
            "last_error": "HTTP 500",
        },
    )
    assert await store.claim_due_source(T0 + timedelta(minutes=5), T0 + timedelta(minutes=6)) is None, "not due"
    got = await store.get_source("src_a")
    assert got is not None and got.consecutive_errors == 2 and got.last_error == "HTTP 500"
    assert [s.id for s in await store.list_sources()] == ["src_a"]


async def test_the_due_count_is_what_claims_could_lease(store: Store) -> None:
    for n, (due_in, active) in enumerate([(-60, True), (-1, True), (0, True), (60, True), (-60, False)]):
        source = Source(
            id=f"src_{n}",
            url=f"http://{n}.example/feed",
            interval_s=60,
            next_check_at=T0 + timedelta(seconds=due_in),
            active=active,
        )
        await store.insert_source(source)
    assert await store.count_due_sources(T0) == 3, "due now or before, active"
    assert await store.claim_due_source(T0, T0 + timedelta(seconds=30)) is not None
    assert await store.count_due_sources(T0) == 2, "a leased source is not queued"
    assert await store.count_due_sources(T0 + timedelta(seconds=60)) == 4, "the lease ran out, one more came due"


async def test_concurrent_claims_give_one_winner(store: Store) -> None:
    await store.insert_source(Source(id="src_a", url="http://a.example/feed", interval_s=60, next_check_at=T0))
    results = await asyncio.gather(*(store.claim_due_source(T0, T0 + timedelta(seconds=30)) for _ in range(8)))
    assert sum(r is not None for r in results) == 1


async def test_seen_hashes(store: Store) -> None:
    assert await store.seen_hashes(["a", "b"]) == {}
    await store.mark_seen({"a": "h1"}, T0)
    await store.mark_seen({"a": "h1"}, T0)  # idempotent
    assert await store.seen_hashes(["a", "b", "c"]) == {"a": "h1"}
    await store.mark_seen({"a": "h2", "b": "h3"}, T0)
    assert await store.seen_hashes(["a", "b"]) == {"a": "h2", "b": "h3"}


async def test_dedupe_keys_keep_the_first_owner(store: Store) -> None:
    assert await store.claim_keys({"url:x": "itm_1", "fp:0:ab": "itm_1"}, T0) == {"url:x": "itm_1", "fp:0:ab": "itm_1"}
    assert await store.claim_keys({"url:x": "itm_2", "url:y": "itm_2"}, T0) == {"url:x": "itm_1", "url:y": "itm_2"}
    results = await asyncio.gather(*(store.claim_keys({"url:z": f"itm_{n}"}, T0) for n in range(6)))
    assert len({r["url:z"] for r in results}) == 1, "concurrent claimers agree on one owner"


async def test_an_abandoned_dedupe_claim_is_taken_over_by_one(store: Store) -> None:
    await store.claim_keys({"url:t": "itm_1", "fp:t": "itm_1"}, T0)
    later = T0 + timedelta(minutes=5)
    assert await store.take_over_keys({"url:t": ("itm_9", "itm_2")}, later, later) == set(), "not the owner"
    assert await store.take_over_keys({"url:t": ("itm_1", "itm_2")}, T0, later) == set(), "claim too young"
    results = await asyncio.gather(
        *(
            store.take_over_keys({"url:t": ("itm_1", f"itm_{n}"), "fp:t": ("itm_1", f"itm_{n}")}, later, later)
            for n in range(2, 8)
        )
    )
    winners = [n for n, taken in zip(range(2, 8), results, strict=True) if taken]
    assert len(winners) == 1 and results[winners[0] - 2] == {"url:t", "fp:t"}, results
    owner = f"itm_{winners[0]}"
    assert await store.claim_keys({"url:t": "itm_x", "fp:t": "itm_x"}, later) == {"url:t": owner, "fp:t": owner}
    # The new claim is dated now: it is not abandoned until its own grace has passed.
    assert await store.take_over_keys({"url:t": (owner, "itm_y")}, later, later) == set()
    # Its own item claiming it again keeps the claim's time: a claim renewed at every poll of an
    # item that waits would never age, and two waiting copies could defer each other for good.
    much_later = later + timedelta(hours=1)
    assert await store.claim_keys({"url:t": owner, "url:new": owner}, much_later) == {"url:t": owner, "url:new": owner}
    assert await store.take_over_keys({"url:t": (owner, "itm_y")}, much_later, much_later) == {"url:t"}


async def test_duplicates_and_source_delete(store: Store) -> None:
    ref = DuplicateRef(
        id="itm_2", item_id="itm_1", source_id="src_2", url="http://b/x", reason="canonical_url", seen_at=T0
    )
    await store.add_duplicates([ref])
    await store.add_duplicates([ref, ref])
    assert [d.id for d in await store.list_duplicates("itm_1")] == ["itm_2"]
    assert await store.list_duplicates("itm_2") == []
    await store.insert_source(Source(id="src_a", url="http://a.example/feed", interval_s=60))
    assert await store.delete_source("src_a") is True
    assert await store.delete_source("src_a") is False
    assert await store.get_source("src_a") is None


async def test_an_item_with_many_copies_does_not_hide_the_next_ones(store: Store) -> None:
    # One read serves a page's items; an item with more copies than a page shows must not use up
    # the next item's share (MongoDB read len(ids) * MAX_PAGE rows in all).
    many = [
        DuplicateRef(
            id=f"c{n:04d}", item_id="itm_a", source_id="s", url=f"http://c/{n}", reason="canonical_url", seen_at=T0
        )
        for n in range(2 * MAX_PAGE + 5)
    ]
    later = DuplicateRef(id="d1", item_id="itm_b", source_id="s", url="http://d/1", reason="canonical_url", seen_at=T0)
    await store.add_duplicates([*many, later])
    found = await store.duplicates_of(["itm_a", "itm_b"])
    assert len(found["itm_a"]) == MAX_PAGE
    assert found["itm_b"] == [later]


async def test_items_upsert_filter_and_paginate(store: Store) -> None:
    for n in range(10):
        await store.upsert_item(item(n, sectors=["energy"] if n % 2 else ["transport"], countries=["PK"]))
    await store.upsert_item(item(3, sectors=["energy", "maritime"], countries=["PK", "KZ"]))  # replace
    got = await store.get_item("itm_003")
    assert (
        got is not None
        and got.sectors == ["energy", "maritime"]
        and got.published_at == item(3, sectors=[], countries=[]).published_at
    )
    energy = await store.list_items(EventQuery(sector="energy", limit=50))
    assert [i.id for i in energy] == ["itm_009", "itm_007", "itm_005", "itm_003", "itm_001"]
    assert [i.id for i in await store.list_items(EventQuery(country="KZ"))] == ["itm_003"]
    page1 = await store.list_items(EventQuery(limit=4))
    last = page1[-1]
    page2 = await store.list_items(EventQuery(limit=4, after=(last.sort_at, last.id)))
    page3 = await store.list_items(EventQuery(limit=4, after=(page2[-1].sort_at, page2[-1].id)))
    ids = [i.id for i in page1 + page2 + page3]
    assert ids == [f"itm_{n:03d}" for n in range(9, -1, -1)]


async def test_bulk_upsert(store: Store) -> None:
    await store.upsert_items([item(n, sectors=["energy"], countries=["KZ"]) for n in range(30)])
    await store.upsert_items([item(5, sectors=["mining"], countries=["KZ"])])
    assert len(await store.list_items(EventQuery(sector="energy", limit=100))) == 29
    assert [i.id for i in await store.list_items(EventQuery(sector="mining"))] == ["itm_005"]


async def test_a_read_never_sees_a_rewrite_half_done(store: Store) -> None:
    # Re-storing items (a reclassification, a revised entry) while the API reads them: SQLite
    # deletes and re-inserts an event's filter rows inside one transaction, and a read on the
    # same connection between those statements saw the items gone from the sector's range.
    items = [item(n, sectors=["energy"], countries=["PK"]) for n in range(50)]
    await store.upsert_items(items)

    async def rewrite() -> None:
        for _ in range(10):
            await store.upsert_items(items)

    async def read() -> list[int]:
        counts = []
        for _ in range(30):
            counts.append(len(await store.list_items(EventQuery(sector="energy", limit=100))))
            await asyncio.sleep(0)
        return counts

    _, counts = await asyncio.gather(rewrite(), read())
    assert set(counts) == {50}, counts


async def test_times_before_the_year_1000_still_order(store: Store) -> None:
    # SQLite keeps times as text; an unpadded "500-01-01" sorted after "2026-…" and such a
    # since= found nothing there while MongoDB found everything.
    await store.upsert_items([item(n, sectors=["energy"], countries=["PK"]) for n in range(3)])
    ancient = datetime(500, 1, 1, tzinfo=UTC)
    assert len(await store.list_items(EventQuery(since=ancient))) == 3
    assert await store.list_items(EventQuery(until=ancient)) == []


async def test_same_time_items_paginate_by_id(store: Store) -> None:
    for n in range(5):
        await store.upsert_item(item(n, sectors=[], countries=[], at=T0))
    page1 = await store.list_items(EventQuery(limit=2))
    page2 = await store.list_items(EventQuery(limit=10, after=(page1[-1].sort_at, page1[-1].id)))
    assert [i.id for i in page1 + page2] == ["itm_004", "itm_003", "itm_002", "itm_001", "itm_000"]


async def test_an_item_is_replaced_only_while_it_is_the_revision_read(store: Store) -> None:
    """``replace_item_if`` (reclassification's write) leaves a newer revision stored meanwhile,
    and writes nothing for an item that is not stored; a write updates the query fields too."""
    first = item(1, sectors=["energy"], countries=["PK"])
    assert await store.replace_item_if(first, 0, "") is False, "not stored: nothing to replace"
    assert await store.get_item(first.id) is None
    await store.upsert_item(first)
    reclassified = first.model_copy(update={"sectors": ["transport"], "classifier_version": "v2"})
    assert await store.replace_item_if(reclassified, 0, "") is True
    assert [i.id for i in await store.list_items(EventQuery(sectors=["transport"]))] == [first.id]
    assert await store.list_items(EventQuery(sectors=["energy"])) == []
    edited = first.model_copy(update={"title": "Item 1, revised", "revision": 1, "content_hash": "h1"})
    await store.upsert_item(edited)  # the live classifier stores an edit
    assert await store.replace_item_if(reclassified, 0, "") is False
    stored = await store.get_item(first.id)
    assert stored is not None and stored.title == "Item 1, revised" and stored.revision == 1
    assert await store.replace_item_if(reclassified.model_copy(update={"revision": 1}), 1, "h1") is True


async def test_subscriptions(store: Store) -> None:
    sub = Subscription(id="sub_1", channel="webhook", webhook_url="http://h/x", secret="whsec_x", sectors=["energy"])
    await store.insert_subscription(sub)
    await store.insert_subscription(Subscription(id="sub_2", channel="email", email="a@b.c", active=False))
    assert [s.id for s in await store.list_subscriptions()] == ["sub_1", "sub_2"]
    assert [s.id for s in await store.list_subscriptions(active_only=True)] == ["sub_1"]
    got = await store.get_subscription("sub_1")
    assert got is not None and got.secret == "whsec_x"
    assert await store.delete_subscription("sub_1") is True
    assert await store.delete_subscription("sub_1") is False


async def test_a_guarded_subscription_update_leaves_an_unsubscribed_one_alone(store: Store) -> None:
    """``unless_reason`` checks and writes in one step (an admin's resume against the
    recipient's unsubscribe); without it, or for another reason, the fields are set."""
    from shared.models import UNSUBSCRIBED

    await store.insert_subscription(Subscription(id="sub_u", channel="email", email="a@b.c"))
    back_on = {"active": True, "disabled_reason": None}
    assert await store.update_subscription("sub_u", {"active": False, "disabled_reason": UNSUBSCRIBED}) is True
    assert await store.update_subscription("sub_u", back_on, unless_reason=UNSUBSCRIBED) is False
    got = await store.get_subscription("sub_u")
    assert got is not None and got.active is False and got.disabled_reason == UNSUBSCRIBED
    assert await store.update_subscription("sub_u", {"active": False, "disabled_reason": "gone"}) is True
    assert await store.update_subscription("sub_u", back_on, unless_reason=UNSUBSCRIBED) is True
    got = await store.get_subscription("sub_u")
    assert got is not None and got.active is True and got.disabled_reason is None
    assert await store.update_subscription("sub_nope", back_on, unless_reason=UNSUBSCRIBED) is False
    assert await store.update_subscription("sub_nope", back_on) is False


async def test_deliveries_are_unique_and_claimed_once(store: Store) -> None:
    d = Delivery(
        id="msg_1",
        subscription_id="sub_1",
        item_id="itm_1",
        channel="webhook",
        created_at=T0,
        next_attempt_at=T0 + timedelta(seconds=60),
    )
    assert await store.insert_delivery(d) is True
    assert await store.insert_delivery(d.model_copy(update={"attempts": 5})) is False
    assert (await store.get_delivery("msg_1")).attempts == 0  # type: ignore[union-attr]
    assert await store.claim_due_delivery(T0, T0 + timedelta(seconds=10)) is None, "not due yet"
    claimed = await store.claim_delivery("msg_1", T0, T0 + timedelta(seconds=10))
    assert claimed is not None
    assert await store.claim_delivery("msg_1", T0 + timedelta(seconds=5), T0 + timedelta(seconds=20)) is None
    await store.update_delivery(
        "msg_1", {"attempts": 1, "lease_until": None, "next_attempt_at": T0, "last_error": "HTTP 500"}
    )
    due = await store.claim_due_delivery(T0 + timedelta(seconds=1), T0 + timedelta(seconds=30))
    assert due is not None and due.attempts == 1 and due.last_error == "HTTP 500"
    await store.update_delivery("msg_1", {"status": "delivered", "lease_until": None})
    assert await store.claim_delivery("msg_1", T0 + timedelta(hours=1), T0 + timedelta(hours=2)) is None
    assert await store.claim_due_delivery(T0 + timedelta(hours=1), T0 + timedelta(hours=2)) is None
    assert [x.id for x in await store.list_deliveries(subscription_id="sub_1", status="delivered")] == ["msg_1"]
    assert await store.list_deliveries(status="pending") == []


async def test_an_attempt_records_only_while_it_holds_its_lease(store: Store) -> None:
    d = Delivery(id="msg_2", subscription_id="sub_1", item_id="itm_1", channel="webhook", created_at=T0)
    await store.insert_delivery(d)
    lease = T0 + timedelta(seconds=10, microseconds=123456)  # stored to the millisecond on MongoDB
    first = await store.claim_delivery("msg_2", T0, lease)
    assert first is not None and first.lease_until is not None
    # The first attempt overran its lease; a second worker claimed the delivery meanwhile.
    second = await store.claim_delivery("msg_2", T0 + timedelta(seconds=11), T0 + timedelta(seconds=40))
    assert second is not None and second.lease_until is not None
    assert await store.finish_delivery("msg_2", first.lease_until, {"attempts": 1, "status": "failed"}) is False
    got = await store.get_delivery("msg_2")
    assert got is not None and got.status == "pending" and got.attempts == 0, "the stale attempt changed nothing"
    done = {"attempts": 1, "status": "delivered", "lease_until": None}
    assert await store.finish_delivery("msg_2", second.lease_until, done) is True
    got = await store.get_delivery("msg_2")
    assert got is not None and got.status == "delivered" and got.lease_until is None


async def test_ping(store: Store) -> None:
    assert await store.ping() is True


async def test_event_filters_search_sort_and_counts(store: Store) -> None:
    from shared.models import SectorScore

    def rich(
        n: int, sectors: list[str], countries: list[str], score: float, title: str, **kw: object
    ) -> ClassifiedItem:
        base = item(n, sectors=sectors, countries=countries).model_dump()
        base.update(
            title=title,
            summary=f"{title} body text",
            sector_scores=[SectorScore(id=s, score=score, terms=[]) for s in sectors],
            bilateral=len(countries) == 2,
            **kw,
        )
        return ClassifiedItem.model_validate(base)

    await store.upsert_item(rich(1, ["energy"], ["PK"], 2.0, "Hydropower plant opens in Gilgit", language="en"))
    await store.upsert_item(rich(2, ["transport"], ["PK", "KZ"], 5.0, "Rail corridor to Gwadar agreed", language="en"))
    await store.upsert_item(
        rich(
            3, ["transport", "maritime"], ["KZ"], 3.0, "Порт Актау и железная дорога", language="ru", source_id="src_kz"
        )
    )
    await store.upsert_item(
        rich(
            4, ["energy"], ["PK"], 1.0, "Rail and hydropower plans", language="en", published_at=T0 + timedelta(days=10)
        )
    )

    async def ids(**kw: object) -> list[str]:
        return [i.id for i in await store.list_items(EventQuery(**kw))]  # type: ignore[arg-type]

    assert await ids(sectors=("energy", "maritime")) == ["itm_004", "itm_003", "itm_001"]
    assert await ids(bilateral=True) == ["itm_002"]
    assert await ids(source_id="src_kz") == ["itm_003"] and await ids(language="ru") == ["itm_003"]
    assert await ids(since=T0 + timedelta(days=1)) == ["itm_004"]
    assert await ids(until=T0 + timedelta(minutes=2)) == ["itm_001"]
    assert await ids(min_score=3.0) == ["itm_003", "itm_002"]
    assert await ids(q_tokens=("hydropower",)) == ["itm_004", "itm_001"]
    assert await ids(q_tokens=("rail", "hydropower")) == ["itm_004"]
    assert await ids(q_tokens=("порт",)) == ["itm_003"]
    assert await ids(sort="score") == ["itm_002", "itm_003", "itm_001", "itm_004"]
    first = await store.list_items(EventQuery(sort="score", limit=2))
    rest = await store.list_items(EventQuery(sort="score", limit=5, after=(first[-1].top_score, first[-1].id)))
    assert [i.id for i in first + rest] == ["itm_002", "itm_003", "itm_001", "itm_004"]
    counts = {(c.sector, c.week): c.count for c in await store.sector_counts()}
    assert counts == {
        ("energy", "2026-02-23"): 1,
        ("transport", "2026-02-23"): 2,
        ("maritime", "2026-02-23"): 1,
        ("energy", "2026-03-09"): 1,
    }
    kz = {(c.sector, c.week): c.count for c in await store.sector_counts(country="KZ")}
    assert kz == {("transport", "2026-02-23"): 2, ("maritime", "2026-02-23"): 1}
    later = await store.sector_counts(since=T0 + timedelta(days=5))
    assert [(c.sector, c.week, c.count) for c in later] == [("energy", "2026-03-09", 1)]
    dup = DuplicateRef(id="itm_9", item_id="itm_002", source_id="src_x", reason="near_duplicate", seen_at=T0)
    await store.add_duplicates([dup])
    assert await store.duplicates_of(["itm_002", "itm_001"]) == {"itm_002": [dup]}


async def test_deliveries_page_by_page(store: Store) -> None:
    # Nothing past the first page (at most 200) could be listed before; ties on created_at too.
    deliveries = [
        Delivery(
            id=f"msg_{n:02d}",
            subscription_id="sub_p",
            item_id=f"itm_{n}",
            channel="webhook",
            created_at=T0 + timedelta(seconds=n // 3),  # three at each time
            next_attempt_at=T0,
        )
        for n in range(11)
    ]
    await store.insert_deliveries(deliveries)
    expected = [d.id for d in sorted(deliveries, key=lambda d: (d.created_at, d.id), reverse=True)]
    seen: list[str] = []
    before: tuple[datetime, str] | None = None
    for _ in range(10):
        page = await store.list_deliveries(subscription_id="sub_p", limit=3, before=before)
        seen += [d.id for d in page]
        if len(page) < 3:
            break
        before = (page[-1].created_at, page[-1].id)
    assert seen == expected


async def test_deliveries_in_bulk_and_items_by_id(store: Store) -> None:
    def d(n: int, **kw: object) -> Delivery:
        return Delivery.model_validate(
            {
                "id": f"msg_{n}",
                "subscription_id": f"sub_{n % 2}",
                "item_id": "itm_1",
                "channel": "webhook",
                "created_at": T0 + timedelta(seconds=n),
                "next_attempt_at": T0,
                **kw,
            }
        )

    assert await store.insert_deliveries([d(1), d(2)]) == {"msg_1", "msg_2"}
    assert await store.insert_deliveries([d(2, attempts=3), d(3), d(3)]) == {"msg_3"}
    assert (await store.get_delivery("msg_2")).attempts == 0  # type: ignore[union-attr]
    assert await store.insert_deliveries([]) == set()
    assert [x.id for x in await store.list_deliveries(item_id="itm_1")] == ["msg_3", "msg_2", "msg_1"]
    assert [x.id for x in await store.list_deliveries(subscription_id="sub_1", status="pending")] == ["msg_3", "msg_1"]
    winners = await asyncio.gather(
        *(store.claim_due_delivery(T0 + timedelta(hours=1), T0 + timedelta(hours=2)) for _ in range(8))
    )
    assert sorted(w.id for w in winners if w) == ["msg_1", "msg_2", "msg_3"], "each delivery claimed once"
    await store.upsert_items([item(1, sectors=[], countries=[]), item(2, sectors=[], countries=[])])
    assert set(await store.get_items(["itm_001", "itm_002", "itm_404"])) == {"itm_001", "itm_002"}
    assert await store.get_items([]) == {}


async def test_expired_dedupe_records_are_forgotten(store: Store) -> None:
    await store.mark_seen({"old": "h"}, T0)
    await store.claim_keys({"url:old": "itm_old"}, T0)
    if isinstance(store, MongoStore):
        # The server's TTL monitor deletes on its own schedule; check what it is told.
        for name in ("seen", "dedupe_keys"):
            info = await store.db[name].index_information()
            assert info["expiry"]["expireAfterSeconds"] == 180 * 86400, name
        return
    store._purged_at = float("-inf")  # the purge runs at most hourly
    await store.mark_seen({"new": "h"}, T0 + timedelta(days=181))
    assert await store.seen_hashes(["old", "new"]) == {"new": "h"}
    assert await store.claim_keys({"url:old": "itm_other"}, T0 + timedelta(days=181)) == {"url:old": "itm_other"}


async def test_an_unreachable_store_raises_store_unavailable(tmp_path: Path) -> None:
    import socket
    import threading

    from shared.errors import StoreUnavailable
    from shared.store.mongo import MongoStore

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mongo = MongoStore(f"mongodb://127.0.0.1:{port}/", "x", server_selection_timeout_ms=300)
    with pytest.raises(StoreUnavailable, match="get_item: ServerSelectionTimeoutError"):
        await mongo.get_item("itm_1")
    assert await mongo.ping() is False
    await mongo.close()
    (tmp_path / "dir.sqlite3").mkdir()
    before = set(threading.enumerate())
    for _ in range(20):  # the worker thread of a failed connect used to outlive it, now and then
        with pytest.raises(StoreUnavailable, match="start: OperationalError"):
            await SQLiteStore(tmp_path / "dir.sqlite3").start()
        left = [t.name for t in set(threading.enumerate()) - before if "_connection_worker_thread" in t.name]
        assert not left, f"a failed start leaves no aiosqlite thread to report into a closed loop: {left}"


async def test_agreement_stages_swap_atomically_and_events_are_unique(store: Store) -> None:

    assert await store.get_agreement_stage("railways-mou") is None
    first = await asyncio.gather(*(store.swap_agreement_stage("railways-mou", None, "signed") for _ in range(8)))
    assert sum(first) == 1, "one replica records the first stage"
    moves = await asyncio.gather(
        *(store.swap_agreement_stage("railways-mou", "signed", s) for s in ("planning", "underway", "financed") * 3)
    )
    assert sum(moves) == 1, "of replicas that saw the same stage, one moves it"
    moved_to = await store.get_agreement_stage("railways-mou")
    assert moved_to in ("planning", "underway", "financed")
    assert await store.swap_agreement_stage("railways-mou", "signed", "operational") is False
    event = AgreementEvent(
        id="evt_1",
        kind="agreement.stage_changed",
        agreement_id="railways-mou",
        area="railways",
        title="Railways MoU",
        before="signed",
        after=moved_to,
        at=T0,
    )
    assert await store.insert_agreement_event(event) is True
    assert await store.insert_agreement_event(event.model_copy(update={"detail": "again"})) is False
    later = event.model_copy(update={"id": "evt_2", "kind": "agreement.stalled", "at": T0 + timedelta(days=1)})
    await store.insert_agreement_event(later)
    assert [e.id for e in await store.list_agreement_events(agreement_id="railways-mou")] == ["evt_2", "evt_1"]
    assert [e.id for e in await store.list_agreement_events(unpublished_before=T0 + timedelta(days=2))] == [
        "evt_1",
        "evt_2",
    ]
    await store.mark_agreement_event_published("evt_1", T0 + timedelta(hours=1))
    assert [e.id for e in await store.list_agreement_events(unpublished_before=T0 + timedelta(days=2))] == ["evt_2"]
    got = await store.get_agreement_event("evt_1")
    assert got is not None and got.published_at == T0 + timedelta(hours=1) and got.detail == ""


async def test_agreement_events_at_the_same_moment_come_back_in_one_order(store: Store) -> None:
    # MongoDB sorted one agreement's events by time alone (ties in insertion order), SQLite by
    # time then id: the stores disagreed on which of two same-moment events was the latest.
    for name in ("evt_a", "evt_c", "evt_b"):
        await store.insert_agreement_event(
            AgreementEvent(
                id=name,
                kind="agreement.setback",
                agreement_id="railways-mou",
                area="railways",
                title="Railways MoU",
                at=T0,
            )
        )
    assert [e.id for e in await store.list_agreement_events(agreement_id="railways-mou")] == ["evt_c", "evt_b", "evt_a"]
    assert [e.id for e in await store.list_agreement_events(agreement_id="railways-mou", limit=1)] == ["evt_c"]


@pytest.mark.mongo
async def test_an_index_defined_otherwise_by_an_older_version_is_rebuilt(mongo_uri: str, unique: str) -> None:
    # An index whose keys changed under the same name made MongoDB refuse create_index
    # (IndexKeySpecsConflict), and the store never started again.
    from pymongo import ASCENDING, AsyncMongoClient

    database = f"test_{unique}"
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(mongo_uri)
    try:
        old = client[database]
        await old["subscriptions"].create_index([("created_at", ASCENDING)], name="created")  # as 75732c6 made it
        await old["events"].create_index([("sort_at", -1)], name="recent")
        await old["agreement_events"].create_index([("agreement_id", 1), ("at", -1)], name="by_agreement")
        await old["subscriptions"].create_index([("active", 1), ("created_at", 1)], name="active")
        # Two replicas starting at once both meet the conflicts: both must start.
        replicas = [MongoStore(mongo_uri, database), MongoStore(mongo_uri, database)]
        await asyncio.gather(*(r.start() for r in replicas))
        for replica in replicas:
            await replica.close()
        indexes = await old["subscriptions"].index_information()
        assert indexes["created"]["key"] == [("created_at", 1), ("_id", 1)]
        assert indexes["active_created"]["key"] == [("active", 1), ("created_at", 1), ("_id", 1)]
        assert "active" not in indexes, "the earlier version's index is retired"
        agreement_indexes = await old["agreement_events"].index_information()
        assert agreement_indexes["by_agreement_time"]["key"] == [("agreement_id", 1), ("at", -1), ("_id", -1)]
        assert "by_agreement" not in agreement_indexes
        # A rollback: the earlier version creates its own definitions again without a conflict
        # (the changed ones have new names), and this version starts after it once more.
        await old["agreement_events"].create_index([("agreement_id", 1), ("at", -1)], name="by_agreement")
        await old["subscriptions"].create_index([("active", 1), ("created_at", 1)], name="active")
        store = MongoStore(mongo_uri, database)
        await store.start()
        await store.close()
        assert "by_agreement" not in await old["agreement_events"].index_information()
    finally:
        await client.drop_database(database)
        await client.close()
