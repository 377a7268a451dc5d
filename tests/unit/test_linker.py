"""What the agreement linker reads: the stage an item reports (from the registry's stage phrases) and
the areas it links."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.classifier.agreements import load_registry
from services.classifier.classify import Classifier
from services.classifier.taxonomy import load_taxonomy
from shared.errors import ConfigError
from shared.models import ClassifiedItem, RawItem

REPO = Path(__file__).resolve().parents[2]

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(load_taxonomy(), load_registry())


def classify(classifier: Classifier, title: str, text: str) -> ClassifiedItem:
    return classifier.classify(
        RawItem(id="itm_1", source_id="s", source_url="http://s", title=title, summary=text, fetched_at=NOW)
    )


def stage_of(classifier: Classifier, title: str, text: str = "") -> tuple[str | None, list[str]]:
    item = classify(classifier, title, text)
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


def areas_of(classifier: Classifier, title: str, text: str) -> set[str]:
    return {a.area for a in classify(classifier, title, text).agreements}


def test_cooperation_between_customs_services_links_customs(classifier: Classifier) -> None:
    areas = areas_of(
        classifier,
        "Kazakh envoy calls for closer Pakistan-Kazakhstan trade links",
        "The ambassador said there is a need to establish cooperation between the customs services of "
        "Pakistan and Kazakhstan to remove hiccups in bilateral trade.",
    )
    assert "customs" in areas


def test_a_truck_run_cleared_by_pakistan_customs_is_transit_not_customs(classifier: Classifier) -> None:
    # Registry 2026.12-5: the organisation's name and the mechanics of a run (TIR, a border crossing)
    # are transit trade; readers label customs for customs cooperation (an MoU, the services' work
    # together), not for the office that cleared a truck.
    areas = areas_of(
        classifier,
        "First TIR truck from Pakistan reaches Kazakhstan under the transit agreement",
        "Pakistan Customs facilitated the NLC trucks at the border crossing at Sost before they reached "
        "Almaty under the Quadrilateral Traffic in Transit Agreement.",
    )
    assert "transit-trade" in areas and "customs" not in areas


def test_energy_implied_by_petroleum_does_not_link_the_energy_area(classifier: Classifier) -> None:
    # Petroleum implies the energy sector, but "MoUs on petroleum and mining" report the petroleum
    # area's agreement: a reader labels no energy agreement for it. Energy named on its own
    # (electricity, power) still links the energy area.
    areas = areas_of(
        classifier,
        "Pakistan and Kazakhstan sign MoUs on petroleum and mining",
        "Kazakhstan and Pakistan signed memoranda on petroleum exploration, mining and geosciences.",
    )
    assert "petroleum-mining-geosciences" in areas and "energy" not in areas
    areas = areas_of(
        classifier,
        "Pakistan and Kazakhstan sign MoUs on petroleum and electricity",
        "Kazakhstan and Pakistan signed memoranda on petroleum exploration and on electricity supply from "
        "hydropower plants.",
    )
    assert {"petroleum-mining-geosciences", "energy"} <= areas


@pytest.mark.parametrize(
    ("title", "text", "term"),
    [
        (
            "Pakistan and Kazakhstan railway MoU to be signed during the visit",
            "The railway cooperation MoU between Pakistan and Kazakhstan will be signed in February.",
            "to be signed",
        ),
        (
            "Қазақстан мен Пәкістан теміржол құжаты",
            "Қазақстан мен Пәкістан арасындағы теміржол құжатына ақпан айында қол қойылады деп күтілуде.",
            "қол қойылады",
        ),
        (
            "Direct flights between Pakistan and Kazakhstan",
            "Direct flights from Pakistan to Kazakhstan would be launched in June.",
            "would be launched",
        ),
    ],
    ids=["en-signing-to-come", "kk-signing-to-come", "en-launch-to-come"],
)
def test_a_signing_or_launch_to_come_is_planning(classifier: Classifier, title: str, text: str, term: str) -> None:
    # "signed" inside "to be signed" and "launched" inside "would be launched" do not count: the
    # longer phrase of another stage says what the item reports.
    stage, terms = stage_of(classifier, title, text)
    assert stage == "planning" and term in terms


def test_each_link_says_how_it_was_made(classifier: Classifier) -> None:
    """An agreement named by its own terms is ``via`` "agreement"; news about an area as a whole
    links the area's lead (the registry's ``lead``) ``via`` "area"; a sector alone ``via``
    "sectors", with no terms. Defence news is not the extradition treaty's news: the
    justice-security area's lead is the UN peacekeeping MoU."""
    named = classify(
        classifier,
        "Pakistan and Kazakhstan ratify extradition treaty",
        "Kazakhstan and Pakistan ratified the extradition treaty signed in Islamabad.",
    )
    assert [(a.id, a.via) for a in named.agreements] == [("justice-extradition-treaty", "agreement")]

    defence = classify(
        classifier,
        "Pakistan, Kazakhstan vow to deepen defence ties, expand military cooperation",
        "Pakistan and Kazakhstan agreed to expand defence and military cooperation, including joint exercises.",
    )
    [link] = [a for a in defence.agreements if a.area == "justice-security"]
    assert (link.id, link.via) == ("justice-un-peacekeeping-mou", "area") and "military" in link.terms

    by_sector = classify(
        classifier,
        "Kazakhstan and Pakistan discuss copper and lithium deposits",
        "Kazakhstan and Pakistan discussed copper ore and lithium deposits exploration.",
    )
    [link] = by_sector.agreements
    assert (link.id, link.via, link.terms) == ("petroleum-mining-geosciences-mou", "sectors", [])


def test_an_area_lead_outside_its_area_is_refused(tmp_path: Path) -> None:
    registry = json.loads((REPO / "services/classifier/agreements.json").read_text())
    registry["areas"]["justice-security"]["lead"] = "railways-cooperation-mou"
    path = tmp_path / "agreements.json"
    path.write_text(json.dumps(registry))
    with pytest.raises(ConfigError, match=r"lead must be one of its agreements.*justice-security: railways-coop"):
        load_registry(path)


@pytest.mark.parametrize(
    ("title", "text"),
    [
        (
            "Kazakhstan's Tokayev visits Pakistan to deepen strategic partnership",
            "During the state visit Pakistan and Kazakhstan signed agreements on railways and transit trade.",
        ),
        (
            "Визит Токаева в Пакистан",
            "В ходе визита делегации Казахстан и Пакистан подписали соглашения о железнодорожном сообщении.",
        ),
    ],
    ids=["en-visit-signing", "ru-visit-signing"],
)
def test_a_visit_is_the_occasion_not_the_stage(classifier: Classifier, title: str, text: str) -> None:
    # Registry 2026.12-8: a visit or a delegation names the occasion, not talks; the guide's talks
    # are meetings, commissions and working groups. A visit-day story reporting documents signed is
    # `signed`, though "visit" stands in its title and the signing only in its body.
    stage, terms = stage_of(classifier, title, text)
    assert stage == "signed", terms


def test_a_visit_with_talks_and_nothing_signed_is_talks(classifier: Classifier) -> None:
    stage, terms = stage_of(
        classifier,
        "Kazakh delegation visits Islamabad",
        "The delegation held talks with Pakistan on railway cooperation between Kazakhstan and Pakistan.",
    )
    assert stage == "follow_up_talks" and "held talks" in terms


def test_an_item_no_longer_linked_keeps_no_link_or_stage_evidence(classifier: Classifier) -> None:
    """The timeline and the events show the agreement and stage evidence: an item linked once and
    passed to the linker again when it no longer concerns both countries loses those sentences
    with its links (they stayed while its links went)."""
    linked = classify(
        classifier, "Pakistan Railways and KTZ begin the feasibility study", "Pakistan and Kazakhstan railways."
    )
    assert linked.agreements and {"agreement", "stage"} <= {e.kind for e in linked.evidence}
    assert classifier.linker is not None
    alone = classifier.linker.link(
        linked.model_copy(
            update={"countries": ["PK"], "title": "Railways begin a study", "summary": "Pakistan railways."}
        )
    )
    assert (alone.agreements, alone.stage) == ([], None)
    assert alone.evidence and {e.kind for e in alone.evidence} <= {"sector", "country"}, alone.evidence
