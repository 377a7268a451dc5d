"""Agreement events after each stored item: never a stage set back by a stale result, never a
change left unannounced by a crash, never an alert for a setback the board does not show."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.classifier.agreements import load_registry
from services.classifier.watch import AgreementWatch
from shared.bus.memory import MemoryBus
from shared.errors import StoreUnavailable
from shared.models import AgreementLink, ClassifiedItem, Source
from shared.settings import load_settings
from shared.store.sqlite import SQLiteStore

RAILWAYS = "railways-cooperation-mou"
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def item(n: int, stage: str, days_ago: float) -> ClassifiedItem:
    at = NOW - timedelta(days=days_ago)
    return ClassifiedItem(
        id=f"itm_{n}",
        source_id="mofa",  # official: one report is enough for a stage
        source_url="https://mofa.example/press",
        title=f"Railway news {n}",
        summary="",
        published_at=at,
        fetched_at=at,
        countries=["PK", "KZ"],
        agreements=[AgreementLink(id=RAILWAYS, area="railways", score=2.0, terms=["railway"])],
        stage=stage,  # type: ignore[arg-type]
        classifier_version="test",
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "w.sqlite3")
    await s.start()
    await s.insert_source(Source(id="mofa", url="https://mofa.example/press", interval_s=900, official=True))
    yield s
    await s.close()


def watch(store: Any) -> AgreementWatch:
    return AgreementWatch(
        store=store, bus=MemoryBus(), registry=load_registry(), settings=load_settings(), clock=lambda: NOW
    )


async def stage_events(store: SQLiteStore) -> list[tuple[str | None, str | None]]:
    events = await store.list_agreement_events(agreement_id=RAILWAYS)
    return [(e.before, e.after) for e in reversed(events) if e.kind == "agreement.stage_changed"]


async def test_a_result_computed_from_older_rows_never_sets_the_stage_back(store: SQLiteStore) -> None:
    a, b = watch(store), watch(store)
    planning, underway = item(1, "planning", 20), item(2, "underway", 10)
    await store.upsert_items([planning])
    real_state = a.state

    async def slow(agreement_id: str) -> Any:
        # Handler A computes "planning"; before it records it, handler B stores a later item
        # and records "underway" (items are handled eight at a time, on several replicas).
        a.state = real_state  # type: ignore[method-assign]
        computed = await real_state(agreement_id)
        await store.upsert_items([underway])
        await b.after_item(underway)
        return computed

    a.state = slow  # type: ignore[method-assign]
    await a.after_item(planning)
    assert await store.get_agreement_stage(RAILWAYS) == "underway"
    assert await stage_events(store) == [("signed", "underway")]


async def test_a_change_whose_event_was_not_stored_is_announced_when_consumed_again(store: SQLiteStore) -> None:
    w = watch(store)
    moved = item(1, "planning", 5)
    await store.upsert_items([moved])
    real_insert = store.insert_agreement_event

    async def outage(event: Any) -> bool:
        raise StoreUnavailable("store stopped")

    store.insert_agreement_event = outage  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await w.after_item(moved)  # the swap happened, the event was not stored
    assert await store.get_agreement_stage(RAILWAYS) == "planning"
    store.insert_agreement_event = real_insert  # type: ignore[method-assign]
    await w.after_item(moved)  # the message is consumed again
    await w.after_item(moved)
    assert await stage_events(store) == [("signed", "planning")], "announced once, not lost"


async def test_a_setback_behind_later_progress_is_not_announced(store: SQLiteStore) -> None:
    w = watch(store)
    progress, old_setback = item(1, "underway", 5), item(2, "setback", 30)
    await store.upsert_items([progress, old_setback])
    await w.after_item(progress)
    await w.after_item(old_setback)  # a backfilled report from before the progress
    kinds = [e.kind for e in await store.list_agreement_events(agreement_id=RAILWAYS)]
    assert "agreement.setback" not in kinds
    fresh = item(3, "setback", 1)
    await store.upsert_items([fresh])
    await w.after_item(fresh)
    kinds = [e.kind for e in await store.list_agreement_events(agreement_id=RAILWAYS)]
    assert kinds.count("agreement.setback") == 1


async def test_a_deleted_source_does_not_make_every_call_read_all_sources(store: SQLiteStore) -> None:
    w = watch(store)
    moved = item(1, "planning", 5)
    await store.upsert_items([moved])
    await store.delete_source("mofa")  # it reported, then an operator removed it
    reads = 0
    real = store.list_sources

    async def counted() -> list[Source]:
        nonlocal reads
        reads += 1
        return await real()

    store.list_sources = counted  # type: ignore[method-assign]
    for _ in range(5):
        await w.state(RAILWAYS)
    assert reads == 1, "one read, then the missing source is remembered until the timed re-read"


async def test_late_items_inside_a_stall_do_not_announce_it_again(store: SQLiteStore) -> None:
    from helpers import ManualClock

    clock = ManualClock(NOW)
    w = AgreementWatch(store=store, bus=MemoryBus(), registry=load_registry(), settings=load_settings(), clock=clock)

    async def stalls() -> list[str]:
        events = await store.list_agreement_events(agreement_id=RAILWAYS)
        return [e.detail for e in reversed(events) if e.kind == "agreement.stalled"]

    await w.check_stalls()
    assert await stalls() == ["no news for 117 days (since 2026-02-04)"]
    # A feed added later lists a story of 6 February: news, but months ago. The agreement never
    # stopped being stalled; before, the stall's id (keyed on the last news) changed and it was
    # announced a second time.
    late = item(1, "signed", 115).model_copy(update={"fetched_at": NOW + timedelta(days=1)})
    await store.upsert_items([late])
    clock.now = NOW + timedelta(days=1)
    await w.check_stalls()
    assert await stalls() == ["no news for 117 days (since 2026-02-04)"]
    # Real news ends the stall; two quiet months later it is a new stall, announced.
    await store.upsert_items([item(2, "follow_up_talks", -2)])
    clock.now = NOW + timedelta(days=2)
    await w.check_stalls()
    clock.now = NOW + timedelta(days=2 + 61)
    await w.check_stalls()
    assert await stalls() == ["no news for 117 days (since 2026-02-04)", "no news for 61 days (since 2026-06-03)"]
