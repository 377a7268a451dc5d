"""Keyword classification: one compiled pattern over every term, scored per sector.

Matching rules, by script of the term:
- Latin: whole words, case-insensitive; short all-capital acronyms (AI, APP, KTZ) match only in
  capitals, so "app" or "ai" in running text do not count.
- Cyrillic: a stem matched at a word start (нефт → нефть, нефтяной), case-insensitive.
- Arabic script (Urdu): plain substring, since word boundaries are unreliable there.
A sector's score is the sum of the weights of its distinct matched terms, ×1.5 when the term is in
the title; the sector is assigned at or above the taxonomy threshold.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from services.classifier.taxonomy import Taxonomy
from shared.models import ClassifiedItem, Country, Evidence, RawItem, SectorScore

SNIPPET_RADIUS = 60
TITLE_BOOST = 1.5
MAX_EVIDENCE_PER_LABEL = 3


@dataclass(frozen=True)
class _Term:
    kind: Literal["sector", "country"]
    label: str
    term: str
    weight: float


def _pattern(term: str) -> str:
    escaped = re.escape(term)
    if any("\u0400" <= ch <= "\u04ff" for ch in term):
        return rf"(?i:(?<!\w){escaped}\w*)"
    if any("\u0600" <= ch <= "\u06ff" for ch in term):
        return escaped
    if term.isupper() and len(term) <= 5:
        return rf"(?<!\w){escaped}(?!\w)"
    return rf"(?i:(?<!\w){escaped}(?!\w))"


def _snippet(text: str, start: int, end: int) -> str:
    left = max(0, start - SNIPPET_RADIUS)
    right = min(len(text), end + SNIPPET_RADIUS)
    return ("…" if left else "") + text[left:right].strip() + ("…" if right < len(text) else "")


class Classifier:
    """Classifies raw items with one taxonomy; safe to share, holds no per-item state."""

    def __init__(self, taxonomy: Taxonomy) -> None:
        self.taxonomy = taxonomy
        self.version = f"keywords/{taxonomy.version}"
        terms: list[_Term] = []
        for sector, spec in taxonomy.sectors.items():
            terms += [_Term("sector", sector, t, w) for t, w in spec.terms.items()]
        for country, names in taxonomy.countries.items():
            terms += [_Term("country", country, n, 1.0) for n in names]
        # One regex per kind, so a country name inside a sector phrase ("Karachi" in "Karachi Port")
        # still counts; terms with the same pattern share a group ("KTZ" is transport and KZ).
        self._scanners: list[tuple[re.Pattern[str], list[list[_Term]]]] = []
        for kind in ("sector", "country"):
            groups: dict[str, list[_Term]] = {}
            for term in terms:
                if term.kind == kind:
                    groups.setdefault(_pattern(term.term), []).append(term)
            # Longer terms first so "Pakistan Railways" wins over "Pakistan" at the same position.
            patterns = sorted(groups, key=lambda p: -len(groups[p][0].term))
            regex = re.compile("|".join(f"(?P<t{i}>{p})" for i, p in enumerate(patterns)))
            self._scanners.append((regex, [groups[p] for p in patterns]))

    def _matches(self, text: str) -> Iterator[tuple[_Term, re.Match[str]]]:
        for regex, groups in self._scanners:
            for match in regex.finditer(text):
                for term in groups[int(match.lastgroup[1:])]:  # type: ignore[index]
                    yield term, match

    def classify(self, item: RawItem) -> ClassifiedItem:
        """Return the item with sectors, scores, countries and evidence."""
        title, body = item.title, item.summary
        scores: dict[str, float] = {}
        terms: dict[str, list[str]] = {}
        countries: set[str] = set()
        evidence: list[Evidence] = []
        seen: set[tuple[str, str, str]] = set()
        per_label: dict[tuple[str, str], int] = {}
        for text, boost in ((title, TITLE_BOOST), (body, 1.0)):
            for term, match in self._matches(text):
                key = (term.kind, term.label, term.term)
                if key in seen:
                    continue
                seen.add(key)
                if term.kind == "sector":
                    scores[term.label] = scores.get(term.label, 0.0) + term.weight * boost
                    terms.setdefault(term.label, []).append(term.term)
                else:
                    countries.add(term.label)
                count = per_label.get((term.kind, term.label), 0)
                if count < MAX_EVIDENCE_PER_LABEL:
                    per_label[(term.kind, term.label)] = count + 1
                    evidence.append(
                        Evidence(
                            kind=term.kind,
                            label=term.label,
                            term=term.term,
                            snippet=_snippet(text, match.start(), match.end()),
                        )
                    )
        assigned = sorted((s for s, v in scores.items() if v >= self.taxonomy.threshold), key=lambda s: (-scores[s], s))
        country_list: list[Country] = [c for c in ("PK", "KZ") if c in countries]
        return ClassifiedItem(
            **item.model_dump(),
            sectors=assigned,
            sector_scores=[SectorScore(id=s, score=round(scores[s], 3), terms=terms[s]) for s in assigned],
            countries=country_list,
            bilateral=len(country_list) == 2,
            evidence=[e for e in evidence if e.kind == "country" or e.label in assigned],
            classifier_version=self.version,
        )
