"""Deduplication in layers, decided before anything is published.

1. The same entry seen again (same item id: guid, canonical link or text) with the same content
   hash is dropped; with a different content hash it is an *update* (``revision`` + 1).
2. A new entry whose canonical URL, normalised title or opening text already belongs to another
   item is a *duplicate*: linked to that first item, not published as new — once that item is
   known to be published (it is marked seen). A key claimed by an item that was never published
   is taken over when its claim is older than a poll lease (the poll that claimed it has ended, so
   its publish failed: the story would otherwise be lost); while the claim is younger the entry is
   *deferred*, neither published nor marked seen, and decided again at its source's next poll.
3. Everything else is *new*.
The store's dedupe keys are insert-if-absent, so concurrent replicas agree on which item came first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.ingest.normalize import story_keys
from shared.models import DuplicateRef, RawItem
from shared.store import Store
from shared.timeutil import Clock, utcnow

MAX_COPY_HOPS = 3  # copy-to-copy links followed to the story's item (links made before 2026-12-05)


@dataclass
class Decisions:
    """What to do with one batch of parsed items (``deferred``: entries left undecided, neither
    published nor marked seen, because the item that claimed their story may still be publishing)."""

    new: list[RawItem] = field(default_factory=list)
    updated: list[RawItem] = field(default_factory=list)
    duplicates: list[DuplicateRef] = field(default_factory=list)
    unchanged: int = 0
    deferred: int = 0

    def seen_marks(self) -> dict[str, str]:
        """What to record as seen once the batch is published: id → "revision:content hash"."""
        marks = {i.id: f"{i.revision}:{i.content_hash}" for i in (*self.new, *self.updated)}
        marks.update({d.id: "dup:" + d.item_id for d in self.duplicates})
        return marks


def _url_key(url: str) -> str:
    return "url:" + hashlib.sha256(url.encode()).hexdigest()[:32]


class Deduper:
    """Sorts parsed items into new, updated, duplicate and unchanged."""

    def __init__(self, store: Store, clock: Clock = utcnow, *, claim_grace: timedelta) -> None:
        """``claim_grace``: how long a claim's poll may still be publishing (the poll lease)."""
        self._store = store
        self._clock = clock
        self._grace = claim_grace

    async def decide(self, items: list[RawItem]) -> Decisions:
        decisions = Decisions()
        unique: dict[str, RawItem] = {}
        for item in items:
            unique.setdefault(item.id, item)  # a feed listing one entry twice
        seen = await self._store.seen_hashes(unique)
        fresh: list[RawItem] = []
        for item in unique.values():
            mark = seen.get(item.id)
            if mark is None:
                fresh.append(item)
            elif mark.startswith("dup:"):
                decisions.unchanged += 1
            else:
                revision, _, digest = mark.partition(":")
                if digest == item.content_hash:
                    decisions.unchanged += 1
                else:
                    decisions.updated.append(item.model_copy(update={"revision": int(revision or 0) + 1}))
        now = self._clock()
        # Every story key of the batch claimed in one store round trip; a key two entries of
        # this batch share goes to the first (feed order), as it would one entry at a time.
        keys = {item.id: self._keys(item) for item in fresh}
        wanted: dict[str, str] = {}
        for item in fresh:
            for key in keys[item.id]:
                wanted.setdefault(key, item.id)
        owners = await self._store.claim_keys(wanted, now)
        waiting, published = await self._settle_unpublished(fresh, keys, owners, now)
        made_new: set[str] = set()
        # Entries that own every key of theirs first (they are new), then the rest in feed order.
        ordered = sorted(fresh, key=lambda i: any(owners.get(k, i.id) != i.id for k in keys[i.id]))
        for item in ordered:
            if item.id in waiting:
                decisions.deferred += 1
                continue
            # A copy links only to an item that is published, or that this poll publishes as new
            # before it (feed order): never to one that is itself a copy, so two entries of one
            # batch can never be each other's copy, leaving the story unpublished. An entry whose
            # only earlier owner comes later in the batch is new (at worst the story goes out
            # twice, never not at all).
            first = next(
                (
                    o
                    for k in keys[item.id]
                    if (o := owners.get(k, item.id)) != item.id and (o in published or o in made_new)
                ),
                None,
            )
            if first is None:
                decisions.new.append(item)
                made_new.add(item.id)
                continue
            story = published.get(first, first)
            if story == item.id:
                # The story's own item listed again after its seen mark expired, met through its
                # copy's keys: no copy of itself. New, as any entry past the retention is: it is
                # published again (stored by its id, so replaced) and marked, so its keys have a
                # published owner again and an edit of it is an update.
                decisions.new.append(item)
                made_new.add(item.id)
                continue
            own_url = item.canonical_url and owners.get(keys[item.id][0]) == first
            decisions.duplicates.append(
                DuplicateRef(
                    id=item.id,
                    # The story's item, not an owner that is itself a copy: readers of copies
                    # (the API's duplicates, the tracker's official copies) look them up by item.
                    item_id=story,
                    source_id=item.source_id,
                    url=item.url,
                    title=item.title,
                    reason="canonical_url" if own_url else "near_duplicate",
                    seen_at=now,
                )
            )
        return decisions

    async def _settle_unpublished(
        self, fresh: list[RawItem], keys: dict[str, list[str]], owners: dict[str, str], now: datetime
    ) -> tuple[set[str], dict[str, str]]:
        """Deal with stories first claimed by items that were never published: take over the
        claims older than the grace (updating ``owners``). Returns the ids of the items that must
        wait (a claim they meet is younger, its poll may still be publishing), and the owners
        from outside this batch known to be published, each with its story's item (itself, or
        the item it is a copy of)."""
        batch = {item.id for item in fresh}
        contested = {item.id: [k for k in keys[item.id] if owners.get(k, item.id) != item.id] for item in fresh}
        outside = {owners[k] for ks in contested.values() for k in ks} - batch
        # An owner marked seen was published (or is itself a copy of a published one: "dup:<item>").
        marks = await self._store.seen_hashes(outside) if outside else {}
        published = await self._story_items(
            {o: m.removeprefix("dup:") if m.startswith("dup:") else o for o, m in marks.items()}
        )
        settled = set(published)
        waiting = self._waiting(fresh, contested, owners, settled, batch)
        wanted: dict[str, tuple[str, str]] = {}
        for item in fresh:
            if item.id in waiting:
                for k in contested[item.id]:
                    if owners[k] not in batch:  # a claim of an earlier poll, never published
                        wanted.setdefault(k, (owners[k], item.id))
        if wanted:
            taken = await self._store.take_over_keys(wanted, now - self._grace, now)
            for key in taken:
                owners[key] = wanted[key][1]
            freed = {i for i in waiting if all(owners[k] == i for k in contested[i])}
            if freed:  # their stories' claims were abandoned: they are new now
                waiting = self._waiting(fresh, contested, owners, settled | freed, batch, exempt=freed)
        return waiting, published

    async def _story_items(self, links: dict[str, str]) -> dict[str, str]:
        """``links`` (owner → the item its mark names) followed to the story's item: a copy linked
        to another copy (as ingest did before 2026-12-05) names a copy; at most MAX_COPY_HOPS
        further reads, so a cycle or a long chain cannot hold a poll."""
        for _ in range(MAX_COPY_HOPS):
            named = {item for owner, item in links.items() if item != owner}
            marks = await self._store.seen_hashes(named) if named else {}
            # A mark naming its own item (a broken link) leads nowhere: not followed again.
            further = {i: m[4:] for i, m in marks.items() if m.startswith("dup:") and m[4:] != i}
            if not further:
                break
            links = {owner: further.get(item, item) for owner, item in links.items()}
        return links

    @staticmethod
    def _waiting(
        fresh: list[RawItem],
        contested: dict[str, list[str]],
        owners: dict[str, str],
        settled: set[str],
        batch: set[str],
        exempt: frozenset[str] | set[str] = frozenset(),
    ) -> set[str]:
        """The items none of whose story's owners is published or being published now, to a
        fixed point: an owner in this batch that waits makes its copies wait too, whatever the
        feed order (it may have claimed the story at an earlier, deferred poll)."""
        waiting: set[str] = set()
        changed = True
        while changed:
            changed = False
            for item in fresh:
                if item.id in waiting or item.id in exempt:
                    continue
                firsts = {owners[k] for k in contested[item.id]} - {item.id}
                if firsts and not any(o in settled or (o in batch and o not in waiting) for o in firsts):
                    waiting.add(item.id)
                    changed = True
        return waiting

    @staticmethod
    def _keys(item: RawItem) -> list[str]:
        """The item's story keys: its canonical URL first (when it has one), then its text's."""
        return ([_url_key(item.canonical_url)] if item.canonical_url else []) + story_keys(item.title, item.summary)
