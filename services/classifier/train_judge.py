"""Training the judge from labelled files (``corridor judge train``, ``make judge``).

Every labelled item is classified by the keyword pass; each candidate sector (one with a core
term) becomes a training row: its salience features, and whether the item's labels have the
sector. A file's rows count only for the sectors its labels use (the Reuters mapping has no
transport, the shared dev news no digital), and every file weighs the same in the fit, however
many rows it has, so a large corpus does not drown the domain news.

The thresholds and the reliability table come from out-of-fold predictions (five folds per file,
fixed by a hash of the item, so adding items does not reshuffle the others); the weights from a
last fit on everything. The same files give the same judge: lbfgs is deterministic and the file
records each input's SHA-256, which ``tests/unit/test_judge.py`` checks by rebuilding it.

scikit-learn is a development dependency: it is needed to train, never to classify.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.classifier.classify import Classifier
from services.classifier.judge import JudgeModel, ReliabilityBin, TrainingFile
from services.classifier.salience import FEATURES
from services.classifier.taxonomy import Taxonomy
from shared.models import RawItem

FOLDS = 5
C = 0.3  # inverse L2 strength; the data are small, the features few and correlated
GRID = [round(0.05 * i, 2) for i in range(2, 19)]  # threshold candidates 0.10 … 0.90
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Item:
    """One labelled record after the keyword pass."""

    fold: int
    gold: set[str]
    keyword: set[str]
    features: dict[str, dict[str, float]]


@dataclass
class LabelledFile:
    name: str
    sha256: str
    items: list[Item]
    sectors: set[str]  # the sectors its labels use
    rows: int = 0
    fold_f1: list[float] = field(default_factory=list)


def _fold(record: dict[str, Any]) -> int:
    key = str(record.get("id") or record.get("url") or record.get("title") or "")
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % FOLDS


def load_file(path: Path, classifier: Classifier) -> LabelledFile:
    """Read a labelled JSONL file (Corridor's news or the Reuters mapping) and run the keyword
    pass over it."""
    raw = path.read_bytes()
    records = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    items: list[Item] = []
    sectors: set[str] = set()
    for i, record in enumerate(records):
        analysis = classifier.analyse(
            RawItem(
                id=f"train_{i}",
                source_id="train",
                source_url="train",
                title=record.get("title") or "",
                summary=record.get("text") or record.get("body") or "",
                fetched_at=_EPOCH,
            )
        )
        gold = set(record["sectors"])
        sectors |= gold
        items.append(Item(_fold(record), gold, analysis.keyword_assigned, analysis.features))
    rows = sum(1 for it in items for s in it.features if s in sectors)
    return LabelledFile(path.name, hashlib.sha256(raw).hexdigest(), items, sectors, rows)


def _rows(files: Sequence[LabelledFile], keep: Any) -> tuple[list[list[float]], list[int], list[float]]:
    x: list[list[float]] = []
    y: list[int] = []
    w: list[float] = []
    total = sum(f.rows for f in files)
    for f in files:
        weight = total / (len(files) * max(f.rows, 1))
        for item in f.items:
            if not keep(f, item):
                continue
            for sector, feats in item.features.items():
                if sector in f.sectors:
                    x.append([feats[n] for n in FEATURES])
                    y.append(int(sector in item.gold))
                    w.append(weight)
    return x, y, w


def _fit(files: Sequence[LabelledFile], keep: Any) -> tuple[list[float], float]:
    from sklearn.linear_model import LogisticRegression  # development dependency

    x, y, w = _rows(files, keep)
    model = LogisticRegression(C=C, max_iter=5000).fit(x, y, sample_weight=w)
    return [float(v) for v in model.coef_[0]], float(model.intercept_[0])


def _probability(weights: list[float], bias: float, feats: dict[str, float]) -> float:
    import math

    z = bias + sum(wt * feats[n] for n, wt in zip(FEATURES, weights, strict=True))
    return 1.0 / (1.0 + math.exp(-z))


def _macro_f1(pairs: list[tuple[set[str], set[str]]], sectors: set[str]) -> float:
    f1s = []
    for s in sorted(sectors):
        tp = sum(1 for p, g in pairs if s in p and s in g)
        fp = sum(1 for p, g in pairs if s in p and s not in g)
        fn = sum(1 for p, g in pairs if s not in p and s in g)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(f1s) / len(f1s) if f1s else 0.0


def _decide(probs: dict[str, float], keyword: set[str], keep: float, add: float, taxonomy: Taxonomy) -> set[str]:
    chosen = {s for s, p in probs.items() if p >= (keep if s in keyword else add)}
    for s in list(chosen):
        chosen |= set(taxonomy.implies.get(s, []))
    return chosen


def train(paths: Sequence[Path], taxonomy: Taxonomy, *, log: Any = print) -> JudgeModel:
    """Train a judge on ``paths``; ``log`` receives the cross-validation report lines."""
    classifier = Classifier(taxonomy)
    files = [load_file(p, classifier) for p in paths]
    # Out-of-fold probabilities: fold k of every file is predicted by a model fit on the rest.
    oof: list[tuple[LabelledFile, Item, dict[str, float]]] = []
    for k in range(FOLDS):
        weights, bias = _fit(files, lambda f, it, k=k: it.fold != k)
        for f in files:
            for it in f.items:
                if it.fold == k:
                    oof.append((f, it, {s: _probability(weights, bias, v) for s, v in it.features.items()}))

    def score(keep: float, add: float) -> float:
        per_file = []
        for f in files:
            pairs = [(_decide(p, it.keyword, keep, add, taxonomy), it.gold) for g, it, p in oof if g is f]
            per_file.append(_macro_f1(pairs, f.sectors))
        return statistics.fmean(per_file)

    best = max(((k, a) for k in GRID for a in GRID if a >= k), key=lambda t: (round(score(*t), 4), -t[0], t[1]))
    keep, add = best
    cross_validation: dict[str, float] = {}
    for f in files:
        keyword_pairs = [(it.keyword | _implied(it.keyword, taxonomy), it.gold) for it in f.items]
        judged = [(_decide(p, it.keyword, keep, add, taxonomy), it.gold) for g, it, p in oof if g is f]
        folds = []
        for k in range(FOLDS):
            fold_pairs = [
                (_decide(p, it.keyword, keep, add, taxonomy), it.gold) for g, it, p in oof if g is f and it.fold == k
            ]
            folds.append(_macro_f1(fold_pairs, f.sectors))
        stem = f.name.removesuffix(".jsonl")
        cross_validation[f"{stem}.keyword_macro_f1"] = round(_macro_f1(keyword_pairs, f.sectors), 4)
        cross_validation[f"{stem}.judge_macro_f1"] = round(_macro_f1(judged, f.sectors), 4)
        cross_validation[f"{stem}.judge_fold_min"] = round(min(folds), 4)
        cross_validation[f"{stem}.judge_fold_max"] = round(max(folds), 4)
        log(
            f"{f.name}: {len(f.items)} items, {f.rows} candidate rows; macro-F1 keyword "
            f"{cross_validation[f'{stem}.keyword_macro_f1']:.3f}, judge (out of fold) "
            f"{cross_validation[f'{stem}.judge_macro_f1']:.3f}, folds {min(folds):.3f}–{max(folds):.3f}"
        )
    reliability = _reliability([(p[s], s in it.gold) for f, it, p in oof for s in p if s in f.sectors])
    weights, bias = _fit(files, lambda f, it: True)
    from sklearn import __version__ as sklearn_version

    return JudgeModel(
        features=list(FEATURES),
        weights=[round(v, 6) for v in weights],
        bias=round(bias, 6),
        keep_threshold=keep,
        add_threshold=add,
        trainer={"library": f"scikit-learn {sklearn_version}", "model": "LogisticRegression(lbfgs)", "C": C},
        trained_on=[TrainingFile(name=f.name, sha256=f.sha256, items=len(f.items), candidates=f.rows) for f in files],
        cross_validation=cross_validation,
        reliability=reliability,
    )


def _implied(sectors: set[str], taxonomy: Taxonomy) -> set[str]:
    return {b for s in sectors for b in taxonomy.implies.get(s, [])}


def _reliability(pairs: list[tuple[float, bool]], bins: int = 10) -> list[ReliabilityBin]:
    out = []
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = [(p, y) for p, y in pairs if low <= p < high or (b == bins - 1 and p == 1.0)]
        out.append(
            ReliabilityBin(
                low=low,
                high=high,
                count=len(inside),
                mean_predicted=round(statistics.fmean(p for p, _ in inside), 3) if inside else None,
                observed=round(sum(y for _, y in inside) / len(inside), 3) if inside else None,
            )
        )
    return out


def write_judge(model: JudgeModel, path: Path) -> None:
    path.write_text(json.dumps(model.model_dump(mode="json"), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
