"""Keyword classification on an Aho-Corasick automaton (pyahocorasick): one pass over the text
finds every taxonomy term, then word-boundary rules, negatives and weights decide.

Matching rules, by script of the term:
- Latin: case-insensitive, whole words; an English plural ending (-s, -es) still matches. Short
  all-capital acronyms (AI, APP, KTZ) match only in capitals.
- Cyrillic and Arabic script (Russian, Kazakh, Uzbek, Urdu): the term is a stem that must start a
  word and may be followed by an inflection (нефт → нефть, нефтяной; پاکستان → پاکستانی).
A sector's score is the sum of the weights of its distinct matched terms (×title_boost in the title), plus
half a weight for each repeat of a term (at most four repeats), leaving out terms inside one of the
sector's negative phrases. At or above the threshold the sector is assigned, and so are the
sectors it implies. Items about Pakistan or Kazakhstan use the taxonomy's (lower) focus threshold:
for the agreements' own news an explicit sector mention matters; other items use each sector's
(higher) threshold, so one passing mention of a generic word ("trade", "oil") is not enough.
Supporting terms count only when a core term of the sector matched too. A country needs a mention
in the title or two in the text: one passing mention does not make an item "about" a country.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import ahocorasick

from services.classifier.taxonomy import Taxonomy
from shared.models import ClassifiedItem, Country, Evidence, RawItem, SectorScore

SNIPPET_RADIUS = 60
MAX_EVIDENCE_PER_LABEL = 3
COUNTRY_TEXT_MENTIONS = 2
REPEAT_FACTOR = 0.5
MAX_REPEATS = 4

Kind = Literal["sector", "support", "country", "negative"]


@dataclass(frozen=True)
class _Term:
    kind: Kind
    label: str
    term: str
    weight: float
    stem: bool  # may be followed by more letters (Cyrillic, Arabic script)
    exact_case: bool  # acronyms


def _is_stem_script(term: str) -> bool:
    return any("\u0400" <= ch <= "\u04ff" or "\u0600" <= ch <= "\u06ff" for ch in term)


def _lower(text: str) -> str:
    lowered = text.lower()
    if len(lowered) == len(text):
        return lowered
    # A few characters change length when lowered (İ); keep offsets aligned with the original.
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _snippet(text: str, start: int, end: int) -> str:
    left = max(0, start - SNIPPET_RADIUS)
    right = min(len(text), end + SNIPPET_RADIUS)
    return ("…" if left else "") + text[left:right].strip() + ("…" if right < len(text) else "")


@dataclass(frozen=True)
class _Hit:
    term: _Term
    start: int
    end: int  # exclusive
    in_title: bool
    text: str


class Classifier:
    """Classifies raw items with one taxonomy; safe to share, holds no per-item state."""

    def __init__(self, taxonomy: Taxonomy) -> None:
        self.taxonomy = taxonomy
        self.version = f"keywords/{taxonomy.version}"
        terms: list[_Term] = []
        for sector, spec in taxonomy.sectors.items():
            for t, w in spec.terms.items():
                terms.append(_Term("sector", sector, t, w, _is_stem_script(t), t.isupper() and len(t) <= 5))
            for t, w in spec.support.items():
                terms.append(_Term("support", sector, t, w, _is_stem_script(t), t.isupper() and len(t) <= 5))
            terms += [_Term("negative", sector, n, 0.0, _is_stem_script(n), False) for n in spec.negative]
        for country, names in taxonomy.countries.items():
            terms += [_Term("country", country, n, 1.0, _is_stem_script(n), n.isupper() and len(n) <= 5) for n in names]
        automaton = ahocorasick.Automaton()
        keyed: dict[str, list[_Term]] = {}
        for term in terms:
            keyed.setdefault(_lower(term.term), []).append(term)
        for key, group in keyed.items():
            automaton.add_word(key, (len(key), tuple(group)))
        automaton.make_automaton()
        self._automaton = automaton
        self._thresholds = {s: spec.threshold or taxonomy.threshold for s, spec in taxonomy.sectors.items()}

    def _hits(self, text: str, in_title: bool) -> list[_Hit]:
        lowered = _lower(text)
        hits: list[_Hit] = []
        n = len(text)
        for last, (length, group) in self._automaton.iter(lowered):
            start, end = last - length + 1, last + 1
            if start > 0 and lowered[start - 1].isalnum():
                continue  # not at a word start
            for term in group:
                if not term.stem and end < n and lowered[end].isalnum():
                    tail = lowered[end : end + 3]
                    plural = (tail[:1] == "s" and not tail[1:2].isalnum()) or (
                        tail[:2] == "es" and not tail[2:3].isalnum()
                    )
                    if term.exact_case or not plural:
                        continue
                if term.exact_case and text[start:end] != term.term:
                    continue
                hits.append(_Hit(term, start, end, in_title, text))
        return hits

    def classify(self, item: RawItem) -> ClassifiedItem:
        """Return the item with sectors, scores, countries and evidence."""
        hits = self._hits(item.title, True) + self._hits(item.summary, False)
        negatives = [(h.term.label, h.in_title, h.start, h.end) for h in hits if h.term.kind == "negative"]

        def negated(h: _Hit) -> bool:
            # A term that starts inside a negative phrase is cancelled ("oil output" in "palm oil output").
            return any(label == h.term.label and t == h.in_title and s <= h.start < e for label, t, s, e in negatives)

        scores: dict[str, float] = {}
        matched: dict[str, list[str]] = {}
        repeats: dict[tuple[str, str], int] = {}
        core: set[str] = set()
        mentions: dict[str, int] = {}
        in_title: set[str] = set()
        evidence: dict[tuple[str, str], list[Evidence]] = {}
        for h in hits:
            term = h.term
            if term.kind == "negative" or (term.kind != "country" and negated(h)):
                continue
            if term.kind == "country":
                mentions[term.label] = mentions.get(term.label, 0) + 1
                if h.in_title:
                    in_title.add(term.label)
            else:
                if term.kind == "sector":
                    core.add(term.label)
                key = (term.label, term.term)
                if key not in repeats:
                    repeats[key] = 0
                    boost = self.taxonomy.title_boost if h.in_title else 1.0
                    scores[term.label] = scores.get(term.label, 0.0) + term.weight * boost
                    matched.setdefault(term.label, []).append(term.term)
                elif repeats[key] < MAX_REPEATS:
                    repeats[key] += 1
                    scores[term.label] += term.weight * REPEAT_FACTOR
            kind: Literal["sector", "country"] = "country" if term.kind == "country" else "sector"
            bucket = evidence.setdefault((kind, term.label), [])
            if len(bucket) < MAX_EVIDENCE_PER_LABEL and all(e.term != term.term for e in bucket):
                bucket.append(
                    Evidence(kind=kind, label=term.label, term=term.term, snippet=_snippet(h.text, h.start, h.end))
                )
        countries: list[Country] = [
            c for c in ("PK", "KZ") if c in in_title or mentions.get(c, 0) >= COUNTRY_TEXT_MENTIONS
        ]
        focus = self.taxonomy.focus_threshold if countries else None
        assigned = {s for s, v in scores.items() if s in core and v >= (focus or self._thresholds[s])}
        for sector in list(assigned):
            for broader in self.taxonomy.implies.get(sector, []):
                if broader not in assigned:
                    assigned.add(broader)
                    scores[broader] = max(scores.get(broader, 0.0), scores[sector])
                    matched.setdefault(broader, []).extend(t for t in matched[sector] if t not in matched[broader])
        ordered = sorted(assigned, key=lambda s: (-scores[s], s))
        kept = [
            e
            for (kind, label), bucket in evidence.items()
            if (kind == "sector" and label in assigned) or (kind == "country" and label in countries)
            for e in bucket
        ]
        return ClassifiedItem(
            **item.model_dump(),
            sectors=ordered,
            sector_scores=[SectorScore(id=s, score=round(scores[s], 3), terms=matched[s]) for s in ordered],
            countries=countries,
            bilateral=len(countries) == 2,
            evidence=kept,
            classifier_version=self.version,
        )
