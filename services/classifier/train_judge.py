"""Training the judge from labelled files (``corridor judge train``, ``make judge``).

Every labelled item is classified by the keyword pass; each candidate sector (one with a core
term) becomes a training row of that sector's model: the item's words, the salience features of
the sector's evidence, and whether the item's labels have the sector. A file's rows count only
for the sectors its labels use (the Reuters mapping has no transport, the shared dev news no
digital), and every file weighs the same in a fit however many rows it has, so a large corpus
does not drown the domain news. The ``default`` model (for sectors without their own) is fit on
every row, salience only.

Out-of-fold predictions (five folds per file, fixed by a hash of the item's id, url or title, so
adding items does not reshuffle the others) give the cross-validation report, the thresholds and
the reliability table; the weights come from a last fit on everything. The same files give the
same judge (lbfgs is deterministic; the file records each input's SHA-256), which
``tests/unit/test_judge.py`` checks by rebuilding it.

scikit-learn is a development dependency: it is needed to train, never to classify.
"""

from __future__ import annotations

import functools
import hashlib
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.classifier.classify import Classifier
from services.classifier.evaluate import Counts
from services.classifier.judge import (
    JudgeModel,
    ReliabilityBin,
    SectorModel,
    Thresholds,
    TrainingFile,
    _logit,
    sector_probability,
    words,
)
from services.classifier.salience import FEATURES
from services.classifier.taxonomy import Taxonomy
from shared.models import RawItem

FOLDS = 5
C = 1.0  # inverse L2 strength: 0.5 and 2 cross-validate within 0.004 of it (README), no better on all three files
MIN_DF = 3  # a word seen in fewer training items gets no weight
MIN_POSITIVES = 5  # fewer positive rows: the sector uses the default model
WORD_WEIGHT_FLOOR = 0.02  # |w| below it is dropped: 72k word, pair and stem weights kept
GRID = [round(0.05 * i, 2) for i in range(2, 19)]  # threshold candidates 0.10 … 0.90
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Item:
    """One labelled record after the keyword pass."""

    fold: int
    gold: set[str]
    keyword: set[str]
    focus: bool
    tokens: set[str]
    features: dict[str, dict[str, float]]


@dataclass
class LabelledFile:
    name: str
    sha256: str
    items: list[Item]
    sectors: set[str]  # the sectors its labels use
    rows: int


Keep = Callable[[Item], bool]
Models = tuple[dict[str, SectorModel], SectorModel]


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
        title = record.get("title") or ""
        text = record.get("text") or record.get("body") or ""
        a = classifier.analyse(
            RawItem(
                id=f"train_{i}", source_id="train", source_url="train", title=title, summary=text, fetched_at=_EPOCH
            )
        )
        gold = set(record["sectors"])
        sectors |= gold
        items.append(
            Item(_fold(record), gold, a.keyword_assigned, bool(a.countries), words(f"{title}\n{text}"), a.features)
        )
    rows = sum(1 for it in items for s in it.features if s in sectors)
    return LabelledFile(path.name, hashlib.sha256(raw).hexdigest(), items, sectors, rows)


def _fit(files: Sequence[LabelledFile], keep: Keep, sectors: Sequence[str], floor: float = WORD_WEIGHT_FLOOR) -> Models:
    """One model per sector (words + salience) and the default (salience only), on the rows of
    the items ``keep`` selects."""
    from scipy.sparse import csr_matrix, hstack  # development dependencies
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    total = sum(f.rows for f in files)
    weight = {f.name: total / (len(files) * max(f.rows, 1)) for f in files}
    kept = [(f, it) for f in files for it in f.items if keep(it)]
    vectorizer = CountVectorizer(analyzer=lambda tokens: sorted(tokens), binary=True, min_df=MIN_DF)
    vectorizer.fit([it.tokens for _, it in kept])
    vocabulary = vectorizer.get_feature_names_out()

    def solve(rows: list[tuple[LabelledFile, Item, str]], with_words: bool) -> SectorModel:
        salience = csr_matrix([[it.features[s][n] for n in FEATURES] for _, it, s in rows])
        x = hstack([salience, vectorizer.transform([it.tokens for _, it, _ in rows])]) if with_words else salience
        y = [int(s in it.gold) for _, it, s in rows]
        w = [weight[f.name] for f, _, _ in rows]
        model = LogisticRegression(C=C, max_iter=5000).fit(x.tocsr(), y, sample_weight=w)
        coef = [float(v) for v in model.coef_[0]]
        word_weights = {
            str(t): round(v, 4) for t, v in zip(vocabulary, coef[len(FEATURES) :], strict=False) if abs(v) >= floor
        }
        return SectorModel(
            bias=round(float(model.intercept_[0]), 6),
            features=[round(v, 6) for v in coef[: len(FEATURES)]],
            words=dict(sorted(word_weights.items())) if with_words else {},
        )

    models: dict[str, SectorModel] = {}
    every: list[tuple[LabelledFile, Item, str]] = []
    for sector in sectors:
        rows = [(f, it, sector) for f, it in kept if sector in f.sectors and sector in it.features]
        every += rows
        positives = sum(1 for _, it, s in rows if s in it.gold)
        if positives >= MIN_POSITIVES and positives < len(rows):
            models[sector] = solve(rows, with_words=True)
    return models, solve(every, with_words=False)


def _outside(it: Item, fold: int) -> bool:
    return it.fold != fold


def _probabilities(models: Models, it: Item) -> dict[str, float]:
    own, default = models
    return {s: sector_probability(own.get(s, default), feats, it.tokens) for s, feats in it.features.items()}


def _macro_f1(pairs: list[tuple[set[str], set[str]]], sectors: set[str]) -> float:
    f1s = []
    for s in sorted(sectors):
        counts = Counts()
        for predicted, gold in pairs:
            counts.add(s in predicted, s in gold)
        f1s.append(counts.f1)
    return sum(f1s) / len(f1s) if f1s else 0.0


def _decide(probs: dict[str, float], it: Item, focus: Thresholds, other: Thresholds, taxonomy: Taxonomy) -> set[str]:
    t = focus if it.focus else other
    chosen = {s for s, p in probs.items() if t.decides(p, s in it.keyword)}
    for s in list(chosen):
        chosen |= set(taxonomy.implies.get(s, []))
    return chosen


def _implied(sectors: set[str], taxonomy: Taxonomy) -> set[str]:
    return sectors | {b for s in sectors for b in taxonomy.implies.get(s, [])}


def train(paths: Sequence[Path], taxonomy: Taxonomy, *, log: Callable[[str], Any] = print) -> JudgeModel:
    """Train a judge on ``paths``; ``log`` receives the cross-validation report lines."""
    classifier = Classifier(taxonomy)
    files = [load_file(p, classifier) for p in paths]
    sectors = sorted(taxonomy.sectors)
    oof: list[tuple[LabelledFile, Item, dict[str, float]]] = []
    for k in range(FOLDS):
        models = _fit(files, functools.partial(_outside, fold=k), sectors)
        oof += [(f, it, _probabilities(models, it)) for f in files for it in f.items if it.fold == k]

    def per_file(focus: Thresholds, other: Thresholds) -> list[float]:
        return [
            _macro_f1([(_decide(p, it, focus, other, taxonomy), it.gold) for g, it, p in oof if g is f], f.sectors)
            for f in files
        ]

    # Calibration per group (Platt scaling of the out-of-fold probabilities, files weighted
    # equally), then the thresholds: the pair for items about the countries and the pair for the
    # rest, each chosen in turn (twice) to maximise the mean of the files' macro-F1.
    scaling = {group: _platt([(f, it, p) for f, it, p in oof if it.focus == group]) for group in (True, False)}
    oof = [(f, it, {s: scaling[it.focus].calibrate(v) for s, v in p.items()}) for f, it, p in oof]
    pairs = [(k, a) for k in GRID for a in GRID if a >= k]
    focus, other = scaling[True].model_copy(), scaling[False].model_copy()
    for _ in range(2):
        best = max(pairs, key=lambda t: (round(statistics.fmean(per_file(_with(focus, t), other)), 4), -t[0], t[1]))
        focus = _with(focus, best)
        best = max(pairs, key=lambda t: (round(statistics.fmean(per_file(focus, _with(other, t))), 4), -t[0], t[1]))
        other = _with(other, best)
    cross_validation: dict[str, float] = {}
    for f in files:
        folds = [
            _macro_f1(
                [(_decide(p, it, focus, other, taxonomy), it.gold) for g, it, p in oof if g is f and it.fold == k],
                f.sectors,
            )
            for k in range(FOLDS)
        ]
        stem = f.name.removesuffix(".jsonl")
        keyword = _macro_f1([(_implied(it.keyword, taxonomy), it.gold) for it in f.items], f.sectors)
        judged = _macro_f1([(_decide(p, it, focus, other, taxonomy), it.gold) for g, it, p in oof if g is f], f.sectors)
        cross_validation |= {
            f"{stem}.keyword_macro_f1": round(keyword, 4),
            f"{stem}.judge_macro_f1": round(judged, 4),
            f"{stem}.judge_fold_mean": round(statistics.fmean(folds), 4),
            f"{stem}.judge_fold_min": round(min(folds), 4),
            f"{stem}.judge_fold_max": round(max(folds), 4),
        }
        log(
            f"{f.name}: {len(f.items)} items, {f.rows} candidate rows; macro-F1 keyword rule {keyword:.3f}, "
            f"judge out of fold {judged:.3f} (per fold {statistics.fmean(folds):.3f} mean, "
            f"{min(folds):.3f}–{max(folds):.3f})"
        )
    for name, t in (("focus", focus), ("other", other)):
        log(f"{name}: calibration {t.scale:.3f} x logit + {t.shift:.3f}; keep >= {t.keep}, add >= {t.add}")
    reliability = {"all": _reliability([(p[s], s in it.gold) for f, it, p in oof for s in p if s in f.sectors])}
    for f in files:
        rows = [(p[s], s in it.gold) for g, it, p in oof if g is f for s in p if s in f.sectors]
        reliability[f.name.removesuffix(".jsonl")] = _reliability(rows)
    own, default = _fit(files, lambda it: True, sectors)
    from sklearn import __version__ as sklearn_version

    return JudgeModel(
        features=list(FEATURES),
        sectors=own,
        default=default,
        focus=focus,
        other=other,
        trainer={
            "library": f"scikit-learn {sklearn_version}",
            "model": "LogisticRegression(lbfgs, L2) per sector over binary words, adjacent word pairs, "
            "5-character stems + salience",
            "C": C,
            "min_df": MIN_DF,
            "word_weight_floor": WORD_WEIGHT_FLOOR,
            "folds": FOLDS,
        },
        trained_on=[TrainingFile(name=f.name, sha256=f.sha256, items=len(f.items), candidates=f.rows) for f in files],
        cross_validation=cross_validation,
        reliability=reliability,
    )


def _with(t: Thresholds, pair: tuple[float, float]) -> Thresholds:
    return t.model_copy(update={"keep": pair[0], "add": pair[1]})


def _platt(rows: list[tuple[LabelledFile, Item, dict[str, float]]]) -> Thresholds:
    """Platt scaling fit on one group's out-of-fold rows, every row counting once (thresholds
    left at 0.5)."""
    from sklearn.linear_model import LogisticRegression

    pairs = [(_logit(v), int(s in it.gold)) for f, it, p in rows for s, v in p.items() if s in f.sectors]
    if len({y for _, y in pairs}) < 2:
        return Thresholds(keep=0.5, add=0.5)
    model = LogisticRegression(C=1e4, max_iter=1000).fit([[x] for x, _ in pairs], [y for _, y in pairs])
    return Thresholds(
        scale=round(float(model.coef_[0][0]), 6), shift=round(float(model.intercept_[0]), 6), keep=0.5, add=0.5
    )


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
    """Write the judge file (one model per line-group, stable key order, so diffs stay readable)."""
    path.write_text(json.dumps(model.model_dump(mode="json"), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
