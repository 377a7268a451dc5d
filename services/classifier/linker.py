"""Linking classified items to the agreements they report on, and the stage they report.

An item is linked only when it concerns both countries: both are among its countries, or one is
and the other is named in it at least once (a corridor story naming Pakistan as its end). Each
agreement's score is the sum of its distinct matched terms (a term in the title counts
TITLE_BOOST times); so is each area's, from the area's own terms, and an area at or above the
AREA_THRESHOLD links its lead agreement (the registry's ``lead``; the link's ``via`` is "area")
unless one of its agreements scored on its own. Agreements at or above LINK_THRESHOLD are
linked, best first; then the areas the item's sectors name (the registry's ``from_sectors``,
unless one of the area's ``unless_areas`` is linked by terms) link their lead agreement (``via``
"sectors"), scored and evidenced by the sector — only a sector whose score is at least
FROM_SECTORS_MIN_SCORE: the judge keeps weak sectors of an item about the two countries, but a
reader does not label an area for them; and not a sector the item has only because another
implies it (energy from petroleum, with no energy evidence of its own); at most MAX_LINKS.

The stage is read from the registry's stage phrases. Each stage scores where it is named most
prominently — the title (STAGE_TITLE_WEIGHT), the lead, the first LEAD_CHARS characters
(STAGE_LEAD_WEIGHT), else 1 — plus STAGE_REPEAT per further phrase; talks count TALKS_FACTOR of
that (they are the background of most stories), the stages after a signing LATER_MARGIN less
(a visit story names roadmaps and plans it does not report as news). A phrase inside a longer
phrase of another stage does not count ("signed" in "to be signed", a planned signing). The best
score wins; ties go to the more advanced stage. A linked item that names no stage reports talks (DEFAULT_STAGE).
Tuned on the dev split of the labelled news only (a grid over these six numbers: 96 of 122 dev
stages right, against 82 with the earlier rule). Every link and the stage carry their evidence, like sectors do.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.classifier.agreements import Registry
from services.classifier.matching import Hit, Term, TermMatcher
from services.classifier.taxonomy import Taxonomy
from shared.errors import ConfigError
from shared.models import PROGRESS, AgreementLink, ClassifiedItem, Country, Evidence, LinkVia, Stage

LINK_THRESHOLD = 1.0
AREA_THRESHOLD = 1.5  # area terms are broader: two of them, or one in the title plus one more
TITLE_BOOST = 1.5
MAX_LINKS = 12  # a round-up of the 37 documents names many areas
DEFAULT_STAGE: Stage = "follow_up_talks"
STAGE_TITLE_WEIGHT = 2.0
STAGE_LEAD_WEIGHT = 1.5
LEAD_CHARS = 300
STAGE_REPEAT = 0.5
TALKS_FACTOR = 0.7
LATER_MARGIN = 0.5
FROM_SECTORS_MIN_SCORE = 0.5  # a calibrated probability: more likely right than not (dev: 0.5-0.8 equal)


def _inside_longer(hit: Hit[_Cue], phrases: list[Hit[_Cue]]) -> bool:
    """Whether a longer phrase of another stage covers ``hit``: "signed" in "to be signed" (a
    signing to come) and "launched" in "would be launched" are read as the longer phrase says."""
    return any(
        other.in_title == hit.in_title
        and other.start <= hit.start
        and hit.end <= other.end
        and other.end - other.start > hit.end - hit.start
        and other.term.payload.label != hit.term.payload.label
        for other in phrases
    )


@dataclass(frozen=True)
class _Cue:
    kind: str  # "agreement", "stage" or "country"
    label: str


class AgreementLinker:
    """Adds agreements, stage and their evidence to classified items; shares no per-item state."""

    def __init__(self, registry: Registry, taxonomy: Taxonomy) -> None:
        """A linker for ``registry`` reading items classified with ``taxonomy``; :class:`ConfigError`
        naming the area and the sectors when an area's ``from_sectors`` names a sector the
        taxonomy does not have (the two files are validated apart, and a misspelt sector would
        never link its area, silently)."""
        unknown = [
            f"{area}: {sector}"
            for area, spec in registry.areas.items()
            for sector in spec.from_sectors
            if sector not in taxonomy.sectors
        ]
        if unknown:
            raise ConfigError(
                f"agreements registry {registry.version}: from_sectors names sectors taxonomy "
                f"{taxonomy.version} does not have ({'; '.join(unknown)}); its sectors: {sorted(taxonomy.sectors)}"
            )
        self.registry = registry
        self.version = registry.version
        self._areas = {a.id: a.area for a in registry.agreements}
        terms: list[Term[_Cue]] = []
        for agreement in registry.agreements:
            for phrases in agreement.terms.values():
                terms += [Term.of(p, _Cue("agreement", agreement.id)) for p in phrases if p.strip()]
        self._leads = registry.leads()
        self._from_sectors = {
            area: set(spec.from_sectors)
            for area, spec in registry.areas.items()
            if spec.from_sectors and area in self._leads
        }
        self._unless = {area: set(registry.areas[area].unless_areas) for area in self._from_sectors}
        self._implied_by: dict[str, set[str]] = {}  # broader sector -> the sectors that imply it
        for narrow, broader in taxonomy.implies.items():
            for sector in broader:
                self._implied_by.setdefault(sector, set()).add(narrow)
        for area, spec in registry.areas.items():
            if area in self._leads:  # an area without agreements links nothing
                for phrases in spec.terms.values():
                    terms += [Term.of(p, _Cue("area", area)) for p in phrases if p.strip()]
        for stage, by_language in registry.stages.items():
            for phrases in by_language.values():
                terms += [Term.of(p, _Cue("stage", stage)) for p in phrases if p.strip()]
        for country, names in taxonomy.countries.items():
            terms += [Term.of(n, _Cue("country", country)) for n in names]
        self._matcher = TermMatcher(terms)

    @staticmethod
    def _unlinked(item: ClassifiedItem) -> ClassifiedItem:
        """The item with no agreement, no stage, and none of their evidence (an item linked before,
        passed in again, must not keep sentences for links it no longer has)."""
        kept = [e for e in item.evidence if e.kind in ("sector", "country")]
        return item.model_copy(update={"agreements": [], "stage": None, "evidence": kept})

    def link(self, item: ClassifiedItem) -> ClassifiedItem:
        hits = self._matcher.hits(item.title, True) + self._matcher.hits(item.summary, False)
        named: set[Country] = {h.term.payload.label for h in hits if h.term.payload.kind == "country"}  # type: ignore[misc]
        countries = set(item.countries)
        if not (countries == {"PK", "KZ"} or (countries and named >= {"PK", "KZ"})):
            return self._unlinked(item)
        scores: dict[str, float] = {}
        matched: dict[str, list[Hit[_Cue]]] = {}
        area_scores: dict[str, float] = {}
        area_hits: dict[str, list[Hit[_Cue]]] = {}
        for hit in hits:
            cue = hit.term.payload
            if cue.kind not in ("agreement", "area"):
                continue
            table, found = (scores, matched) if cue.kind == "agreement" else (area_scores, area_hits)
            terms = found.setdefault(cue.label, [])
            if all(h.term.term != hit.term.term for h in terms):
                terms.append(hit)
                table[cue.label] = table.get(cue.label, 0.0) + (TITLE_BOOST if hit.in_title else 1.0)
        via: dict[str, LinkVia] = {}  # links not made by the agreement's own terms
        for area, score in area_scores.items():
            lead = self._leads[area]  # type: ignore[index]
            has_own = any(self._areas[a] == area and s >= LINK_THRESHOLD for a, s in scores.items())
            if score >= AREA_THRESHOLD and not has_own:
                scores[lead] = max(scores.get(lead, 0.0), score)
                matched[lead] = [*matched.get(lead, []), *area_hits[area]]
                via[lead] = "area"
        linked = sorted((a for a, s in scores.items() if s >= LINK_THRESHOLD), key=lambda a: (-scores[a], a))
        # The item's sectors (the judge's) link their areas too: a reader labels every area the
        # story reports cooperation in, one mention in a list included, as the sectors do.
        by_terms = {self._areas[a] for a in linked}
        assigned = {s.id for s in item.sector_scores}
        own = {e.label for e in item.evidence if e.kind == "sector"}  # sectors with terms of their own
        from_sectors: dict[str, list[Evidence]] = {}
        for area, sectors in self._from_sectors.items():
            if area in by_terms or self._unless[area] & by_terms:
                continue
            # sector_scores holds exactly the assigned sectors, each with its score.
            wanted = {s.id for s in item.sector_scores if s.id in sectors and s.score >= FROM_SECTORS_MIN_SCORE}
            # A sector the item has only because another implies it (energy from petroleum) is
            # the other's area's news: "MoUs on petroleum and mining" is no energy agreement.
            wanted = {s for s in wanted if s in own or not self._implied_by.get(s, set()) & assigned}
            if wanted:
                lead = self._leads[area]
                from_sectors[lead] = [e for e in item.evidence if e.kind == "sector" and e.label in wanted][:2]
                scores[lead] = max((s.score for s in item.sector_scores if s.id in wanted), default=0.0)
                matched.setdefault(lead, [])
                via[lead] = "sectors"
        linked = (linked + sorted(from_sectors, key=lambda a: (-scores[a], a)))[:MAX_LINKS]
        if not linked:
            return self._unlinked(item)
        stage, stage_hit = self._stage(hits)
        evidence = [
            Evidence(kind="agreement", label=a, term=h.term.term, snippet=h.snippet)
            for a in linked
            for h in matched[a][:2]
        ] + [
            Evidence(kind="agreement", label=a, term=e.term, snippet=e.snippet)
            for a in linked
            for e in from_sectors.get(a, [])
        ]
        if stage_hit is not None:
            evidence.append(Evidence(kind="stage", label=stage, term=stage_hit.term.term, snippet=stage_hit.snippet))
        links = [
            AgreementLink(
                id=a,
                area=self._areas[a],
                score=round(scores[a], 3),
                terms=[h.term.term for h in matched[a]],
                via=via.get(a, "agreement"),
            )
            for a in linked
        ]
        kept = [e for e in item.evidence if e.kind in ("sector", "country")]
        return item.model_copy(update={"agreements": links, "stage": stage, "evidence": kept + evidence})

    @staticmethod
    def _stage(hits: list[Hit[_Cue]]) -> tuple[Stage, Hit[_Cue] | None]:
        scores: dict[str, float] = {}
        best_hit: dict[str, tuple[float, Hit[_Cue]]] = {}
        seen: set[tuple[str, str]] = set()
        phrases = [h for h in hits if h.term.payload.kind == "stage"]
        for hit in phrases:
            cue = hit.term.payload
            if (cue.label, hit.term.term) in seen or _inside_longer(hit, phrases):
                continue
            seen.add((cue.label, hit.term.term))
            weight = STAGE_TITLE_WEIGHT if hit.in_title else STAGE_LEAD_WEIGHT if hit.start < LEAD_CHARS else 1.0
            # The strongest place a stage is named, plus a little for each further phrase.
            scores[cue.label] = max(scores.get(cue.label, 0.0), weight) + (STAGE_REPEAT if cue.label in scores else 0.0)
            if weight > best_hit.get(cue.label, (0.0, hit))[0] or cue.label not in best_hit:
                best_hit[cue.label] = (weight, hit)
        if not scores:
            return DEFAULT_STAGE, None

        # Talks are the background of most stories: they weigh less. A stage after the signing
        # needs a little more than a mention (LATER_MARGIN): a visit story names its roadmaps.
        def weight_of(stage: str) -> float:
            if stage == "follow_up_talks":
                return scores[stage] * TALKS_FACTOR
            if stage in ("signed", "setback"):
                return scores[stage]
            return scores[stage] - LATER_MARGIN

        leader = max(scores, key=lambda s: (weight_of(s), s in PROGRESS and PROGRESS.index(s)))
        return leader, best_hit[leader][1]  # type: ignore[return-value]
