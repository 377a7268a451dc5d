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


@pytest.mark.parametrize(
    ("title", "text"),
    [
        (
            "Kazakhstan has opened doors for trade with Pakistan",
            "Kazakhstan and Pakistan discussed trade and transit cooperation at a meeting in Astana.",
        ),
        (
            "Tokayev completed his state visit to Pakistan",
            "Railway cooperation between Kazakhstan and Pakistan was on the agenda.",
        ),
        (
            "Токаев завершил государственный визит в Пакистан",
            "Казахстан и Пакистан открыты для сотрудничества в сфере железных дорог.",
        ),
    ],
    ids=["opened-doors", "completed-visit", "ru-visit-ended-open-to"],
)
def test_figures_of_speech_and_an_ended_visit_are_not_operational(
    classifier: Classifier, title: str, text: str
) -> None:
    # "opened doors" is not a facility opened, a visit or talks "completed" are not a project
    # completed, "открыты для сотрудничества" is "open to cooperation".
    stage, _ = stage_of(classifier, title, text)
    assert stage == "follow_up_talks"


def test_an_inaugural_flight_is_underway(classifier: Classifier) -> None:
    # A first (inaugural) flight is underway, not yet a regular service: the Urdu phrases for an
    # inauguration do not take "inaugural" (افتتاحی) with them.
    stage, terms = stage_of(
        classifier,
        "پاکستان سے قازقستان کے لیے افتتاحی پرواز روانہ",
        "پاکستان اور قازقستان کے درمیان فضائی رابطہ",
    )
    assert stage == "underway" and "افتتاحی پرواز" in terms
