"""Differences between the SQLite and MongoDB stores a review of 2026-12-04 reproduced at the
API's edge (the stores' own: tests/contract). Each test fails without its fix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import runtime_client

from services.classifier.routes import EventFilters
from services.runtime import ALL_ROLES, Runtime
from shared.models import ClassifiedItem
from shared.settings import load_settings
from shared.store.sqlite import SQLiteStore


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(sqlite_path=tmp_path / "c.sqlite3", api_key="api-test-key")
    async with runtime_client(Runtime(settings, ALL_ROLES)) as c:
        yield c


async def test_an_empty_source_filter_is_refused(client: httpx.AsyncClient) -> None:
    # "?source=" matched every item on MongoDB and none on SQLite.
    got = await client.get("/api/v1/events", params={"source": ""})
    assert got.status_code == 422 and got.json()["detail"][0]["loc"] == ["query", "source"]


def test_time_bounds_meet_the_stored_precision_on_the_right_side() -> None:
    # Stored moments are milliseconds; a bound of 12:00:00.1235 kept an item of 12:00:00.123 out
    # on SQLite (which compared microseconds) and in on MongoDB (BSON cut the bound). Cut down,
    # both stores agreed but both answered wrongly: since=.1235 (inclusive) took the .123 item in
    # and until=.1235 (exclusive) left it out. Raised to .124, both bounds say what they mean.
    bound = datetime(2026, 3, 1, 12, 0, 0, 123500, tzinfo=UTC)
    filters = EventFilters(since=bound, until=bound)
    assert filters.since == filters.until == datetime(2026, 3, 1, 12, 0, 0, 124000, tzinfo=UTC)
    assert filters.query(limit=5).since == datetime(2026, 3, 1, 12, 0, 0, 124000, tzinfo=UTC)
    exact = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert EventFilters(since=exact).since == exact, "a bound on a millisecond stays"


async def test_a_bound_at_the_end_of_time_is_a_422(client: httpx.AsyncClient) -> None:
    got = await client.get("/api/v1/events", params={"until": "9999-12-31T23:59:59.999999+00:00"})
    assert got.status_code == 422 and got.json()["detail"][0]["loc"] == ["query", "until"]


async def test_bounds_find_what_they_say_on_the_embedded_store(tmp_path: Path) -> None:
    from shared.models import ClassifiedItem

    runtime = Runtime(load_settings(sqlite_path=tmp_path / "b.sqlite3", api_key="api-test-key"), ALL_ROLES)
    async with runtime_client(runtime) as client:
        at = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
        stored = ClassifiedItem(
            id="itm_a",
            source_id="s",
            source_url="https://s.example/",
            published_at=at,
            fetched_at=at,
            classifier_version="t",
        )
        await runtime.store.upsert_items([stored])
        bound = "2026-03-01T12:00:00.123500+00:00"
        until = (await client.get("/api/v1/events", params={"until": bound})).json()["items"]
        since = (await client.get("/api/v1/events", params={"since": bound})).json()["items"]
    assert [i["id"] for i in until] == ["itm_a"] and since == []


async def test_a_conditional_write_on_sqlite_holds_against_another_process(tmp_path: Path) -> None:
    """`corridor reclassify` runs beside `corridor run` on one SQLite file: the revision check
    and the write must be one transaction, or the other process's edit landing between them
    is taken back (review of 2026-12-05: the check was guarded by an in-process lock only)."""
    import asyncio

    path = tmp_path / "shared.sqlite3"
    reclassifier, live = SQLiteStore(path), SQLiteStore(path)
    await reclassifier.start()
    await live.start()
    try:
        old = ClassifiedItem(
            id="itm_1",
            source_id="s",
            source_url="https://s.example/rss",
            title="Old text",
            summary="",
            fetched_at=datetime(2026, 3, 1, tzinfo=UTC),
            classifier_version="v1",
        )
        await live.upsert_item(old)
        edited = old.model_copy(update={"title": "Edited text", "revision": 1, "content_hash": "h1"})
        read = reclassifier._one
        landed: list[asyncio.Task[None]] = []

        async def read_then_the_other_process_writes(*args: Any) -> Any:
            found = await read(*args)
            if not landed:  # the live classifier stores an edit right after the check
                landed.append(asyncio.create_task(live.upsert_item(edited)))
                await asyncio.sleep(0.5)
            return found

        reclassifier._one = read_then_the_other_process_writes  # type: ignore[method-assign]
        await reclassifier.replace_item_if(old.model_copy(update={"title": "Old text, reclassified"}), 0, "")
        await landed[0]
        stored = await live.get_item("itm_1")
        assert stored is not None and stored.title == "Edited text" and stored.revision == 1
    finally:
        await reclassifier.close()
        await live.close()


async def test_a_refused_insert_leaves_no_transaction_open(tmp_path: Path) -> None:
    # A duplicate source (409) left the INSERT's transaction open: the next conditional write
    # failed ("cannot start a transaction within a transaction", a 503 on pause) and another
    # process on the file found it locked (review of 2026-12-05).
    from shared.errors import Conflict
    from shared.models import Source

    path = tmp_path / "s.sqlite3"
    store, other = SQLiteStore(path), SQLiteStore(path)
    await store.start()
    await other.start()
    try:
        source = Source(id="src_a", url="https://a.example/rss", interval_s=900)
        await store.insert_source(source)
        with pytest.raises(Conflict):
            await store.insert_source(source.model_copy(update={"id": "src_b"}))
        assert not store.db.in_transaction
        await other.update_source("src_a", {"active": False})  # "database is locked" before
        await store.update_source("src_a", {"name": "renamed"})
        got = await store.get_source("src_a")
        assert got is not None and got.name == "renamed" and got.active is False
    finally:
        await store.close()
        await other.close()


async def test_any_failed_write_rolls_its_transaction_back(tmp_path: Path) -> None:
    # Every write path, not only the conditional ones: a statement failing after Python's
    # sqlite3 opened a transaction for it (busy, a full disk) left it open, with the file's
    # write lock and an old snapshot for every later read (second review of 2026-12-05).
    store = SQLiteStore(tmp_path / "s.sqlite3")
    await store.start()
    try:
        with pytest.raises(RuntimeError, match="disk full"):
            async with store._locked():
                await store.db.execute("INSERT INTO agreement_stages VALUES ('a', 'signed')")
                assert store.db.in_transaction
                raise RuntimeError("disk full")
        assert not store.db.in_transaction
        assert await store.get_agreement_stage("a") is None, "the failed write's statement is undone"
    finally:
        await store.close()
