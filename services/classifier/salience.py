"""How prominent a sector's evidence is in an item: the features the judge reads.

The keyword pass says *which* sectors an item names; these features say *how* it names them —
in the title, in the lead, in how many of its sentences, next to a country, against the other
sectors it names — which is what separates the subject of a story from a passing mention
("Gwadar" once in a road story, "ship" as a verb, "Minister for Petroleum" as a title).

Contract: :func:`sector_features` is a pure function of the item's hits; every value is finite
and in a small range (counts are log-scaled, positions and shares are in [0, 1]), so a linear
model over them needs no scaling step at run time. The names in :data:`FEATURES` are stable: a
judge file names the features it was trained on and is refused if they differ.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

LEAD_CHARS = 400
_SENTENCE_END = re.compile(r"(?<=[.!?؟।۔])\s+|\n+")

FEATURES: tuple[str, ...] = (
    "keyword_score",  # log1p of the keyword score (weights, title boost, repeats)
    "keyword_assigned",  # the keyword rule alone would assign the sector
    "core_terms",  # log1p of distinct core terms
    "support_terms",  # log1p of distinct supporting terms
    "mentions",  # log1p of all matches
    "in_title",
    "in_lead",  # a match in the first LEAD_CHARS characters of the text
    "first_position",  # offset of the first match in the text / text length; 1 when none
    "sentence_share",  # share of the text's sentences with a match
    "relative",  # score / best score among the item's candidate sectors
    "top",  # the best-scoring candidate
    "candidates",  # log1p of the number of candidate sectors
    "near_country",  # a match in a sentence (or title) that names Pakistan or Kazakhstan
    "both_countries",  # the item is about both countries
    "one_country",  # about exactly one
    "max_weight",  # the strongest matched term's weight / 2
)


def sentence_bounds(text: str) -> list[tuple[int, int]]:
    """Start and end offsets of the sentences of ``text`` (a cheap split on end punctuation)."""
    bounds: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if m.start() > start:
            bounds.append((start, m.start()))
        start = m.end()
    if start < len(text):
        bounds.append((start, len(text)))
    return bounds or [(0, len(text))]


@dataclass
class SectorEvidence:
    """What the keyword pass found for one sector in one item (matches after negatives)."""

    score: float = 0.0
    core: set[str] = field(default_factory=set)
    support: set[str] = field(default_factory=set)
    mentions: int = 0
    max_weight: float = 0.0
    in_title: bool = False
    text_starts: list[int] = field(default_factory=list)
    title_near_country: bool = False


def _sentence_of(bounds: list[tuple[int, int]], offset: int) -> int:
    lo, hi = 0, len(bounds) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if bounds[mid][0] <= offset:
            lo = mid
        else:
            hi = mid - 1
    return lo


def sector_features(
    found: dict[str, SectorEvidence],
    text: str,
    country_starts: list[int],
    countries: int,
    assigned_by_keywords: set[str],
) -> dict[str, dict[str, float]]:
    """Features of every candidate sector (one with a core term) of one item.

    ``country_starts`` are the text offsets of country names; ``countries`` how many of the two
    the item is about.
    """
    candidates = {s: e for s, e in found.items() if e.core}
    if not candidates:
        return {}
    bounds = sentence_bounds(text)
    country_sentences = {_sentence_of(bounds, o) for o in country_starts}
    best = max(e.score for e in candidates.values())
    top = max(candidates, key=lambda s: (candidates[s].score, s))
    length = max(len(text), 1)
    out: dict[str, dict[str, float]] = {}
    for sector, ev in candidates.items():
        sentences = {_sentence_of(bounds, o) for o in ev.text_starts}
        first = min(ev.text_starts) / length if ev.text_starts else 1.0
        out[sector] = {
            "keyword_score": math.log1p(ev.score),
            "keyword_assigned": float(sector in assigned_by_keywords),
            "core_terms": math.log1p(len(ev.core)),
            "support_terms": math.log1p(len(ev.support)),
            "mentions": math.log1p(ev.mentions),
            "in_title": float(ev.in_title),
            "in_lead": float(any(o < LEAD_CHARS for o in ev.text_starts)),
            "first_position": min(first, 1.0),
            "sentence_share": len(sentences) / len(bounds) if text else 0.0,
            "relative": ev.score / best if best else 0.0,
            "top": float(sector == top),
            "candidates": math.log1p(len(candidates)),
            "near_country": float(ev.title_near_country or bool(sentences & country_sentences)),
            "both_countries": float(countries == 2),
            "one_country": float(countries == 1),
            "max_weight": min(ev.max_weight / 2, 1.5),
        }
    return out
