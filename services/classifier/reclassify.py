"""Replaying stored items through a (new) taxonomy or agreements registry: what would change,
and optionally write it.

The report comes first and nothing is written unless asked: an operator sees which items would
gain or lose which sector, which agreement, and which stage they would report, before a change
reaches the events API and the agreement tracker.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from services.classifier.classify import Classifier
from shared.models import ClassifiedItem, RawItem
from shared.store import EventQuery, Store
from shared.store.base import MAX_PAGE


@dataclass
class Change:
    """How one item's classification would change."""

    item_id: str
    title: str
    gained: list[str]
    lost: list[str]
    countries_before: list[str]
    countries_after: list[str]
    agreements_gained: list[str] = field(default_factory=list)
    agreements_lost: list[str] = field(default_factory=list)
    stage_before: str | None = None
    stage_after: str | None = None


@dataclass
class ReclassifyReport:
    """Totals and the per-item changes of one replay."""

    classifier_version: str
    items: int = 0
    written: int = 0
    gained: Counter[str] = field(default_factory=Counter)
    lost: Counter[str] = field(default_factory=Counter)
    agreements_gained: Counter[str] = field(default_factory=Counter)
    agreements_lost: Counter[str] = field(default_factory=Counter)
    stages: Counter[str] = field(default_factory=Counter)  # "before → after"
    changes: list[Change] = field(default_factory=list)


async def reclassify(store: Store, classifier: Classifier, *, write: bool = False) -> ReclassifyReport:
    """Classify every stored item again; report differences; upsert changed items when ``write``."""
    report = ReclassifyReport(classifier_version=classifier.version)
    after: tuple[datetime, str] | None = None
    while True:
        page = await store.list_items(EventQuery(limit=MAX_PAGE, after=after))
        if not page:
            return report
        for old in page:
            report.items += 1
            new = classifier.classify(RawItem.model_validate(old.model_dump(include=set(RawItem.model_fields))))
            gained = sorted(set(new.sectors) - set(old.sectors))
            lost = sorted(set(old.sectors) - set(new.sectors))
            linked_before, linked_after = {a.id for a in old.agreements}, {a.id for a in new.agreements}
            a_gained, a_lost = sorted(linked_after - linked_before), sorted(linked_before - linked_after)
            if gained or lost or new.countries != old.countries or a_gained or a_lost or new.stage != old.stage:
                report.gained.update(gained)
                report.lost.update(lost)
                report.agreements_gained.update(a_gained)
                report.agreements_lost.update(a_lost)
                if new.stage != old.stage:
                    report.stages[f"{old.stage} → {new.stage}"] += 1
                report.changes.append(
                    Change(
                        old.id,
                        old.title,
                        gained,
                        lost,
                        list(old.countries),
                        list(new.countries),
                        a_gained,
                        a_lost,
                        old.stage,
                        new.stage,
                    )
                )
                if write:
                    await store.upsert_item(_keep_identity(old, new))
                    report.written += 1
        after = (page[-1].sort_at, page[-1].id)


def _keep_identity(old: ClassifiedItem, new: ClassifiedItem) -> ClassifiedItem:
    """The new classification with the stored item's own fields (ids and times unchanged)."""
    return new.model_copy(update={"fetched_at": old.fetched_at, "published_at": old.published_at})
