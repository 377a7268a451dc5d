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
from shared.models import AgreementEvent, AgreementLink, ClassifiedItem, DuplicateRef, Source, stable_id
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


def announced_before_the_chain(before: str, after: str, **fields: Any) -> AgreementEvent:
    """A stage announcement as the versions before the chain made it (their id scheme)."""
    return AgreementEvent(
        id=stable_id("evt", RAILWAYS, "stage", before, after, "after", "-"),
        kind="agreement.stage_changed",
        agreement_id=RAILWAYS,
        area="railways",
        title="t",
        before=before,  # type: ignore[arg-type]
        after=after,  # type: ignore[arg-type]
        **fields,
    )


async def stage_events(store: SQLiteStore) -> list[tuple[str | None, str | None]]:
    events = await store.list_agreement_events(agreement_id=RAILWAYS, limit=500)
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


# Defects a review of 2026-12-04 reproduced (scripts of its own, turned into these tests).


async def test_a_handler_announces_the_recorded_stage_not_the_one_it_computed(store: SQLiteStore) -> None:
    # A records "approved"; before it announces, B stores a financed report, records and
    # announces it. A announced its own "approved" after that: financed → approved (backwards),
    # then approved → financed again at the next item: three alerts for one move.
    a, b = watch(store), watch(store)
    approved, financed = item(1, "approved", 20), item(2, "financed", 10)
    await store.upsert_items([approved])
    real = a._announce_stage

    async def late(agreement: Any, it: Any) -> None:
        await store.upsert_items([financed])
        await b.after_item(financed)
        a._announce_stage = real  # type: ignore[method-assign]
        await real(agreement, it)

    a._announce_stage = late  # type: ignore[method-assign]
    await a.after_item(approved)
    talks = item(3, "follow_up_talks", 5)
    await store.upsert_items([talks])
    await a.after_item(talks)
    assert await stage_events(store) == [("signed", "financed")]


async def test_racing_announcers_store_one_successor_and_the_loser_follows_it(store: SQLiteStore) -> None:
    # Both handlers find no announcement and want to announce; the ids are fixed by the previous
    # announcement, so one insert wins and the other reads again before announcing.
    a, b = watch(store), watch(store)
    planning = item(1, "planning", 20)
    await store.upsert_items([planning])
    await store.swap_agreement_stage(RAILWAYS, None, "planning")
    real_emit = a._emit

    async def b_first(event: Any) -> bool:
        a._emit = real_emit  # type: ignore[method-assign]
        underway = item(2, "underway", 10)
        await store.upsert_items([underway])
        await b.after_item(underway)  # records and announces signed → underway first
        return await real_emit(event)  # A's signed → planning: the same id, refused

    a._emit = b_first  # type: ignore[method-assign]
    await a._announce_stage(a._agreements[RAILWAYS], planning)
    assert await stage_events(store) == [("signed", "underway")]


async def test_a_run_of_setbacks_does_not_hide_the_last_announcement(store: SQLiteStore) -> None:
    # The last announcement was looked for among the agreement's 50 newest events; 50 setback
    # reports pushed it out and approved → financed was announced again as signed → financed.
    w = watch(store)
    reports = [item(1, "approved", 100), item(2, "financed", 90)]
    reports += [item(3 + k, "setback", 80 - k) for k in range(51)]
    for report in reports:
        await store.upsert_items([report])
        await w.after_item(report)
    again = watch(store)  # a restarted replica: no chain head remembered
    late = item(99, "setback", 1)
    await store.upsert_items([late])
    await again.after_item(late)
    assert await stage_events(store) == [("signed", "approved"), ("approved", "financed")]


async def test_an_announcement_made_before_the_chain_is_continued(store: SQLiteStore) -> None:
    await store.insert_agreement_event(announced_before_the_chain("signed", "planning"))
    await store.swap_agreement_stage(RAILWAYS, None, "planning")
    await store.upsert_items([item(1, "planning", 20)])
    w = watch(store)
    underway = item(2, "underway", 10)
    await store.upsert_items([underway])
    await w.after_item(underway)
    assert await stage_events(store) == [("signed", "planning"), ("planning", "underway")]


async def test_a_stall_that_changes_kind_without_progress_is_announced_once(store: SQLiteStore) -> None:
    from helpers import ManualClock

    signed_on = datetime(2026, 2, 4, tzinfo=UTC)

    def on_day(n: int, stage: str, day: int) -> ClassifiedItem:
        at = signed_on + timedelta(days=day)
        return item(n, stage, 0).model_copy(update={"published_at": at, "fetched_at": at})

    clock = ManualClock(signed_on + timedelta(days=71))
    w = AgreementWatch(store=store, bus=MemoryBus(), registry=load_registry(), settings=load_settings(), clock=clock)

    async def stalls() -> int:
        await w.check_stalls()
        return sum(e.kind == "agreement.stalled" for e in await store.list_agreement_events(agreement_id=RAILWAYS))

    await store.upsert_items([on_day(1, "approved", 10)])
    assert await stalls() == 1  # day 71: no news since day 10
    # Day 120: a story re-telling the signing ends "no news" while "no progress" (since day 10,
    # from day 100) already holds: the same stall, not a second one.
    await store.upsert_items([on_day(2, "signed", 120)])
    clock.now = signed_on + timedelta(days=121)
    assert (await w.state(RAILWAYS)).stall_reason == "no progress reported for 111 days (since 2026-02-14)"
    assert await stalls() == 1
    # Progress, then quiet again: a new stall.
    await store.upsert_items([on_day(3, "planning", 125)])
    clock.now = signed_on + timedelta(days=125 + 61)
    assert await stalls() == 2


async def test_an_update_that_drops_a_link_recomputes_that_agreement_at_once(store: SQLiteStore) -> None:
    # Before, the stage stayed "financed" on record while the board showed "signed"; the change
    # surfaced at the agreement's next, unrelated item, credited to it.
    w = watch(store)
    financed = item(1, "financed", 20)
    await store.upsert_items([financed])
    await w.after_item(financed)
    corrected = financed.model_copy(update={"agreements": [], "stage": None, "revision": 1})
    await store.upsert_items([corrected])
    await w.after_item(corrected, dropped={RAILWAYS})
    assert await store.get_agreement_stage(RAILWAYS) == "signed"
    [last] = (await store.list_agreement_events(agreement_id=RAILWAYS))[:1]
    assert (last.before, last.after, last.item_id) == ("financed", "signed", None)
    assert "financed is no longer supported" in last.detail


async def test_the_reconciliation_records_what_reclassify_changed(store: SQLiteStore) -> None:
    # corridor reclassify writes items without the classifier's handler: no stage was recomputed.
    w = watch(store)
    await store.upsert_items([item(1, "underway", 10)])
    assert await w.reconcile() == 1
    assert await store.get_agreement_stage(RAILWAYS) == "underway"
    assert await stage_events(store) == [("signed", "underway")]
    assert await w.reconcile() == 0, "nothing moved since"
    assert await stage_events(store) == [("signed", "underway")]


async def test_a_setback_is_announced_while_other_handlers_keep_the_stage_busy(store: SQLiteStore) -> None:
    w = watch(store)
    await store.upsert_items([item(1, "planning", 30)])
    setback = item(2, "setback", 1)
    await store.upsert_items([setback])

    async def always_lost(*args: Any) -> bool:
        return False

    store.swap_agreement_stage = always_lost  # type: ignore[method-assign]
    await w.after_item(setback)
    kinds = [e.kind for e in await store.list_agreement_events(agreement_id=RAILWAYS)]
    assert "agreement.setback" in kinds


async def test_the_classifier_service_passes_the_links_an_update_dropped(store: SQLiteStore) -> None:
    from services.classifier.service import ClassifierService
    from shared.envelope import Envelope
    from shared.metrics import Metrics
    from shared.models import RawItem

    financed = item(1, "financed", 20)
    corrected = financed.model_copy(update={"agreements": [], "stage": None, "revision": 1})

    answers = [financed, corrected]  # the classifier's answers: the report, then its correction

    class Scripted:
        def classify(self, raw: RawItem) -> ClassifiedItem:
            return answers.pop(0)

    service = ClassifierService(
        store=store,
        bus=MemoryBus(),
        classifier=Scripted(),  # type: ignore[arg-type]
        settings=load_settings(),
        metrics=Metrics(),
        watch=watch(store),
    )
    raw = RawItem.model_validate(financed.model_dump(include=set(RawItem.model_fields)))
    await service.handle(Envelope.wrap("item.raw", raw))
    assert await store.get_agreement_stage(RAILWAYS) == "financed"
    await service.handle(Envelope.wrap("item.updated", raw.model_copy(update={"revision": 1})))
    assert await store.get_agreement_stage(RAILWAYS) == "signed"


# A review of the fixes above (2026-12-04) reproduced three more.


async def test_progress_fetched_after_a_stall_alert_ends_that_stall(store: SQLiteStore) -> None:
    # The "nothing moved" rule compared the report's date with the alert's time: a progress
    # report published just before the alert but fetched after it did not count, and the next
    # stall was never announced.
    from helpers import ManualClock

    signed_on = datetime(2026, 2, 4, tzinfo=UTC)

    def on_day(n: int, stage: str, day: float, fetched_day: float) -> ClassifiedItem:
        return item(n, stage, 0).model_copy(
            update={
                "published_at": signed_on + timedelta(days=day),
                "fetched_at": signed_on + timedelta(days=fetched_day),
            }
        )

    clock = ManualClock(signed_on + timedelta(days=71))
    w = AgreementWatch(store=store, bus=MemoryBus(), registry=load_registry(), settings=load_settings(), clock=clock)

    async def stalls() -> int:
        await w.check_stalls()
        return sum(e.kind == "agreement.stalled" for e in await store.list_agreement_events(agreement_id=RAILWAYS))

    await store.upsert_items([on_day(1, "approved", 10, 10)])
    assert await stalls() == 1
    await store.upsert_items([on_day(2, "planning", 70, 71.5)])
    clock.now = signed_on + timedelta(days=72)
    assert not (await w.state(RAILWAYS)).stalled
    clock.now = signed_on + timedelta(days=70 + 61)
    assert await stalls() == 2, "a new stall after progress"


async def test_the_reconciliation_announces_a_change_a_crash_cut_off(store: SQLiteStore) -> None:
    moved = item(1, "planning", 5)
    await store.upsert_items([moved])
    real_insert = store.insert_agreement_event

    async def outage(event: Any) -> bool:
        raise StoreUnavailable("store stopped")

    store.insert_agreement_event = outage  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        await watch(store).after_item(moved)  # swap done, event not stored
    store.insert_agreement_event = real_insert  # type: ignore[method-assign]
    assert await watch(store).reconcile() == 0, "nothing to record"
    assert await stage_events(store) == [("signed", "planning")], "but the change is announced"


async def test_a_chain_begun_after_an_old_announcement_survives_a_run_of_setbacks(store: SQLiteStore) -> None:
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    await store.insert_agreement_event(announced_before_the_chain("signed", "planning", at=three_days_ago))
    await store.swap_agreement_stage(RAILWAYS, None, "planning")
    await store.upsert_items([item(1, "planning", 20)])
    w = watch(store)
    underway = item(2, "underway", 10)
    await store.upsert_items([underway])
    await w.after_item(underway)  # planning → underway: the chain begins at its fixed start
    for k in range(51):
        setback = item(10 + k, "setback", 5 - k * 0.01)
        await store.upsert_items([setback])
        await w.after_item(setback)
    late = item(99, "setback", 0.1)
    await store.upsert_items([late])
    await watch(store).after_item(late)  # a restarted replica
    assert await stage_events(store) == [("signed", "planning"), ("planning", "underway")]


# And a review of those mends (2026-12-04) reproduced three more.


async def test_the_chain_is_read_before_the_recorded_stage(store: SQLiteStore) -> None:
    # A read the recorded stage ("planning"), then B recorded and announced "underway", then A
    # walked the chain, found B's event and announced underway → planning: backwards.
    a, b = watch(store), watch(store)
    planning, underway = item(1, "planning", 20), item(2, "underway", 10)
    await store.upsert_items([planning])
    real_last = a._last_announcement

    async def slow(agreement_id: str) -> Any:
        a._last_announcement = real_last  # type: ignore[method-assign]
        await store.upsert_items([underway])
        await b.after_item(underway)
        return await real_last(agreement_id)

    a._last_announcement = slow  # type: ignore[method-assign]
    await a.after_item(planning)
    assert await store.get_agreement_stage(RAILWAYS) == "underway"
    assert await stage_events(store) == [("signed", "underway")]


async def test_a_chain_begun_during_the_scan_is_not_taken_for_an_old_announcement(store: SQLiteStore) -> None:
    # B started the chain between A's read of its start and A's scan: A took the start for an
    # announcement from before the chain, walked in a loop and never announced again.
    await store.upsert_items([item(1, "planning", 20)])
    a, b = watch(store), watch(store)
    real_list = store.list_agreement_events
    fired = False

    async def racing(**kw: Any) -> Any:
        nonlocal fired
        if not fired and kw.get("agreement_id") == RAILWAYS:
            fired = True
            await b.after_item(item(1, "planning", 20))  # B announces signed → planning
        return await real_list(**kw)

    store.list_agreement_events = racing  # type: ignore[method-assign]
    await a.after_item(item(1, "planning", 20))
    store.list_agreement_events = real_list  # type: ignore[method-assign]
    reads = 0
    real_get = store.get_agreement_event

    async def counted(event_id: str) -> Any:
        nonlocal reads
        reads += 1
        return await real_get(event_id)

    store.get_agreement_event = counted  # type: ignore[method-assign]
    underway = item(2, "underway", 10)
    await store.upsert_items([underway])
    await a.after_item(underway)
    assert await stage_events(store) == [("signed", "planning"), ("planning", "underway")]
    assert reads < 10, f"{reads} reads for one item"


async def test_an_old_replicas_announcement_during_an_upgrade_is_not_repeated(store: SQLiteStore) -> None:
    # A replica of the version before the chain still runs beside this one (a rolling upgrade):
    # this one had found no old announcement before and must not trust that later.
    w = watch(store)
    await store.swap_agreement_stage(RAILWAYS, None, "signed")
    await w.reconcile()
    await store.upsert_items([item(1, "planning", 20)])
    assert await store.swap_agreement_stage(RAILWAYS, "signed", "planning")
    await store.insert_agreement_event(announced_before_the_chain("signed", "planning"))
    await w.reconcile()
    assert await stage_events(store) == [("signed", "planning")]


async def test_an_old_replicas_announcement_is_not_repeated_by_the_next_item(store: SQLiteStore) -> None:
    # "No older announcement" was believed for 10 minutes: an old replica's announcement made
    # meanwhile was announced again at the agreement's next item (review of 2026-12-04).
    w = watch(store)
    await store.swap_agreement_stage(RAILWAYS, None, "signed")
    await w.reconcile()
    await store.upsert_items([item(1, "planning", 20)])
    assert await store.swap_agreement_stage(RAILWAYS, "signed", "planning")
    await store.insert_agreement_event(announced_before_the_chain("signed", "planning"))
    later = item(2, "planning", 5)
    await store.upsert_items([later])
    await w.after_item(later)
    assert await stage_events(store) == [("signed", "planning")]


async def test_reports_from_before_the_signing_are_not_counted_for_the_agreement(store: SQLiteStore) -> None:
    # A source's reports before the signing (an archive, a backfill) rode along in its row once
    # it reported after the signing too: the board counted them (review of 2026-12-05).
    signed = load_registry().by_id()[RAILWAYS].signed_on
    days_since_signing = (NOW.date() - signed).days
    before = [item(n, "planning", days_since_signing + 10 + n) for n in range(1, 4)]  # same stage, same source
    after = item(9, "planning", 30)
    await store.upsert_items([*before, after])
    w = watch(store)
    state = await w.state(RAILWAYS)
    [board] = [s for s in await w.states() if s.agreement.id == RAILWAYS]
    for s in (state, board):
        assert s.items == 1 and s.sources == 1, "only the report after the signing"
        assert s.supports["planning"].items == 1 and s.stage == "planning"
        assert s.stage_since == NOW - timedelta(days=30)


async def test_an_official_sources_copy_makes_the_stage_official(store: SQLiteStore) -> None:
    # Dawn ran the story first; APP's (official) copy of it was linked to Dawn's item as a
    # duplicate, and the tracker, reading items only, never saw an official report.
    await store.insert_source(Source(id="dawn", url="https://dawn.example/rss", interval_s=900, country="PK"))
    await store.insert_source(Source(id="blog", url="https://blog.example/rss", interval_s=900))
    first = item(1, "underway", 10).model_copy(update={"source_id": "dawn"})
    await store.upsert_items([first])
    w = watch(store)
    assert (await w.state(RAILWAYS)).stage == "signed", "one newspaper's report is not enough"

    def copy(n: int, source: str, days_ago: float) -> DuplicateRef:
        at = NOW - timedelta(days=days_ago)
        return DuplicateRef(id=f"itm_c{n}", item_id=first.id, source_id=source, reason="near_duplicate", seen_at=at)

    await store.add_duplicates([copy(1, "blog", 9)])
    assert await w.reconcile() == 0, "a copy by another paper is not a second independent report"
    await store.add_duplicates([copy(2, "mofa", 8)])
    state = await w.state(RAILWAYS)
    assert state.stage == "underway" and state.supports["underway"].official
    assert state.supports["underway"].sources == ["dawn", "mofa"] and state.stage_since == NOW - timedelta(days=8)
    assert state.items == 1, "a copy is not an item"
    assert await w.reconcile() == 1, "the reconciliation records and announces it"
    assert await stage_events(store) == [("signed", "underway")]
    board = {s.agreement.id: s for s in await w.states()}
    assert board[RAILWAYS].stage == "underway", "the board reads the copies too"


async def test_a_source_made_official_counts_through_its_copies_on_the_next_board(store: SQLiteStore) -> None:
    # The watch caches sources for a minute and re-reads them early only for a source an item
    # names; a copy names none, so the board and the reconciliation read them fresh.
    await store.insert_source(Source(id="dawn", url="https://dawn.example/rss", interval_s=900, country="PK"))
    await store.insert_source(Source(id="app", url="https://app.example/rss", interval_s=900, country="PK"))
    first = item(1, "underway", 10).model_copy(update={"source_id": "dawn"})
    await store.upsert_items([first])
    await store.add_duplicates(
        [DuplicateRef(id="itm_c1", item_id=first.id, source_id="app", reason="near_duplicate", seen_at=NOW)]
    )
    w = watch(store)
    assert {s.agreement.id: s for s in await w.states()}[RAILWAYS].stage == "signed"
    await store.update_source("app", {"official": True})
    assert {s.agreement.id: s for s in await w.states()}[RAILWAYS].stage == "underway"
    assert await w.reconcile() == 1


@pytest.mark.parametrize(("stall_days", "silence_days", "stalled"), [(90, 60, False), (30, 60, True), (90, 20, True)])
async def test_the_stall_periods_are_the_operators_settings(
    store: SQLiteStore, stall_days: int, silence_days: int, stalled: bool
) -> None:
    """CORRIDOR_STALL_DAYS and CORRIDOR_SILENCE_DAYS reach the tracker (no test set them before:
    the audit of 2026-12-05). Planning reported 40 days ago, a re-told signing 25 days ago."""
    await store.upsert_item(item(1, "planning", 40))
    await store.upsert_item(item(2, "signed", 25))
    settings = load_settings(stall_days=stall_days, silence_days=silence_days)
    tracker = AgreementWatch(
        store=store, bus=MemoryBus(), registry=load_registry(), settings=settings, clock=lambda: NOW
    )
    state = await tracker.state(RAILWAYS)
    board = next(s for s in await tracker.states() if s.agreement.id == RAILWAYS)
    assert state.stalled is board.stalled is stalled, (state.stall_reason, board.stall_reason)
