"""How sure an evaluation's figures are: percentile bootstrap intervals over its items.

A test split of 252 items, with eight labelled for one sector, gives a macro-F1 that moves by
several points with the luck of which stories were drawn; a target is met or missed by more than
that only when the interval says so. ``intervals`` resamples the report's items with replacement
(the items, not the labels: an item's sectors, countries, areas and stage move together) and
recomputes each figure exactly as ``Report.summary`` does — macro averages over the labels that
occur in the resample's labels — and returns the 2.5th and 97.5th percentiles.

Deterministic for a given seed, so a figure in the docs can be reproduced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from services.classifier.evaluate import Report

CHUNK = 200  # resamples per matrix product: bounds memory on large files (Reuters: 9,603 items)

Pairs = Sequence[tuple[frozenset[str], frozenset[str]]]
IntMatrix = npt.NDArray[np.int64]


def _indicators(pairs: Pairs, labels: Sequence[str] | None = None) -> tuple[IntMatrix, IntMatrix, IntMatrix]:
    """Per item and label (by default the labels that occur in any item's labels): true
    positive, false positive, false negative, as 0/1 matrices."""
    if labels is None:
        labels = sorted(set().union(*(actual for _, actual in pairs))) if pairs else []
    tp = np.zeros((len(pairs), len(labels)), dtype=np.int64)
    fp, fn = tp.copy(), tp.copy()
    for i, (predicted, actual) in enumerate(pairs):
        for j, label in enumerate(labels):
            tp[i, j] = label in predicted and label in actual
            fp[i, j] = label in predicted and label not in actual
            fn[i, j] = label not in predicted and label in actual
    return tp, fp, fn


def _macro_f1(tp: IntMatrix, fp: IntMatrix, fn: IntMatrix) -> npt.NDArray[np.float64]:
    """Macro-F1 per resample (rows: resamples, columns: labels), over the labels with support."""
    support = tp + fn
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros(tp.shape), where=tp > 0)
    present = support > 0
    counted = present.sum(axis=1)
    macro: npt.NDArray[np.float64] = np.divide(
        (f1 * present).sum(axis=1), counted, out=np.zeros(len(tp)), where=counted > 0
    )
    return macro


def _micro_f1(tp: IntMatrix, fp: IntMatrix, fn: IntMatrix) -> npt.NDArray[np.float64]:
    t, f = tp.sum(axis=1), fp.sum(axis=1) + fn.sum(axis=1)
    micro: npt.NDArray[np.float64] = np.divide(2 * t, 2 * t + f, out=np.zeros(len(tp)), where=t > 0)
    return micro


def _draw(
    weights: IntMatrix,
    pairs: Pairs,
    average: Callable[[IntMatrix, IntMatrix, IntMatrix], npt.NDArray[np.float64]],
    labels: Sequence[str] | None = None,
) -> npt.NDArray[np.float64]:
    tp, fp, fn = _indicators(pairs, labels)
    return average(weights @ tp, weights @ fp, weights @ fn)


def intervals(report: Report, resamples: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """95 % percentile intervals of the report's macro-F1, and (when the file has such labels)
    country F1, agreement-area macro-F1 and stage accuracy; figures rounded to 4 places."""
    outcomes = report.outcomes
    n = len(outcomes)
    if n == 0 or resamples <= 0:
        return {}
    rng = np.random.default_rng(seed)
    figures: dict[str, list[npt.NDArray[np.float64]]] = {}
    sectors = [o.sectors for o in outcomes]
    countries = [o.countries for o in outcomes if o.countries is not None]
    with_areas = [i for i, o in enumerate(outcomes) if o.areas is not None]
    staged = [i for i, o in enumerate(outcomes) if o.stage_right is not None]
    stage_right = np.array([bool(outcomes[i].stage_right) for i in staged], dtype=np.float64)
    done = 0
    while done < resamples:
        size = min(CHUNK, resamples - done)
        # How often each item is drawn in each resample: one multinomial row per resample.
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.int64)
        figures.setdefault("macro_f1", []).append(_draw(weights, sectors, _macro_f1))
        if len(countries) == n:
            figures.setdefault("country_f1", []).append(_draw(weights, _present(countries), _micro_f1, ("PK", "KZ")))
        if with_areas:
            areas = _present([outcomes[i].areas for i in with_areas])
            figures.setdefault("agreement_macro_f1", []).append(_draw(weights[:, with_areas], areas, _macro_f1))
        if staged:
            w = weights[:, staged]
            drawn = w.sum(axis=1)
            right = np.divide(w @ stage_right, drawn, out=np.zeros(size), where=drawn > 0)
            figures.setdefault("stage_accuracy", []).append(right)
        done += size
    return {
        name: [round(float(q), 4) for q in np.percentile(np.concatenate(parts), [2.5, 97.5])]
        for name, parts in figures.items()
    }


def _present(pairs: Sequence[tuple[frozenset[str], frozenset[str]] | None]) -> Pairs:
    return [p for p in pairs if p is not None]
