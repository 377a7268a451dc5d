"""Evaluation arithmetic, the eval CLI's machine-readable last line, the quality floor on the
labelled data beside the repository, and reclassify's report-before-write."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import SHARED_DATA

from services.classifier.agreements import load_registry
from services.classifier.classify import Classifier
from services.classifier.evaluate import Counts, evaluate, load_records
from services.classifier.judge import load_judge
from services.classifier.reclassify import reclassify
from services.classifier.taxonomy import load_taxonomy
from services.cli import main
from shared.models import ClassifiedItem
from shared.store.sqlite import SQLiteStore

DEV = SHARED_DATA / "news/dev.jsonl"
PKKZ_DEV = Path(__file__).resolve().parents[1] / "data/news/pkkz_dev.jsonl"
PKKZ_TEST = Path(__file__).resolve().parents[1] / "data/news/pkkz_test.jsonl"
REUTERS = SHARED_DATA / "reuters/train.jsonl"


def test_counts() -> None:
    c = Counts()
    for predicted, actual in [(True, True), (True, False), (False, True), (False, False), (True, True)]:
        c.add(predicted, actual)
    assert (c.tp, c.fp, c.fn) == (2, 1, 1)
    assert c.precision == pytest.approx(2 / 3) and c.recall == pytest.approx(2 / 3) and c.f1 == pytest.approx(2 / 3)
    assert Counts().f1 == 0.0


def test_macro_is_over_labelled_sectors_only() -> None:
    records = [
        {"title": "Wheat harvest", "text": "Wheat and grain farmers harvest the crop.", "sectors": ["agriculture"]},
        {"title": "Nothing", "text": "A quiet day.", "sectors": []},
    ]
    summary = evaluate(Classifier(load_taxonomy()), records).summary()
    assert list(summary["sectors"]) == ["agriculture"]
    assert summary["macro_f1"] == 1.0 and summary["countries"] is None


def test_eval_cli_prints_json_last(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = tmp_path / "mini.jsonl"
    data.write_text(
        json.dumps(
            {
                "title": "Oil",
                "text": "Crude oil output by OPEC fell.",
                "sectors": ["petroleum"],
                "about_pakistan": False,
                "about_kazakhstan": False,
            }
        )
        + "\n"
    )
    assert main(["eval", str(data)]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["results"][0]["items"] == 1 and "macro_f1" in last["results"][0]


def test_quality_floor_on_labelled_news() -> None:
    """Regression floors, not the targets: the keyword rule alone on the shared dev news and on
    Reuters, and the shipped classifier (with the judge) on the untuned test split of our news.
    The judge's own quality is its cross-validation (test_judge.py rebuilds it and checks the
    figures recorded in judge.json)."""
    keywords = Classifier(load_taxonomy())
    dev = evaluate(keywords, load_records(DEV)).summary()
    assert dev["macro_f1"] >= 0.85, dev
    assert dev["country_f1"] >= 0.95, dev
    reuters = evaluate(keywords, load_records(REUTERS)).summary()
    assert reuters["macro_f1"] >= 0.74, reuters
    shipped = Classifier(load_taxonomy(), judge=load_judge())
    test = evaluate(shipped, load_records(PKKZ_TEST)).summary()
    assert test["macro_f1"] >= 0.83 and test["country_f1"] >= 0.98, test  # measured 0.853 / 0.983 (331 items)


def test_agreement_links_and_stages_are_scored_and_hold_their_floor() -> None:
    """Agreement-link F1 per area (an area label is met by any agreement of that area) and stage
    accuracy; on the dev split the keyword linker was tuned on, its measured level is the floor."""
    records = [
        {
            "title": "Pakistan Railways and KTZ sign railway MoU",
            "text": "Pakistan and Kazakhstan signed a railway cooperation MoU; Pakistan Railways and KTZ ...",
            "sectors": ["transport"],
            "agreements": ["railways"],
            "stage": "signed",
        },
        {"title": "Cricket", "text": "Pakistan won the match.", "sectors": [], "agreements": [], "stage": None},
    ]
    summary = evaluate(Classifier(load_taxonomy(), load_registry()), records).summary()
    assert summary["agreement_areas"]["railways"]["f1"] == 1.0 and summary["stage_accuracy"] == 1.0
    dev = evaluate(Classifier(load_taxonomy(), load_registry()), load_records(PKKZ_DEV)).summary()
    assert dev["agreement_macro_f1"] >= 0.70 and dev["stage_accuracy"] >= 0.70, dev  # measured 0.736 / 0.765 (488)


async def test_reclassify_reports_before_writing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite3")
    await store.start()
    try:
        stale = ClassifiedItem(
            id="itm_1",
            source_id="s",
            source_url="http://s",
            title="Refinery and crude oil exports",
            summary="OPEC crude oil barrels",
            fetched_at=datetime(2026, 3, 1, tzinfo=UTC),
            sectors=["textiles"],
            classifier_version="old",
        )
        await store.upsert_item(stale)
        classifier = Classifier(load_taxonomy())
        report = await reclassify(store, classifier)
        assert report.items == 1 and report.written == 0
        [change] = report.changes
        assert "petroleum" in change.gained and change.lost == ["textiles"]
        assert (await store.get_item("itm_1")).sectors == ["textiles"]  # type: ignore[union-attr]
        written = await reclassify(store, classifier, write=True)
        assert written.written == 1
        stored = await store.get_item("itm_1")
        assert stored is not None and "petroleum" in stored.sectors and stored.classifier_version == classifier.version
        assert (await reclassify(store, classifier)).changes == []
        linking = Classifier(load_taxonomy(), load_registry())
        railway = stale.model_copy(
            update={
                "id": "itm_2",
                "title": "Pakistan Railways and KTZ sign railway cooperation MoU",
                "summary": "Pakistan and Kazakhstan railways signed an MoU in Islamabad.",
            }
        )
        await store.upsert_item(railway)
        report = await reclassify(store, linking)
        change = next(c for c in report.changes if c.item_id == "itm_2")
        assert "railways-cooperation-mou" in change.agreements_gained and change.stage_after == "signed"
        assert report.stages["None → signed"] >= 1
    finally:
        await store.close()
