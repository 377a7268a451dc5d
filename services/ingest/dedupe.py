"""Deduplication in layers, decided before anything is published.

1. The same entry seen again (same item id: guid, canonical link or text) with the same content
   hash is dropped; with a different content hash it is an *update* (``revision`` + 1).
2. A new entry whose canonical URL, normalised title or opening text already belongs to another
   item is a *duplicate*: linked to that first item, not published as new.
3. Everything else is *new*.
The store's dedupe keys are insert-if-absent, so concurrent replicas agree on which item came first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from services.ingest.normalize import story_keys
from shared.models import DuplicateRef, RawItem
from shared.store import Store
from shared.timeutil import Clock, utcnow


@dataclass
class Decisions:
    """What to do with one batch of parsed items."""

    new: list[RawItem] = field(default_factory=list)
    updated: list[RawItem] = field(default_factory=list)
    duplicates: list[DuplicateRef] = field(default_factory=list)
    unchanged: int = 0

    def seen_marks(self) -> dict[str, str]:
        """What to record as seen once the batch is published: id → "revision:content hash"."""
        marks = {i.id: f"{i.revision}:{i.content_hash}" for i in (*self.new, *self.updated)}
        marks.update({d.id: "dup:" + d.item_id for d in self.duplicates})
        return marks


def _url_key(url: str) -> str:
    return "url:" + hashlib.sha256(url.encode()).hexdigest()[:32]


class Deduper:
    """Sorts parsed items into new, updated, duplicate and unchanged."""

    def __init__(self, store: Store, clock: Clock = utcnow) -> None:
        self._store = store
        self._clock = clock

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
        for item in fresh:
            first = next((owners[k] for k in keys[item.id] if owners.get(k, item.id) != item.id), None)
            if first is None:
                decisions.new.append(item)
                continue
            own_url = item.canonical_url and owners.get(keys[item.id][0]) == first
            decisions.duplicates.append(
                DuplicateRef(
                    id=item.id,
                    item_id=first,
                    source_id=item.source_id,
                    url=item.url,
                    title=item.title,
                    reason="canonical_url" if own_url else "near_duplicate",
                    seen_at=now,
                )
            )
        return decisions

    @staticmethod
    def _keys(item: RawItem) -> list[str]:
        """The item's story keys: its canonical URL first (when it has one), then its text's."""
        return ([_url_key(item.canonical_url)] if item.canonical_url else []) + story_keys(item.title, item.summary)
