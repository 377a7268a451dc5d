"""Scoring the classifier on labelled JSONL: per-sector precision/recall/F1, micro and macro
averages, country detection, throughput.

Accepted records: Corridor's labelled news (``title``, ``text``, ``sectors``, ``about_pakistan``,
``about_kazakhstan``) and the Reuters mapping (``title``, ``body``, ``sectors``; no country labels).
Macro-F1 is averaged over the sectors that occur in the labels of the file, so a sector no label
uses neither helps nor hurts it.

Records may also carry ``agreements`` (agreement ids, or area ids — then a predicted agreement
counts through its area) and ``stage``: the report adds agreement-link precision/recall/F1 per
area, their macro-F1 (over the areas in the labels) and the stage accuracy (over the records
with a labelled stage: the predicted stage must be that stage).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from services.classifier.classify import Classifier
from shared.models import AREAS, ClassifiedItem, RawItem, Stage

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Counts:
    """True positives, false positives and false negatives of one label."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, predicted: bool, actual: bool) -> None:
        if predicted and actual:
            self.tp += 1
        elif predicted:
            self.fp += 1
        elif actual:
            self.fn += 1

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "support": self.tp + self.fn,
        }


@dataclass(frozen=True)
class Outcome:
    """What one item was predicted and labelled with (the labels a report's sums come from)."""

    sectors: tuple[frozenset[str], frozenset[str]]
    countries: tuple[frozenset[str], frozenset[str]] | None
    areas: tuple[frozenset[str], frozenset[str]] | None
    stage_right: bool | None


@dataclass
class Report:
    """The figures of one evaluation run."""

    path: str
    items: int = 0
    seconds: float = 0.0
    sectors: dict[str, Counts] = field(default_factory=dict)
    countries: dict[str, Counts] = field(default_factory=dict)
    labelled_sectors: set[str] = field(default_factory=set)
    areas: dict[str, Counts] = field(default_factory=dict)
    labelled_areas: set[str] = field(default_factory=set)
    stages_right: int = 0
    stages_labelled: int = 0
    stage_confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    # Per item, in record order, what the intervals resample (services.classifier.bootstrap):
    # predicted and labelled sectors, countries and areas, and whether the stage was right
    # (None: no stage labelled). Countries and areas are None when the file has no such labels.
    outcomes: list[Outcome] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        present = sorted(self.labelled_sectors)
        micro = Counts()
        for sector in present:
            c = self.sectors[sector]
            micro.tp, micro.fp, micro.fn = micro.tp + c.tp, micro.fp + c.fp, micro.fn + c.fn
        macro = sum(self.sectors[s].f1 for s in present) / len(present) if present else 0.0
        country_all = Counts()
        for c in self.countries.values():
            country_all.tp, country_all.fp, country_all.fn = (
                country_all.tp + c.tp,
                country_all.fp + c.fp,
                country_all.fn + c.fn,
            )
        areas = sorted(self.labelled_areas)
        agreement_macro = sum(self.areas[a].f1 for a in areas) / len(areas) if areas else None
        return {
            "path": self.path,
            "items": self.items,
            "agreement_areas": {a: self.areas[a].as_dict() for a in areas} or None,
            "agreement_macro_f1": round(agreement_macro, 4) if agreement_macro is not None else None,
            "stage_accuracy": round(self.stages_right / self.stages_labelled, 4) if self.stages_labelled else None,
            "stages_labelled": self.stages_labelled or None,
            "stage_confusion": self.stage_confusion or None,
            "items_per_s": round(self.items / self.seconds, 1) if self.seconds else None,
            "sectors": {s: self.sectors[s].as_dict() for s in present},
            "micro_f1": round(micro.f1, 4),
            "macro_f1": round(macro, 4),
            "countries": {k: v.as_dict() for k, v in self.countries.items()} or None,
            "country_precision": round(country_all.precision, 4) if self.countries else None,
            "country_recall": round(country_all.recall, 4) if self.countries else None,
            "country_f1": round(country_all.f1, 4) if self.countries else None,
        }


def load_records(path: Path) -> list[dict[str, Any]]:
    """Read JSONL; each record must be an object with a title, a text (or body) and a sectors
    list. A line that is not UTF-8, not JSON or not such a record is a ValueError naming
    ``path:line``; a file that cannot be read is the OSError of ``open``."""
    records = []
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}:{number}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: not a JSON object (a {type(record).__name__})")
            if not isinstance(record.get("sectors"), list) or ("text" not in record and "body" not in record):
                raise ValueError(f"{path}:{number}: needs 'sectors' and 'text' or 'body'")
            problem = _shape_problem(record)
            if problem:
                raise ValueError(f"{path}:{number}: {problem}")
            records.append(record)
    return records


STAGES = frozenset(get_args(Stage))


def _shape_problem(record: dict[str, Any]) -> str | None:
    """What is wrong with a record's field types (None: nothing): a wrong type made a traceback,
    or, worse, a figure (``"about_pakistan": "false"`` counted as true)."""
    for key in ("sectors", "agreements"):
        value = record.get(key)
        if (
            key in record
            and value is not None
            and not (isinstance(value, list) and all(isinstance(v, str) for v in value))
        ):
            return f"'{key}' must be a list of ids (strings)"
    for key in ("title", "text", "body", "stage"):
        if record.get(key) is not None and not isinstance(record[key], str):
            return f"'{key}' must be a string"
    for key in ("about_pakistan", "about_kazakhstan"):
        if key in record and not isinstance(record[key], bool):
            return f"'{key}' must be true or false"
    return None


def label_warnings(records: list[dict[str, Any]], classifier: Classifier, path: str) -> list[str]:
    """Labels the scoring cannot use, one line each (at most 20 and a count): an unknown sector
    (dropped from the figures), an unknown agreement or area id (scored, never predicted), a
    stage the registry does not have, a repeated record id (counted twice)."""
    sectors = set(classifier.taxonomy.sectors)
    registry = classifier.linker.registry if classifier.linker else None
    known_links = set(AREAS) | ({a.id for a in registry.agreements} if registry else set())
    found: list[str] = []
    seen: dict[str, int] = {}
    for n, r in enumerate(records, 1):
        where = f"{path}: record {n}" + (f" ({r['id']})" if r.get("id") else "")
        found += [f"{where}: unknown sector {s!r}" for s in r["sectors"] if s not in sectors]
        if registry is not None:
            found += [
                f"{where}: unknown agreement or area {a!r}" for a in r.get("agreements") or [] if a not in known_links
            ]
        if r.get("stage") and r["stage"] not in STAGES:
            found.append(f"{where}: unknown stage {r['stage']!r}")
        if r.get("id"):
            if r["id"] in seen:
                found.append(f"{where}: repeats the id of record {seen[r['id']]} (counted twice)")
            seen.setdefault(r["id"], n)
    return found[:20] + ([f"{path}: … and {len(found) - 20} more"] if len(found) > 20 else [])


def evaluate(classifier: Classifier, records: Iterable[dict[str, Any]], *, path: str = "") -> Report:
    """Classify every record and count agreements with its labels."""
    records = list(records)
    report = Report(path=path, items=len(records))
    report.sectors = {s: Counts() for s in classifier.taxonomy.sectors}
    has_countries = all("about_pakistan" in r and "about_kazakhstan" in r for r in records)
    if has_countries:
        report.countries = {"PK": Counts(), "KZ": Counts()}
    registry = classifier.linker.registry if classifier.linker else None
    area_of: dict[str, str] = {a.id: a.area for a in registry.agreements} if registry else {}
    items = [
        RawItem(
            id=f"eval_{i}",
            source_id="eval",
            source_url="eval",
            title=r.get("title") or "",
            summary=r.get("text") or r.get("body") or "",
            fetched_at=_EPOCH,
        )
        for i, r in enumerate(records)
    ]
    started = time.perf_counter()
    results = [classifier.classify(item) for item in items]
    report.seconds = time.perf_counter() - started
    for record, result in zip(records, results, strict=True):
        actual = set(record["sectors"])
        report.labelled_sectors |= actual & set(report.sectors)
        for sector, counts in report.sectors.items():
            counts.add(sector in result.sectors, sector in actual)
        countries = None
        if has_countries:
            labelled = {c for c, key in (("PK", "about_pakistan"), ("KZ", "about_kazakhstan")) if record[key]}
            countries = (frozenset(set(result.countries) & {"PK", "KZ"}), frozenset(labelled))
            report.countries["PK"].add("PK" in result.countries, "PK" in labelled)
            report.countries["KZ"].add("KZ" in result.countries, "KZ" in labelled)
        areas = _score_agreements(report, record, result, area_of) if "agreements" in record else None
        stage_right = _score_stage(report, record, result)
        report.outcomes.append(
            Outcome(
                (frozenset(set(result.sectors) & set(report.sectors)), frozenset(actual & set(report.sectors))),
                countries,
                areas,
                stage_right,
            )
        )
    return report


def _score_agreements(
    report: Report, record: dict[str, Any], result: ClassifiedItem, area_of: dict[str, str]
) -> tuple[frozenset[str], frozenset[str]]:
    """Count one record's agreement links; returns its keys (predicted, labelled).

    An area label is met by any agreement of that area. An agreement id label is met by that
    agreement and stands for its area too; the predicted agreement ids are scored only in a
    record that labels ids or labels nothing (``[]``, a negative at both levels; one that labels
    areas says nothing about which agreement): a file mixing the two kinds scored right
    predictions as wrong."""
    labels = set(record.get("agreements") or [])
    labelled_ids = {label for label in labels if label in area_of}
    actual = {area_of.get(label, label) for label in labels} | labelled_ids
    # A record labelled with no link at all ([]) is a negative at both levels.
    ids = {a.id for a in result.agreements} if labelled_ids or not labels else set()
    predicted = {a.area for a in result.agreements} | ids
    report.labelled_areas |= actual
    for key in predicted | actual:
        report.areas.setdefault(key, Counts()).add(key in predicted, key in actual)
    return frozenset(predicted), frozenset(actual)


def _score_stage(report: Report, record: dict[str, Any], result: ClassifiedItem) -> bool | None:
    """Count one record's stage (with or without agreement labels); whether it was right
    (None: no stage labelled)."""
    stage_right = None
    if record.get("stage"):
        report.stages_labelled += 1
        stage = result.stage or "none"
        stage_right = stage == record["stage"]
        report.stages_right += stage_right
        row = report.stage_confusion.setdefault(str(record["stage"]), {})
        row[stage] = row.get(stage, 0) + 1
    return stage_right


def format_report(summary: dict[str, Any]) -> str:
    """A human-readable table of one summary."""
    lines = [
        f"{summary['path']}: {summary['items']} items, {summary['items_per_s']} items/s",
        f"  {'sector':<18} {'prec':>6} {'recall':>6} {'f1':>6} {'support':>7}",
    ]
    for sector, m in summary["sectors"].items():
        lines.append(f"  {sector:<18} {m['precision']:>6.3f} {m['recall']:>6.3f} {m['f1']:>6.3f} {m['support']:>7}")
    lines.append(f"  micro-F1 {summary['micro_f1']:.3f}   macro-F1 {summary['macro_f1']:.3f}")
    if summary.get("agreement_areas"):
        lines.append(f"  {'agreement area':<30} {'prec':>6} {'recall':>6} {'f1':>6} {'support':>7}")
        for area, m in summary["agreement_areas"].items():
            lines.append(f"  {area:<30} {m['precision']:>6.3f} {m['recall']:>6.3f} {m['f1']:>6.3f} {m['support']:>7}")
        lines.append(f"  agreement macro-F1 {summary['agreement_macro_f1']:.3f}")
    if summary.get("stage_accuracy") is not None:
        lines.append(
            f"  stage accuracy {summary['stage_accuracy']:.3f} over {summary['stages_labelled']} labelled stages"
        )
    if summary["countries"]:
        for country, m in summary["countries"].items():
            lines.append(
                f"  country {country}: precision {m['precision']:.3f} recall {m['recall']:.3f} f1 {m['f1']:.3f}"
            )
        lines.append(
            f"  countries: precision {summary['country_precision']:.3f} recall "
            f"{summary['country_recall']:.3f} f1 {summary['country_f1']:.3f}"
        )
    for name, (low, high) in (summary.get("intervals") or {}).items():
        lines.append(f"  95% interval of {name}: {low:.3f} to {high:.3f}")
    return "\n".join(lines)
