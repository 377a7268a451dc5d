"""The first keyword taxonomy: sectors with evidence, countries in English, Russian and Urdu."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.classifier.classify import Classifier
from services.classifier.taxonomy import load_taxonomy
from shared.errors import ConfigError
from shared.models import RawItem

NOW = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(load_taxonomy())


def raw(title: str, summary: str = "") -> RawItem:
    return RawItem(id="itm_1", source_id="s", source_url="http://s", title=title, summary=summary, fetched_at=NOW)


def test_bilateral_rail_item(classifier: Classifier) -> None:
    item = classifier.classify(
        raw(
            "Pakistan and Kazakhstan agree on rail freight corridor via Afghanistan",
            "KTZ and Pakistan Railways signed a roadmap for transit cargo to Gwadar port.",
        )
    )
    assert "transport" in item.sectors
    assert item.countries == ["PK", "KZ"] and item.bilateral
    assert any(e.kind == "sector" and e.label == "transport" and e.snippet for e in item.evidence)
    assert item.classifier_version.startswith("keywords/")


def test_russian_and_urdu_country_detection(classifier: Classifier) -> None:
    ru = classifier.classify(raw("Казахстан и Пакистан обсудили поставки нефти и зерна"))
    assert ru.countries == ["PK", "KZ"]
    assert {"petroleum", "agriculture"} <= set(ru.sectors)
    ur = classifier.classify(raw("پاکستان اور قازقستان کے درمیان تجارت میں اضافہ"))
    assert ur.countries == ["PK", "KZ"] and "trade_investment" in ur.sectors


def test_unrelated_item_has_no_sector_or_country(classifier: Classifier) -> None:
    item = classifier.classify(raw("Local bakery wins award", "The app helps you find bread nearby."))
    assert item.sectors == [] and item.countries == [] and not item.bilateral


def test_acronyms_match_only_in_capitals(classifier: Classifier) -> None:
    assert "KZ" not in classifier.classify(raw("the ktz of it")).countries
    assert "KZ" in classifier.classify(raw("KTZ cargo")).countries


def test_invalid_taxonomy_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "t.json"
    bad.write_text(
        json.dumps(
            {
                "version": "x",
                "threshold": 1,
                "sectors": {"energy": {"terms": {"oil": 0}}},
                "countries": {"PK": [], "KZ": []},
            }
        )
    )
    with pytest.raises(ConfigError, match="weight"):
        load_taxonomy(bad)


def test_kazakh_and_negatives(classifier: Classifier) -> None:
    kz = classifier.classify(raw("Қазақстан мен Пакістан тауар айналымы", "Қазақстан мұнай экспорты өсті"))
    assert "KZ" in kz.countries and "trade_investment" in kz.sectors and "petroleum" in kz.sectors
    palm = classifier.classify(raw("Palm oil output to rise", "Palm oil output and palm oil exports rise."))
    assert "petroleum" not in palm.sectors and "agriculture" in palm.sectors


def test_infrastructure_that_is_not_physical_works_built(classifier: Classifier) -> None:
    # Taxonomy 2026.12-5: infrastructure is building or upgrading physical works. Transit
    # infrastructure offered for use, digital or e-government infrastructure, and flood damage to
    # infrastructure are not; road infrastructure to be improved is.
    for text in (
        "Pakistan offered Kazakhstan its transit infrastructure and seaport facilities for trade.",
        "The digital infrastructure and e-government infrastructure of Kazakhstan were presented.",
        "The floods caused immense infrastructure damage in Pakistan.",
    ):
        assert "infrastructure" not in classifier.classify(raw("Pakistan and Kazakhstan", text)).sectors, text
    road = classifier.classify(raw("Pakistan and Kazakhstan", "Both agreed to improve road infrastructure."))
    assert "infrastructure" in road.sectors


def test_culture_and_education_false_friends(classifier: Classifier) -> None:
    # Taxonomy 2026.12-5: "зерновые культуры" are grain crops; a commission's name ("... Scientific,
    # Technical and Cultural Cooperation") and bonds a visit recalls are no activity in culture or
    # science; military education is defence. Cultural exchanges and university MoUs still count.
    crops = classifier.classify(raw("Казахстан и Пакистан", "Спрос на зерновые культуры растет в Пакистане."))
    assert "culture_media" not in crops.sectors and "agriculture" in crops.sectors
    commission = classifier.classify(
        raw(
            "Pakistan and Kazakhstan",
            "The Intergovernmental Commission on Trade-Economic, Scientific, Technical and Cultural "
            "Cooperation met in Islamabad. The two countries enjoy religious, cultural and historical bonds.",
        )
    )
    assert not {"culture_media", "education_science"} & set(commission.sectors)
    military = classifier.classify(raw("Pakistan and Kazakhstan", "They discussed defence and military education."))
    assert "education_science" not in military.sectors and "defence_security" in military.sectors
    real = classifier.classify(
        raw("Pakistan and Kazakhstan", "The universities signed an MoU on education and cultural exchanges.")
    )
    assert {"culture_media", "education_science"} <= set(real.sectors)


def test_dry_ports_and_titles_of_office(classifier: Classifier) -> None:
    # A dry port is inland in every language (Russian, Urdu as English), and a Minister of State
    # for Petroleum at a mining signing does not make the story petroleum.
    for title, text in (
        ("Казахстан и Пакистан", "Расширение сухого порта Хоргос увеличит транзит из Пакистана."),
        ("پاکستان اور قازقستان", "تورغنڈی خشک بندرگاہ کی توسیع"),
    ):
        assert "maritime" not in classifier.classify(raw(title, text)).sectors, text
    item = classifier.classify(
        raw(
            "Pakistan and Kazakhstan sign mining MoU",
            "Minister of State for Petroleum Musadik Malik attended the signing of the mining MoU.",
        )
    )
    assert "mining" in item.sectors and "petroleum" not in item.sectors
    # The same for a minister of transport accompanying a delegation, and "local customs" (traditions).
    item = classifier.classify(
        raw(
            "Pakistan and Kazakhstan sign defence MoU",
            "The deputy prime minister was accompanied by the minister of transport. Prisoners "
            "do not know the language and local customs.",
        )
    )
    assert not {"transport", "trade_investment"} & set(item.sectors)


def test_investment_in_russian_and_kazakh_is_trade_investment(classifier: Classifier) -> None:
    # "инвестиц" (Russian and Kazakh) is a core term like Urdu "سرمایہ کاری": the English
    # "investment" stays a support term only because Reuters' "trade" topic does not cover it.
    item = classifier.classify(
        raw("Казахстан и Пакистан", "Казахстан намерен направить инвестиции в строительство железной дороги.")
    )
    assert "trade_investment" in item.sectors


def test_gas_pipelines_are_petroleum_and_sea_access_is_maritime(classifier: Classifier) -> None:
    # Natural gas is petroleum (Russian "газопровод" was already; English "gas pipeline" only made
    # energy), and sea access for Kazakhstan is maritime in its inflected Russian forms too.
    tapi = classifier.classify(raw("Kazakhstan to join TAPI gas pipeline project", "Pakistan welcomed the move."))
    assert {"petroleum", "energy"} <= set(tapi.sectors)
    sea = classifier.classify(
        raw("Казахстан построит железную дорогу к Индийскому океану", "Это даст Казахстану выход к морям.")
    )
    assert "maritime" in sea.sectors


def test_spelling_variants_of_existing_terms(classifier: Classifier) -> None:
    # "people to people" is "people-to-people" unhyphenated; Urdu "امن دستے/دستوں" (peacekeeping
    # troops) is what "امن فوج" says.
    item = classifier.classify(raw("Pakistan and Kazakhstan", "Both stressed people to people contacts."))
    assert "culture_media" in item.sectors
    urdu = classifier.classify(raw("پاکستان اور قازقستان", "اقوام متحدہ کے امن دستوں میں تعاون"))
    assert "defence_security" in urdu.sectors


def test_buses_are_road_transport(classifier: Classifier) -> None:
    """The business forum's 600 electric buses: the guide's transport covers road (2026.12-6)."""
    for title, text in (
        ("Pakistan to buy 600 electric buses from Kazakhstan", "Kazakhstan will supply e-buses to Karachi."),
        ("Пәкістан Қазақстаннан 600 электр автобус сатып алады", "Қазақстан Пәкістанға автобус жеткізеді."),
    ):
        assert "transport" in classifier.classify(raw(title, text)).sectors, title


def test_petroleum_implies_energy_and_support_terms_need_a_core_term(classifier: Classifier) -> None:
    item = classifier.classify(raw("OPEC cuts crude oil output", "Crude oil prices rose; barrels of crude."))
    assert {"petroleum", "energy"} <= set(item.sectors)
    # "exporters" and "quotas" support trade only beside a core term ("trade", "exports", ...).
    support = classifier.classify(raw("Exporters and quotas", "Exporters cheered; quotas and duties fell."))
    assert "trade_investment" not in support.sectors


def test_sector_terms_in_russian_kazakh_and_urdu_and_their_false_friends(classifier: Classifier) -> None:
    """Taxonomy 2026.12-4 names every sector in Russian, Kazakh and Urdu too; a stem that would
    also start a common unrelated word is left out (Португалия is no port, мақтаныш, pride, no cotton)."""
    ru = classifier.classify(raw("Казахстан и Пакистан: грузоперевозки и геологоразведка"))
    assert {"transport", "mining"} <= set(ru.sectors)
    kk = classifier.classify(raw("Қазақстан мен Пәкістан: астық пен тоқыма"))
    assert {"agriculture", "textiles"} <= set(kk.sectors)
    ur = classifier.classify(raw("پاکستان اور قازقستان کا مصنوعی ذہانت میں تعاون"))
    assert "digital" in ur.sectors
    portugal = classifier.classify(raw("Казахстан и Португалия", "Делегация Казахстана посетила Португалию."))
    assert "maritime" not in portugal.sectors
    pride = classifier.classify(raw("Қазақстан мақтанышы", "Бұл Қазақстанның мақтанышы."))
    assert "textiles" not in pride.sectors


def test_operator_taxonomy_file_is_used_by_the_runtime(tmp_path: Path) -> None:
    from services.runtime import Runtime
    from shared.settings import load_settings

    custom = json.loads((Path(__file__).resolve().parents[2] / "services/classifier/taxonomy.json").read_text())
    custom["version"] = "ops-1"
    custom["sectors"]["energy"]["terms"]["hydrogen"] = 2.0
    path = tmp_path / "taxonomy.json"
    path.write_text(json.dumps(custom, ensure_ascii=False))
    runtime = Runtime(load_settings(taxonomy_path=path, sqlite_path=tmp_path / "s.sqlite3"), ())
    assert runtime.taxonomy.version == "ops-1"
    item = Classifier(runtime.taxonomy).classify(raw("Kazakhstan hydrogen plant", "Kazakhstan hydrogen"))
    assert "energy" in item.sectors and item.classifier_version == "keywords/ops-1"


@pytest.mark.parametrize(
    ("title", "summary", "sectors"),
    [
        (  # Turkish: stems take the suffixes (demiryolu, lojistik), "İslamabad" with a dotted capital
            "Kazakistan ve Pakistan demiryolu hattı için anlaşma imzaladı",
            "Kazakistan Cumhurbaşkanı Tokayev İslamabad'da demiryolu ve lojistik işbirliğini görüştü. "
            "Taraflar ticaret hacmini artırmayı kararlaştırdı.",
            {"transport", "trade_investment"},
        ),
        (  # Chinese: no spaces between words
            "哈萨克斯坦与巴基斯坦签署铁路合作协议",
            "托卡耶夫总统访问伊斯兰堡期间，两国签署了铁路和物流合作协议，并同意扩大双边贸易。",
            {"transport", "trade_investment"},
        ),
        (  # Polish: case endings (Kazachstanem, kolejowego)
            "Kazachstan i Pakistan podpisały umowę o współpracy kolejowej",
            "Prezydent Tokajew w Islamabadzie omówił rozwój transportu kolejowego i handlu między "
            "Kazachstanem a Pakistanem.",
            {"transport", "trade_investment"},
        ),
        (  # Hindi
            "पाकिस्तान और कजाकिस्तान के बीच रेलवे समझौता",
            "दोनों देशों ने रेलवे और व्यापार सहयोग बढ़ाने पर सहमति जताई।",
            {"transport", "trade_investment"},
        ),
        (  # Persian
            "همکاری قزاقستان و پاکستان در حمل و نقل ریلی",
            "رئیس جمهور قزاقستان در اسلام‌آباد درباره راه آهن و تجارت دوجانبه گفتگو کرد.",
            {"transport", "trade_investment"},
        ),
    ],
)
def test_sectors_and_countries_in_more_languages(
    classifier: Classifier, title: str, summary: str, sectors: set[str]
) -> None:
    """Taxonomy 2026.12-6: sector and country terms in Turkish, Chinese, Persian, Pashto, Hindi,
    Uzbek, Kyrgyz, German, Italian and Polish (before it, these items had no sector at all)."""
    item = classifier.classify(raw(title, summary))
    assert sectors <= set(item.sectors)
    assert item.countries == ["PK", "KZ"] and item.bilateral


@pytest.mark.parametrize(
    ("title", "summary", "sector", "expected"),
    [
        # Turkish "altında" (under) is not "altın" (gold): gold is a whole word, not a stem.
        ("Kazakistan heyeti köprünün altında toplandı", "Kazakistan heyeti köprünün altında bekledi.", "mining", False),
        (
            "Kazakistan'da altın madeni açıldı",
            "Kazakistan yeni altın madeni ile altın üretimini artırdı.",
            "mining",
            True,
        ),
        # Chinese 港口 (port) inside 香港口岸 (a Hong Kong border crossing) is no seaport.
        ("香港口岸恢复通关", "香港口岸今日恢复通关，旅客经香港口岸往来。", "maritime", False),
        ("瓜达尔港口扩建", "瓜达尔港口的集装箱吞吐量增长，港口航运繁忙。", "maritime", True),
        # Hindi रक्षा (defence) does not start inside सुरक्षा (safety, security).
        ("पाकिस्तान में सुरक्षा कड़ी", "पुलिस ने सुरक्षा बढ़ाई।", "defence_security", False),
        ("पाकिस्तान और कजाकिस्तान रक्षा सहयोग", "दोनों देशों ने रक्षा सहयोग बढ़ाया।", "defence_security", True),
        # Persian "کسانی که" (those who) is not Urdu "کسان" (farmers).
        ("کسانی که در پاکستان زندگی می کنند", "کسانی که به قزاقستان سفر کردند", "agriculture", False),
        ("کسانوں کے لیے گندم", "پاکستان میں کسانوں نے گندم کی فصل کاشت کی۔", "agriculture", True),
    ],
)
def test_false_friends_of_the_new_languages(
    classifier: Classifier, title: str, summary: str, sector: str, expected: bool
) -> None:
    assert (sector in classifier.classify(raw(title, summary)).sectors) is expected


@pytest.mark.parametrize("name", ["哈萨克斯坦", "哈薩克斯坦"])
def test_kazakhstan_by_its_chinese_name_and_the_story_is_linked(name: str) -> None:
    """Taxonomy 2026.12-7: the Chinese terms named Kazakhstan's cities and president but not the
    country, so a Chinese story naming both countries was about Pakistan alone and never linked."""
    from services.classifier.agreements import load_registry

    item = Classifier(load_taxonomy(), load_registry()).classify(raw(f"巴基斯坦与{name}签署铁路合作备忘录"))
    assert item.countries == ["PK", "KZ"] and item.bilateral
    assert "railways" in {a.area for a in item.agreements}, item.agreements
