"""Bootstrap intervals of the evaluation's figures: they bracket the figure, shrink with more
items, follow the report's own averaging, are reproducible, and the CLI bounds its argument."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.classifier.agreements import load_registry
from services.classifier.bootstrap import intervals
from services.classifier.classify import Classifier
from services.classifier.evaluate import Outcome, Report, evaluate, load_records
from services.classifier.judge import load_judge
from services.classifier.taxonomy import load_taxonomy
from services.cli import main

PKKZ_TEST = Path(__file__).resolve().parents[1] / "data/news/pkkz_test.jsonl"


def _report(outcomes: list[Outcome]) -> Report:
    report = Report(path="synthetic", items=len(outcomes))
    report.outcomes = outcomes
    return report


def _sector(predicted: set[str], actual: set[str]) -> Outcome:
    return Outcome((frozenset(predicted), frozenset(actual)), None, None, None)


def _staged(right: bool) -> Outcome:
    return Outcome((frozenset(), frozenset()), None, (frozenset(), frozenset()), right)


def test_a_perfect_classifier_has_a_point_interval() -> None:
    outcomes = [_sector({"energy"}, {"energy"}), _sector({"mining"}, {"mining"}), _sector(set(), set())] * 10
    assert intervals(_report(outcomes), 300)["macro_f1"] == [1.0, 1.0]


def test_stage_accuracy_interval_matches_the_binomial_spread() -> None:
    # 200 right of 400: standard error 0.025, so the 95 % interval is about 0.45 to 0.55.
    outcomes = [_staged(i % 2 == 0) for i in range(400)]
    low, high = intervals(_report(outcomes), 2000)["stage_accuracy"]
    assert 0.44 <= low <= 0.46 and 0.54 <= high <= 0.56


def test_intervals_shrink_with_more_items_and_are_reproducible() -> None:
    # Half the energy items missed: F1 = 2/3 whatever the size.
    unit = [_sector({"energy"}, {"energy"}), _sector(set(), {"energy"}), _sector(set(), set())]
    small, large = _report(unit * 10), _report(unit * 200)
    s_low, s_high = intervals(small, 1000)["macro_f1"]
    l_low, l_high = intervals(large, 1000)["macro_f1"]
    assert s_low < l_low <= 2 / 3 <= l_high < s_high
    assert intervals(small, 500, seed=7) == intervals(small, 500, seed=7)


def test_macro_is_over_the_labels_each_resample_contains() -> None:
    # Mining is labelled once and always found; a resample without that item must not count
    # mining as F1 0 (Report.summary averages over the labels that occur).
    outcomes = [_sector({"energy"}, {"energy"})] * 30 + [_sector({"mining"}, {"mining"})]
    assert intervals(_report(outcomes), 500)["macro_f1"] == [1.0, 1.0]


def test_no_items_or_no_resamples_give_no_intervals() -> None:
    assert intervals(_report([]), 100) == {}
    assert intervals(_report([_sector({"energy"}, {"energy"})]), 0) == {}


def test_on_the_test_split_the_intervals_bracket_the_figures() -> None:
    classifier = Classifier(load_taxonomy(), load_registry(), load_judge())
    report = evaluate(classifier, load_records(PKKZ_TEST))
    summary = report.summary()
    found = intervals(report, 500)
    assert set(found) == {"macro_f1", "country_f1", "agreement_macro_f1", "stage_accuracy"}
    for name, (low, high) in found.items():
        assert low < summary[name] < high, name
        assert high - low < 0.25, name  # 252 items: a spread of points, not of the whole scale


def test_the_cli_adds_intervals_and_refuses_a_bad_count(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = tmp_path / "mini.jsonl"
    rows = [
        {"title": "Oil", "text": "Crude oil output by OPEC fell.", "sectors": ["petroleum"]},
        {"title": "Wheat", "text": "Wheat and grain farmers harvest the crop.", "sectors": ["agriculture"]},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", str(data), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    last = json.loads(out.strip().splitlines()[-1])
    assert last["results"][0]["intervals"]["macro_f1"] == [1.0, 1.0]
    assert "95% interval of macro_f1: 1.000 to 1.000" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(data), "--bootstrap", "-1"])
    assert exit_info.value.code == 2
    assert "must be between 0 and 100000" in capsys.readouterr().err
