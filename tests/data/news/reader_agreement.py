"""How far a second careful reader agrees with the test split's labels: the ceiling the
classifier's targets should be read against.

    python tests/data/news/reader_agreement.py

Scores ``pkkz_test_reader2.jsonl`` (a blind second reading under the same guide) against
``pkkz_test.jsonl`` the way ``corridor eval`` scores the classifier: sector and agreement-area
macro-F1 over the labels present, country F1 over both flags, stage accuracy over labelled stages.
"""

from __future__ import annotations

import json
from pathlib import Path

from services.classifier.evaluate import Counts

HERE = Path(__file__).resolve().parent


def _f1(pairs: list[tuple[bool, bool]]) -> float:
    counts = Counts()
    for predicted, actual in pairs:
        counts.add(predicted, actual)
    return counts.f1


def _macro(gold: dict[str, dict], other: dict[str, dict], key: str) -> float:
    labels = sorted({x for r in gold.values() for x in r[key]})
    f1s = [_f1([(lab in other[i][key], lab in gold[i][key]) for i in gold]) for lab in labels]
    return sum(f1s) / len(f1s)


def agreement() -> dict[str, float]:
    """The four figures, second reader against the labels."""
    gold = {r["id"]: r for r in map(json.loads, (HERE / "pkkz_test.jsonl").read_text().splitlines())}
    other = {r["id"]: r for r in map(json.loads, (HERE / "pkkz_test_reader2.jsonl").read_text().splitlines())}
    if set(gold) != set(other):
        raise SystemExit(f"the readings differ in items: {sorted(set(gold) ^ set(other))[:5]}")
    countries = [(other[i][k], gold[i][k]) for i in gold for k in ("about_pakistan", "about_kazakhstan")]
    staged = [i for i in gold if gold[i]["stage"]]
    return {
        "items": len(gold),
        "sector_macro_f1": round(_macro(gold, other, "sectors"), 3),
        "country_f1": round(_f1(countries), 3),
        "agreement_macro_f1": round(_macro(gold, other, "agreements"), 3),
        "stage_accuracy": round(sum(other[i]["stage"] == gold[i]["stage"] for i in staged) / len(staged), 3),
    }


if __name__ == "__main__":
    print(json.dumps(agreement()))
