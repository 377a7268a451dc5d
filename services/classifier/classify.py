"""Classification: keywords propose, the judge decides.

One pass over the text finds every taxonomy term (:mod:`services.classifier.matching`, which
states the matching rules); negatives and weights give each sector a keyword score and the
keyword rule's verdict (below); every sector with a core term is a candidate with the salience
features of its evidence (:mod:`services.classifier.salience`). Given a judge
(:mod:`services.classifier.judge`), its calibrated probability is each candidate's score and its
thresholds decide; without one, the keyword rule decides and scores are keyword scores.

The keyword rule: a sector's score is the sum of the weights of its distinct matched terms
(×title_boost in the title), plus half a weight for each repeat of a term (at most four
repeats), leaving out terms inside one of the sector's negative phrases. At or above the
threshold the sector is assigned, and so are the sectors it implies. Items about Pakistan or
Kazakhstan use the taxonomy's (lower) focus threshold: for the agreements' own news an explicit
sector mention matters; other items use each sector's (higher) threshold, so one passing mention
of a generic word ("trade", "oil") is not enough. Supporting terms count only when a core term
of the sector matched too. A country needs a mention in the title, in the lead (the first
LEAD_CHARS characters of the text) or two further on: one passing mention deep in the story
does not make an item "about" a country, and an item is bilateral only when both countries are
subjects by that rule.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from services.classifier.agreements import Registry
from services.classifier.judge import Judge, words
from services.classifier.linker import AgreementLinker
from services.classifier.matching import Hit, Term, TermMatcher
from services.classifier.salience import LEAD_CHARS, SectorEvidence, sector_features
from services.classifier.taxonomy import Taxonomy
from shared.models import ClassifiedItem, Country, Evidence, RawItem, SectorScore

MAX_EVIDENCE_PER_LABEL = 3
COUNTRY_TEXT_MENTIONS = 2
REPEAT_FACTOR = 0.5
MAX_REPEATS = 4

Kind = Literal["sector", "support", "country", "negative"]


@dataclass(frozen=True)
class _Meaning:
    kind: Kind
    label: str
    weight: float


@dataclass
class Analysis:
    """What the keyword pass found in one item, before any decision."""

    scores: dict[str, float]
    matched: dict[str, list[str]]
    keyword_assigned: set[str]
    countries: list[Country]
    features: dict[str, dict[str, float]]  # candidate sector -> salience features
    evidence: dict[tuple[str, str], list[Evidence]]


class Classifier:
    """Classifies raw items with one taxonomy (and, given a registry, links them to agreements;
    given a judge, lets it decide from the evidence); safe to share, holds no per-item state."""

    def __init__(self, taxonomy: Taxonomy, registry: Registry | None = None, judge: Judge | None = None) -> None:
        self.taxonomy = taxonomy
        self.judge = judge
        self.linker = AgreementLinker(registry, taxonomy) if registry is not None else None
        self.version = (
            f"keywords/{taxonomy.version}"
            + (f"+judge/{judge.version}" if judge else "")
            + (f"+agreements/{registry.version}" if registry else "")
        )
        terms: list[Term[_Meaning]] = []
        for sector, spec in taxonomy.sectors.items():
            terms += [Term.of(t, _Meaning("sector", sector, w)) for t, w in spec.terms.items()]
            terms += [Term.of(t, _Meaning("support", sector, w)) for t, w in spec.support.items()]
            # A negative phrase cancels whatever starts inside it, acronym or not: never case-exact.
            terms += [replace(Term.of(n, _Meaning("negative", sector, 0.0)), exact_case=False) for n in spec.negative]
        for country, names in taxonomy.countries.items():
            terms += [Term.of(n, _Meaning("country", country, 1.0)) for n in names]
        self._matcher = TermMatcher(terms)
        self._thresholds = {s: spec.threshold or taxonomy.threshold for s, spec in taxonomy.sectors.items()}

    def _hits(self, text: str, in_title: bool) -> list[Hit[_Meaning]]:
        return self._matcher.hits(text, in_title)

    def analyse(self, item: RawItem) -> Analysis:
        """The keyword pass: scores, matched terms, the keyword rule's sectors, the countries,
        and the salience features of every candidate sector (what the judge and its trainer read)."""
        hits = self._hits(item.title, True) + self._hits(item.summary, False)
        negatives = [
            (h.term.payload.label, h.in_title, h.start, h.end) for h in hits if h.term.payload.kind == "negative"
        ]

        def negated(h: Hit[_Meaning]) -> bool:
            # A term that starts inside a negative phrase is cancelled ("oil output" in "palm oil output").
            label = h.term.payload.label
            return any(lab == label and t == h.in_title and s <= h.start < e for lab, t, s, e in negatives)

        scores: dict[str, float] = {}
        matched: dict[str, list[str]] = {}
        repeats: dict[tuple[str, str], int] = {}
        core: set[str] = set()
        mentions: dict[str, int] = {}
        in_title: set[str] = set()
        in_lead: set[str] = set()
        evidence: dict[tuple[str, str], list[Evidence]] = {}
        found: dict[str, SectorEvidence] = {}
        country_starts: list[int] = []
        for h in hits:
            term = h.term.payload
            if term.kind == "negative" or (term.kind != "country" and negated(h)):
                continue
            if term.kind == "country":
                mentions[term.label] = mentions.get(term.label, 0) + 1
                if h.in_title:
                    in_title.add(term.label)
                else:
                    country_starts.append(h.start)
                    if h.start < LEAD_CHARS:
                        in_lead.add(term.label)
            else:
                ev = found.setdefault(term.label, SectorEvidence())
                (ev.core if term.kind == "sector" else ev.support).add(h.term.term)
                ev.mentions += 1
                ev.max_weight = max(ev.max_weight, term.weight)
                if h.in_title:
                    ev.in_title = True
                else:
                    ev.text_starts.append(h.start)
                if term.kind == "sector":
                    core.add(term.label)
                key = (term.label, h.term.term)
                if key not in repeats:
                    repeats[key] = 0
                    boost = self.taxonomy.title_boost if h.in_title else 1.0
                    scores[term.label] = scores.get(term.label, 0.0) + term.weight * boost
                    matched.setdefault(term.label, []).append(h.term.term)
                elif repeats[key] < MAX_REPEATS:
                    repeats[key] += 1
                    scores[term.label] += term.weight * REPEAT_FACTOR
            kind: Literal["sector", "country"] = "country" if term.kind == "country" else "sector"
            bucket = evidence.setdefault((kind, term.label), [])
            if len(bucket) < MAX_EVIDENCE_PER_LABEL and all(e.term != h.term.term for e in bucket):
                bucket.append(Evidence(kind=kind, label=term.label, term=h.term.term, snippet=h.snippet))
        countries: list[Country] = [
            c for c in ("PK", "KZ") if c in in_title or c in in_lead or mentions.get(c, 0) >= COUNTRY_TEXT_MENTIONS
        ]
        focus = self.taxonomy.focus_threshold if countries else None
        assigned = {s for s, v in scores.items() if s in core and v >= (focus or self._thresholds[s])}
        for sector, ev in found.items():
            ev.score = scores.get(sector, 0.0)
            ev.title_near_country = ev.in_title and bool(in_title)
        features = sector_features(found, item.summary, country_starts, len(countries), assigned)
        return Analysis(scores, matched, assigned, countries, features, evidence)

    def classify(self, item: RawItem) -> ClassifiedItem:
        """Return the item with sectors, scores, countries and evidence.

        Without a judge a sector's score is its keyword score and the keyword rule decides; with
        one, the score is the judge's probability in [0, 1] and the judge decides (see
        :mod:`services.classifier.judge`). Either way every sector keeps its matched terms and
        evidence snippets.
        """
        a = self.analyse(item)
        scores = dict(a.scores)
        if self.judge is None:
            assigned = set(a.keyword_assigned)
        else:
            tokens = words(f"{item.title}\n{item.summary}")
            focus = bool(a.countries)
            scores = {s: self.judge.probability(s, f, tokens, focus) for s, f in a.features.items()}
            assigned = {s for s, p in scores.items() if self.judge.decides(p, s in a.keyword_assigned, focus)}
        matched = {s: list(t) for s, t in a.matched.items()}
        for sector in list(assigned):
            for broader in self.taxonomy.implies.get(sector, []):
                if broader not in assigned:
                    assigned.add(broader)
                    scores[broader] = max(scores.get(broader, 0.0), scores[sector])
                    matched.setdefault(broader, []).extend(t for t in matched[sector] if t not in matched[broader])
        ordered = sorted(assigned, key=lambda s: (-scores[s], s))
        countries = a.countries
        kept = [
            e
            for (kind, label), bucket in a.evidence.items()
            if (kind == "sector" and label in assigned) or (kind == "country" and label in countries)
            for e in bucket
        ]
        classified = ClassifiedItem(
            **item.model_dump(),
            sectors=ordered,
            sector_scores=[SectorScore(id=s, score=round(scores[s], 3), terms=matched[s]) for s in ordered],
            countries=countries,
            bilateral=len(countries) == 2,
            evidence=kept,
            classifier_version=self.version,
        )
        return self.linker.link(classified) if self.linker else classified
