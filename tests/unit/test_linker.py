"""The stage an item reports, read from the registry's stage phrases by the agreement linker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.classifier.agreements import load_registry
from services.classifier.classify import Classifier
from services.classifier.taxonomy import load_taxonomy
from shared.models import RawItem

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(load_taxonomy(), load_registry())


def stage_of(classifier: Classifier, title: str, text: str = "") -> tuple[str | None, list[str]]:
    item = classifier.classify(
        RawItem(id="itm_1", source_id="s", source_url="http://s", title=title, summary=text, fetched_at=NOW)
    )
    assert item.agreements, "the item is about both countries and an agreement area"
    return item.stage, [e.term for e in item.evidence if e.kind == "stage"]


@pytest.mark.parametrize(
    ("title", "text", "term"),
    [
        (
            "Kazakh cultural centre inaugurated in Islamabad",
            "The centre, opened by Kazakhstan and Pakistan under their cultural cooperation, offers Kazakh courses.",
            "inaugurated",
        ),
        (
            "Токаев открыл в Исламабаде центры науки, культуры и спорта",
            "Президент Казахстана открыл центры в Пакистане в рамках культурного сотрудничества.",
            "открыл",
        ),
        (
            "پاکستان اور قازقستان کی مشترکہ فوجی مشق کی افتتاحی تقریب",
            "پاکستان اور قازقستان کی افواج کی انسداد دہشت گردی مشق",
            "افتتاحی تقریب",
        ),
    ],
    ids=["en", "ru", "ur"],
)
def test_an_opening_or_inauguration_is_operational(classifier: Classifier, title: str, text: str, term: str) -> None:
    stage, terms = stage_of(classifier, title, text)
    assert stage == "operational" and term in terms


def test_opened_as_a_figure_of_speech_and_an_inaugural_flight_are_not_operational(classifier: Classifier) -> None:
    # "opened doors" is not a facility opened; a first (inaugural) flight is underway, not yet a
    # regular service: the Urdu phrases for an inauguration do not take "inaugural" with them.
    stage, _ = stage_of(
        classifier,
        "Kazakhstan has opened doors for trade with Pakistan",
        "Kazakhstan and Pakistan discussed trade and transit cooperation at a meeting in Astana.",
    )
    assert stage == "follow_up_talks"
    stage, terms = stage_of(
        classifier,
        "پاکستان سے قازقستان کے لیے افتتاحی پرواز روانہ",
        "پاکستان اور قازقستان کے درمیان فضائی رابطہ",
    )
    assert stage == "underway" and "افتتاحی پرواز" in terms
