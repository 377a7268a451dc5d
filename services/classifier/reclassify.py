"""Replaying stored items through a (new) taxonomy or agreements registry: what would change,
and optionally write it.

The report comes first and nothing is written unless asked: an operator sees which items would
gain or lose which sector, which agreement, and which stage they would report, before a change
reaches the events API and the agreement tracker.

An item counts as changed when anything the events API filters or sorts on would change: its
sectors or their scores (``min_score``, ``sort=score``), countries, agreements with their scores
and ``via``, stage, or ``classifier_version``; or what the API shows as the reasons for them: the
matched terms of sectors and agreements and the evidence (a registry reworded without a new
version, or a new snippet rule, left every stored timeline's sentences as they were). A taxonomy
that only moves weights changes scores alone; such items are counted apart (``rescored``, with
those whose only change is their terms or evidence) and written like the others, or the stored
scores would answer those filters from the old taxonomy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from services.classifier.classify import Classifier
from shared.models import ClassifiedItem, RawItem
from shared.store import EventQuery, Store
from shared.store.base import MAX_PAGE

# Scores are compared at this many decimals: a replay's float noise is no change, a moved weight is.
SCORE_DIGITS = 3


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
    top_score_before: float = 0.0
    top_score_after: float = 0.0
    version_before: str = ""
    version_after: str = ""
    rescored: bool = False  # only scores, link scores or via, terms, evidence, or the classifier version change
    written: bool = False


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
    rescored: int = 0  # changed items whose only changes are scores, via, terms, evidence or the version
    superseded: int = 0  # changed items not written: a newer revision was stored meanwhile
    changes: list[Change] = field(default_factory=list)


def _queried(item: ClassifiedItem) -> tuple[object, ...]:
    """What the events API filters or sorts on, as computed by the classifier (scores rounded to
    :data:`SCORE_DIGITS`); two classifications with equal keys answer every query alike."""
    return (
        sorted((s.id, round(s.score, SCORE_DIGITS)) for s in item.sector_scores),
        sorted(item.sectors),
        list(item.countries),
        item.bilateral,
        sorted((a.id, a.via, round(a.score, SCORE_DIGITS)) for a in item.agreements),
        item.stage,
        item.classifier_version,
    )


def _reasons(item: ClassifiedItem) -> tuple[object, ...]:
    """What the API shows as the reasons for a classification: matched terms and evidence."""
    return (
        sorted((s.id, tuple(s.terms)) for s in item.sector_scores),
        sorted((a.id, tuple(a.terms)) for a in item.agreements),
        sorted((e.kind, e.label, e.term, e.snippet) for e in item.evidence),
    )


async def reclassify(
    store: Store,
    classifier: Classifier,
    *,
    write: bool = False,
    on_change: Callable[[Change], None] | None = None,
) -> ReclassifyReport:
    """Classify every stored item again; report differences; upsert changed items when ``write``.

    ``on_change`` is called with each change as it is found and, when ``write``, only once that
    item is stored: a caller that records each call (the CLI prints it) keeps an account of what
    was written even when the run is interrupted. Items are read newest first, in pages.
    """
    report = ReclassifyReport(classifier_version=classifier.version)
    after: tuple[datetime, str] | None = None
    while True:
        page = await store.list_items(EventQuery(limit=MAX_PAGE, after=after))
        if not page:
            return report
        for old in page:
            report.items += 1
            new = classifier.classify(RawItem.model_validate(old.model_dump(include=set(RawItem.model_fields))))
            reasons_only = _queried(new) == _queried(old)
            if reasons_only and _reasons(new) == _reasons(old):
                continue
            gained = sorted(set(new.sectors) - set(old.sectors))
            lost = sorted(set(old.sectors) - set(new.sectors))
            linked_before, linked_after = {a.id for a in old.agreements}, {a.id for a in new.agreements}
            a_gained, a_lost = sorted(linked_after - linked_before), sorted(linked_before - linked_after)
            rescored = not (
                gained or lost or new.countries != old.countries or a_gained or a_lost or new.stage != old.stage
            )
            report.gained.update(gained)
            report.lost.update(lost)
            report.agreements_gained.update(a_gained)
            report.agreements_lost.update(a_lost)
            report.rescored += rescored
            if new.stage != old.stage:
                report.stages[f"{old.stage} → {new.stage}"] += 1
            change = Change(
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
                top_score_before=old.top_score,
                top_score_after=new.top_score,
                version_before=old.classifier_version,
                version_after=new.classifier_version,
                rescored=rescored,
            )
            if write:
                # The live classifier may have stored a newer revision of the item since this
                # page was read (an edited entry): writing the reclassified older text over it
                # would take the edit back. The store writes only over the revision read here,
                # checked and written in one step; a newer one is left.
                stored = _keep_identity(old, new, reasons_only=reasons_only)
                if await store.replace_item_if(stored, old.revision, old.content_hash):
                    report.written += 1
                    change.written = True
                else:
                    report.superseded += 1
            report.changes.append(change)
            if on_change is not None:
                on_change(change)
        after = (page[-1].sort_at, page[-1].id)


def _keep_identity(old: ClassifiedItem, new: ClassifiedItem, *, reasons_only: bool = False) -> ClassifiedItem:
    """The new classification with the stored item's own fields (ids and times unchanged). When
    only the reasons changed (terms, evidence), the classification time stays too: feeds date an
    entry's update by it, and nothing they show changed."""
    kept: dict[str, object] = {"fetched_at": old.fetched_at, "published_at": old.published_at}
    if reasons_only:
        kept["classified_at"] = old.classified_at
    return new.model_copy(update=kept)
