"""A story's dedupe claim whose item was never published: the copy waits while the claiming poll
may still publish, and takes the story over after it, so no story is lost to a failed publish."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import ManualClock

from services.ingest.dedupe import Deduper
from shared.models import RawItem
from shared.store.sqlite import SQLiteStore

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
GRACE = timedelta(seconds=120)
TITLE = "Pakistan and Kazakhstan open the new rail freight route through Termez"


def story(item_id: str, source_id: str, url: str = "http://news.example/rail") -> RawItem:
    return RawItem(
        id=item_id,
        source_id=source_id,
        source_url=f"http://{source_id}.example/feed",
        url=url,
        canonical_url=url,
        title=TITLE,
        summary="The first train left Karachi on Monday with cargo bound for Almaty, officials said.",
        fetched_at=T0,
        content_hash="h-" + item_id,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "d.sqlite3")
    await s.start()
    yield s
    await s.close()


async def test_a_copy_of_a_published_story_is_a_duplicate(store: SQLiteStore) -> None:
    clock = ManualClock(T0)
    dedupe = Deduper(store, clock, claim_grace=GRACE)
    first = await dedupe.decide([story("itm_a", "src_a")])
    assert [i.id for i in first.new] == ["itm_a"]
    await store.mark_seen(first.seen_marks(), clock())  # published
    copy = await dedupe.decide([story("itm_b", "src_b")])
    assert [(d.id, d.item_id, d.reason) for d in copy.duplicates] == [("itm_b", "itm_a", "canonical_url")]
    assert copy.new == [] and copy.deferred == 0


async def test_a_copy_waits_for_a_claim_whose_poll_may_still_publish(store: SQLiteStore) -> None:
    clock = ManualClock(T0)
    dedupe = Deduper(store, clock, claim_grace=GRACE)
    await dedupe.decide([story("itm_a", "src_a")])  # claimed; its publish then failed: never marked seen
    clock.now = T0 + GRACE / 2
    copy = await dedupe.decide([story("itm_b", "src_b")])
    # Before the fix this was a duplicate, marked seen: the story was gone for good.
    assert copy.new == [] and copy.duplicates == [] and copy.deferred == 1
    assert copy.seen_marks() == {}, "a deferred entry is decided again at its next poll"


async def test_an_abandoned_claim_is_taken_over_and_the_story_published(store: SQLiteStore) -> None:
    clock = ManualClock(T0)
    dedupe = Deduper(store, clock, claim_grace=GRACE)
    await dedupe.decide([story("itm_a", "src_a")])  # never published
    clock.now = T0 + GRACE + timedelta(seconds=1)
    copy = await dedupe.decide([story("itm_b", "src_b")])
    assert [i.id for i in copy.new] == ["itm_b"] and copy.duplicates == [] and copy.deferred == 0
    await store.mark_seen(copy.seen_marks(), clock())
    # The first source lists its entry again later: now the copy of the published story.
    again = await dedupe.decide([story("itm_a", "src_a")])
    assert [(d.id, d.item_id) for d in again.duplicates] == [("itm_a", "itm_b")] and again.new == []


async def test_two_pollers_taking_one_story_over_agree_on_one(store: SQLiteStore) -> None:
    clock = ManualClock(T0)
    dedupe = Deduper(store, clock, claim_grace=GRACE)
    await dedupe.decide([story("itm_a", "src_a")])
    clock.now = T0 + 2 * GRACE
    one = await dedupe.decide([story("itm_b", "src_b")])
    other = await dedupe.decide([story("itm_c", "src_c")])  # claim of itm_b is fresh: it waits
    assert [i.id for i in one.new] == ["itm_b"]
    assert other.new == [] and other.deferred == 1


async def test_entries_of_one_batch_sharing_a_story(store: SQLiteStore) -> None:
    clock = ManualClock(T0)
    dedupe = Deduper(store, clock, claim_grace=GRACE)
    got = await dedupe.decide([story("itm_a", "src_a"), story("itm_b", "src_a", "http://news.example/rail?p=2")])
    assert [i.id for i in got.new] == ["itm_a"]
    assert [(d.id, d.item_id, d.reason) for d in got.duplicates] == [("itm_b", "itm_a", "near_duplicate")]


async def test_a_copy_behind_a_waiting_entry_of_its_batch_waits_too(store: SQLiteStore) -> None:
    clock = ManualClock(T0)
    dedupe = Deduper(store, clock, claim_grace=GRACE)
    await dedupe.decide([story("itm_a", "src_a")])  # never published
    clock.now = T0 + timedelta(seconds=10)
    other_url = "http://mirror.example/rail"
    got = await dedupe.decide([story("itm_b", "src_b"), story("itm_c", "src_b", other_url)])
    assert got.new == [] and got.duplicates == [] and got.deferred == 2


async def test_take_over_keys_is_conditional_on_owner_and_age(store: SQLiteStore) -> None:
    await store.claim_keys({"k1": "itm_a", "k2": "itm_a"}, T0)
    later = T0 + timedelta(minutes=5)
    # The wrong owner, and a claim too young: neither is taken.
    assert await store.take_over_keys({"k1": ("itm_x", "itm_b")}, later, later) == set()
    assert await store.take_over_keys({"k1": ("itm_a", "itm_b")}, T0, later) == set()
    assert await store.take_over_keys({"k1": ("itm_a", "itm_b"), "k2": ("itm_a", "itm_b")}, later, later) == {
        "k1",
        "k2",
    }
    assert await store.claim_keys({"k1": "itm_z"}, later) == {"k1": "itm_b"}
    assert await store.take_over_keys({}, later, later) == set()


async def test_a_copy_links_only_to_a_published_owner_among_several(store: SQLiteStore) -> None:
    # Its URL was claimed by an item never published, its text by one that was: it is a copy of
    # the published one (before: of the first key's owner, which nobody will ever see).
    clock = ManualClock(T0)
    dedupe = Deduper(store, clock, claim_grace=GRACE)
    other_text = {"title": "Dairy exports from Uzbekistan climb to a record", "summary": "Milk tonnage rose."}
    await dedupe.decide([story("itm_a", "src_a").model_copy(update=other_text)])  # URL claimed, never published
    published = await dedupe.decide([story("itm_p", "src_p", "http://other.example/p")])
    await store.mark_seen(published.seen_marks(), clock())
    clock.now = T0 + 10 * GRACE
    copy = await dedupe.decide([story("itm_c", "src_c")])
    assert [(d.id, d.item_id) for d in copy.duplicates] == [("itm_c", "itm_p")]


async def test_an_owner_waiting_in_the_same_batch_makes_its_copy_wait_whatever_the_order(
    store: SQLiteStore,
) -> None:
    # itm_x claimed the story at an earlier, deferred poll; listed after its copy itm_y, it used
    # to be decided too late: itm_y became the copy of an item that was not published.
    clock = ManualClock(T0)
    dedupe = Deduper(store, clock, claim_grace=timedelta(minutes=30))
    other_text = {"title": "Dairy exports from Uzbekistan climb to a record", "summary": "Milk tonnage rose."}
    await dedupe.decide([story("itm_o", "src_o").model_copy(update=other_text)])  # never published
    clock.now = T0 + timedelta(minutes=1)
    assert (await dedupe.decide([story("itm_x", "src_s")])).deferred == 1
    clock.now = T0 + timedelta(minutes=15)
    got = await dedupe.decide([story("itm_y", "src_s", "http://other.example/y"), story("itm_x", "src_s")])
    assert got.duplicates == [] and got.new == [] and got.deferred == 2
    clock.now = T0 + timedelta(minutes=45)  # itm_o's claim is abandoned now: itm_x takes it, itm_y is its copy
    got = await dedupe.decide([story("itm_y", "src_s", "http://other.example/y"), story("itm_x", "src_s")])
    assert [i.id for i in got.new] == ["itm_x"] and [(d.id, d.item_id) for d in got.duplicates] == [("itm_y", "itm_x")]


async def test_two_entries_of_a_batch_are_never_each_others_copy(store: SQLiteStore) -> None:
    # itm_a claimed its keys and its publish failed; at the next poll its text was edited and a
    # new entry itm_b on top shares its title and its new opening: each was the other's copy,
    # both were marked seen, and the story was lost.
    clock = ManualClock(T0)
    dedupe = Deduper(store, clock, claim_grace=GRACE)
    first_text = " ".join(f"alpha{n}" for n in range(40))
    edited = " ".join(f"beta{n}" for n in range(40))
    await dedupe.decide([story("itm_a", "src_a", "http://x.example/a").model_copy(update={"summary": first_text})])
    clock.now = T0 + GRACE + timedelta(seconds=80)
    got = await dedupe.decide(
        [
            story("itm_b", "src_a", "http://x.example/b").model_copy(update={"summary": edited}),
            story("itm_a", "src_a", "http://x.example/a").model_copy(update={"summary": edited, "content_hash": "h2"}),
        ]
    )
    assert len(got.new) == 1 and [d.item_id for d in got.duplicates] == [got.new[0].id]


async def test_a_copy_of_a_copy_is_linked_to_the_storys_item(store: SQLiteStore) -> None:
    # A copy claims the story keys no one held (here its own lead); a third entry meeting the
    # story only through that key was linked to the copy, which readers of copies (the API's
    # duplicates, the tracker's official copies) never find, as they look copies up by item.
    clock = ManualClock(T0)
    dedupe = Deduper(store, clock, claim_grace=GRACE)
    first = await dedupe.decide([story("itm_a", "src_a")])
    await store.mark_seen(first.seen_marks(), clock())
    other_lead = (
        "Officials in Almaty said on Tuesday that the new route cuts the journey from Kazakhstan to the"
        " Arabian Sea by ten days and that two more trains a week will follow it from January on."
    )
    copy = story("itm_b", "src_b", url="http://b.example/rail").model_copy(update={"summary": other_lead})
    linked = await dedupe.decide([copy])
    assert [(d.id, d.item_id) for d in linked.duplicates] == [("itm_b", "itm_a")]
    await store.mark_seen(linked.seen_marks(), clock())
    third = story("itm_c", "src_c", url="http://c.example/x").model_copy(
        update={"title": "Rail freight route opens, officials say", "summary": other_lead}
    )
    again = await dedupe.decide([third])
    assert [(d.id, d.item_id) for d in again.duplicates] == [("itm_c", "itm_a")], "the story's item, not the copy"


async def test_links_made_to_copies_before_are_followed_to_the_storys_item(store: SQLiteStore) -> None:
    # Ingest before 2026-12-05 linked copies to copies: itm_b → itm_x → itm_a. A copy meeting the
    # story through itm_b's keys goes to itm_a; the story's item itself, listed again after its
    # own mark expired (its copies' marks are younger), is not its own copy: it is new, as any
    # entry past the retention (review: counted unchanged, it stayed unmarked, so its edits were
    # lost and a later copy took its keys over as an abandoned claim).
    clock = ManualClock(T0)
    dedupe = Deduper(store, clock, claim_grace=GRACE)
    await store.mark_seen({"itm_x": "dup:itm_a", "itm_b": "dup:itm_x"}, T0)
    await store.claim_keys(dict.fromkeys(Deduper._keys(story("itm_b", "src_b")), "itm_b"), T0)
    copy = await dedupe.decide([story("itm_c", "src_c")])
    assert [(d.id, d.item_id) for d in copy.duplicates] == [("itm_c", "itm_a")]
    again = await dedupe.decide([story("itm_a", "src_a")])
    assert again.duplicates == [] and [i.id for i in again.new] == ["itm_a"], "past the retention: new, not a copy"
    await store.mark_seen(again.seen_marks(), clock())
    edited = story("itm_a", "src_a").model_copy(update={"content_hash": "h-edited"})
    assert [i.id for i in (await dedupe.decide([edited])).updated] == ["itm_a"], "marked again: an edit is an update"
    later = await dedupe.decide([story("itm_d", "src_d")])
    assert [(d.id, d.item_id) for d in later.duplicates] == [("itm_d", "itm_a")], "its keys have a published owner"
