"""What Corridor hands out, after the outputs review: feeds and calendars survive characters XML
and iCalendar forbid; Atom ids are absolute IRIs and the feed names its author; calendar events
obey RFC 5545 (no DTEND equal to DTSTART, escaped texts); operator files fail with the file's or
the area's name; a taxonomy that only moves weights is replayed and written."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import feedparser
import httpx
import pytest
from fastapi import FastAPI
from icalendar import Calendar

from services.classifier.agreement_routes import build_router as agreements_router
from services.classifier.agreements import load_registry
from services.classifier.classify import Classifier
from services.classifier.reclassify import reclassify
from services.classifier.routes import build_router as events_router
from services.classifier.taxonomy import load_taxonomy
from services.classifier.watch import AgreementWatch
from services.cli import main
from services.ingest.entry import Entry
from services.ingest.parser import html_to_text, to_item
from shared.bus.memory import MemoryBus
from shared.errors import ConfigError
from shared.models import AgreementEvent, AgreementLink, ClassifiedItem, RawItem, SectorScore
from shared.settings import load_settings
from shared.store.base import EventQuery
from shared.store.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[2]
BASE = "https://corridor.example"
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
RAILWAYS = "railways-cooperation-mou"
PETROLEUM_TITLE = "MoU(s) on cooperation in petroleum, mining and geosciences (as reported)"
ATOM = "{http://www.w3.org/2005/Atom}"


# --- 1. characters XML forbids ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("Rail\x01way MoU\x00", "Railway MoU"),
        ("DEL\x7f and \ufffe\uffff gone, \ud800 lone surrogate too", "DEL and gone, lone surrogate too"),
        ("form\x0cfeed and vertical\x0btab separate words", "form feed and vertical tab separate words"),
        ("<p>in\x02 HTML &amp; after&#1; unescaping</p>", "in HTML & after unescaping"),
        ("kept: tab\tnewline\nand 🚆 ÿ", "kept: tab newline and 🚆 ÿ"),
    ],
)
def test_ingest_removes_characters_xml_forbids(raw: str, text: str) -> None:
    assert html_to_text(raw) == text


def test_an_ingested_item_carries_no_control_character() -> None:
    item = to_item(
        Entry(guid="g1", link="https://news.example/1", title="Rail\x01 MoU", summary="Body\x00 text", author=None),
        source_id="s",
        source_url="https://news.example/rss",
        fetched_at=NOW,
    )
    assert item is not None and (item.title, item.summary) == ("Rail MoU", "Body text")


def stored_item(item_id: str, title: str, **fields: object) -> ClassifiedItem:
    """An item as it was stored before ingest cleaned titles: the renderers must cope with it."""
    return ClassifiedItem.model_validate(
        {
            "id": item_id,
            "source_id": "src_dawn",
            "source_url": "https://dawn.example/rss",
            "url": f"https://dawn.example/{item_id}",
            "title": title,
            "summary": "Pakistan and Kazakhstan railways.",
            "published_at": NOW - timedelta(days=1),
            "fetched_at": NOW,
            "sectors": ["transport"],
            "sector_scores": [SectorScore(id="transport", score=3.0, terms=["railway"])],
            "countries": ["PK", "KZ"],
            "bilateral": True,
            "agreements": [AgreementLink(id=RAILWAYS, area="railways", score=2.0, terms=["railway"])],
            "stage": "planning",
            "classifier_version": "t",
            **fields,
        }
    )


async def allow_reads() -> None:
    """Reads are public in these tests."""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "o.sqlite3")
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def api(store: SQLiteStore) -> AsyncIterator[httpx.AsyncClient]:
    registry = load_registry()
    settings = load_settings()
    app = FastAPI()
    app.include_router(
        events_router(
            store=store,
            sector_ids=sorted(load_taxonomy().sectors),
            agreement_ids=[a.id for a in registry.agreements],
            require_read=allow_reads,
            base_url=BASE,
        )
    )
    watch = AgreementWatch(store=store, bus=MemoryBus(), registry=registry, settings=settings)
    app.include_router(
        agreements_router(store=store, registry=registry, watch=watch, require_read=allow_reads, base_url=BASE)
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://corridor") as client:
        yield client


async def test_a_control_character_in_a_stored_title_renders_in_rss_atom_and_ics(
    api: httpx.AsyncClient, store: SQLiteStore
) -> None:
    await store.upsert_item(
        stored_item("itm_ctl", "Rail\x01way MoU\x7f moves", summary="Pakistan\x01 and Kazakhstan\x00 railways.")
    )
    await store.insert_agreement_event(
        AgreementEvent(
            id="agev_1",
            kind="agreement.stage_changed",
            agreement_id=RAILWAYS,
            area="railways",
            title="Railways MoU",
            before="signed",
            after="planning",
            item_id="itm_ctl",
            detail="Rail\x01way MoU\x00 moves",  # the item's title, as the watch records it
            at=NOW,
        )
    )
    for kind, media in (("rss", "application/rss+xml"), ("atom", "application/atom+xml")):
        response = await api.get(f"/api/v1/events.{kind}", params={"agreement": RAILWAYS})
        assert response.status_code == 200 and response.headers["content-type"].startswith(media), response.text
        assert b"\x01" not in response.content and b"\x7f" not in response.content
        [entry] = feedparser.parse(response.content).entries
        assert entry.title == "Railway MoU moves"
    ics = await api.get(f"/api/v1/agreements/{RAILWAYS}.ics")
    assert ics.status_code == 200, ics.text
    assert b"\x00" not in ics.content and b"\x01" not in ics.content
    [moved] = [e for e in Calendar.from_ical(ics.content).walk("VEVENT") if str(e["UID"]) == "agev_1@corridor"]
    assert str(moved["DESCRIPTION"]) == "Railway MoU moves"


# --- 2. Atom ids and author ------------------------------------------------------------------


async def test_atom_entries_have_absolute_ids_and_the_feed_an_author(
    api: httpx.AsyncClient, store: SQLiteStore
) -> None:
    await store.upsert_item(stored_item("itm_a1", "Railway MoU moves"))
    atom = await api.get("/api/v1/events.atom")
    root = ET.fromstring(atom.content)
    [entry] = root.findall(f"{ATOM}entry")
    assert entry.findtext(f"{ATOM}id") == f"{BASE}/api/v1/events/itm_a1", "RFC 4287 4.2.6: an absolute IRI"
    assert root.findtext(f"{ATOM}author/{ATOM}name") == "Corridor", "RFC 4287 4.1.1"
    parsed = feedparser.parse(atom.content)
    assert parsed.entries[0].id == f"{BASE}/api/v1/events/itm_a1" and parsed.feed.author == "Corridor"

    rss = ET.fromstring((await api.get("/api/v1/events.rss")).content)
    guid = rss.find("channel/item/guid")
    assert guid is not None and guid.text == "itm_a1" and guid.get("isPermaLink") == "false"


# --- 3. iCalendar ----------------------------------------------------------------------------


async def test_calendar_events_end_after_they_start_or_have_no_end(api: httpx.AsyncClient, store: SQLiteStore) -> None:
    await store.insert_agreement_event(
        AgreementEvent(
            id="agev_2", kind="agreement.setback", agreement_id=RAILWAYS, area="railways", title="Railways MoU", at=NOW
        )
    )
    events = Calendar.from_ical((await api.get("/api/v1/agreements.ics")).content).walk("VEVENT")
    assert len(events) == len(load_registry().agreements) + 1
    for event in events:
        start = event.decoded("DTSTART")
        if "DTEND" in event:
            assert event.decoded("DTEND") > start, "RFC 5545 3.8.2.2"
        if str(event["UID"]).startswith("signed-"):
            assert isinstance(start, date) and not isinstance(start, datetime), "an all-day signing"
    setback = next(e for e in events if str(e["UID"]) == "agev_2@corridor")
    assert setback.decoded("DTSTART") == NOW and "DTEND" not in setback


def unfolded(ics: httpx.Response) -> bytes:
    """The calendar's content lines, unfolded (RFC 5545 3.1: long lines go on after CRLF + space)."""
    return ics.content.replace(b"\r\n ", b"")


async def test_calendar_name_is_an_escaped_text(api: httpx.AsyncClient) -> None:
    petroleum = next(a.id for a in load_registry().agreements if a.title == PETROLEUM_TITLE)
    ics = await api.get(f"/api/v1/agreements/{petroleum}.ics")
    assert ics.status_code == 200
    Calendar.from_ical(ics.content)
    # RFC 5545 3.3.11: a comma in a TEXT is escaped (an unescaped one separates values).
    assert b"X-WR-CALNAME:Corridor: MoU(s) on cooperation in petroleum\\, mining and geosciences" in unfolded(ics)


async def test_a_title_with_a_line_break_gives_a_calendar(store: SQLiteStore, tmp_path: Path) -> None:
    registry = json.loads((REPO / "services/classifier/agreements.json").read_text())
    registry["agreements"][0]["title"] = "Line one;\nline two, \x01end"
    path = tmp_path / "agreements.json"
    path.write_text(json.dumps(registry))
    edited = load_registry(path)
    first = edited.agreements[0].id
    watch = AgreementWatch(store=store, bus=MemoryBus(), registry=edited, settings=load_settings())
    app = FastAPI()
    app.include_router(
        agreements_router(store=store, registry=edited, watch=watch, require_read=allow_reads, base_url=BASE)
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://corridor") as client:
        ics = await client.get(f"/api/v1/agreements/{first}.ics")
    assert ics.status_code == 200, ics.text
    assert b"X-WR-CALNAME:Corridor: Line one\\;\\nline two\\, end" in unfolded(ics)
    [signed] = Calendar.from_ical(ics.content).walk("VEVENT")
    assert str(signed["SUMMARY"]) == "Line one;\nline two, end: signed"


# --- 4. operator files -----------------------------------------------------------------------


def test_a_taxonomy_not_in_utf8_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "taxonomy-cp1251.json"
    path.write_bytes((REPO / "services/classifier/taxonomy.json").read_text("utf-8").encode("cp1251", "replace"))
    with pytest.raises(ConfigError, match=r"invalid taxonomy .*taxonomy-cp1251\.json.*utf-8"):
        load_taxonomy(path)


def test_a_registry_not_in_utf8_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agreements.json"
    path.write_bytes((REPO / "services/classifier/agreements.json").read_text("utf-8").encode("utf-16"))
    with pytest.raises(ConfigError, match=r"invalid agreements .*agreements\.json"):
        load_registry(path)


def test_from_sectors_naming_an_unknown_sector_is_refused_with_the_area(tmp_path: Path) -> None:
    registry = json.loads((REPO / "services/classifier/agreements.json").read_text())
    registry["areas"]["energy"]["from_sectors"] = ["energy", "enrgy"]
    path = tmp_path / "agreements.json"
    path.write_text(json.dumps(registry))
    with pytest.raises(ConfigError, match=r"from_sectors .*energy: enrgy"):
        Classifier(load_taxonomy(), load_registry(path))


# --- 5. reclassify ---------------------------------------------------------------------------


STALE = {"sectors": ["textiles"], "classifier_version": "old"}  # classified before the petroleum sector


def refinery(item_id: str, days_ago: int = 0) -> ClassifiedItem:
    classifier = Classifier(load_taxonomy())
    return classifier.classify(
        RawItem(
            id=item_id,
            source_id="s",
            source_url="http://s",
            title="Refinery and crude oil exports",
            summary="OPEC crude oil barrels",
            fetched_at=NOW - timedelta(days=days_ago),
        )
    )


def reweighted(tmp_path: Path, factor: float, version: str | None = None) -> Path:
    """The shipped taxonomy with petroleum's weights scaled (and, given, another version)."""
    taxonomy = json.loads((REPO / "services/classifier/taxonomy.json").read_text())
    terms = taxonomy["sectors"]["petroleum"]["terms"]
    taxonomy["sectors"]["petroleum"]["terms"] = {t: min(10.0, w * factor) for t, w in terms.items()}
    taxonomy["version"] = version or taxonomy["version"]
    path = tmp_path / "taxonomy.json"
    path.write_text(json.dumps(taxonomy))
    return path


async def test_a_taxonomy_that_only_moves_weights_is_reported_and_written(store: SQLiteStore, tmp_path: Path) -> None:
    before = refinery("itm_oil")
    await store.upsert_item(before)
    classifier = Classifier(load_taxonomy(reweighted(tmp_path, 2.0)))
    assert classifier.version == before.classifier_version, "same version: only the weights differ"

    report = await reclassify(store, classifier)
    [change] = report.changes
    assert change.rescored and report.rescored == 1 and not (change.gained or change.lost)
    assert change.top_score_after > change.top_score_before == before.top_score
    assert report.written == 0 and (await store.get_item("itm_oil")) == before

    written = await reclassify(store, classifier, write=True)
    stored = await store.get_item("itm_oil")
    assert written.written == 1 and stored is not None and stored.top_score == change.top_score_after
    # min_score and sort=score now answer from the new weights.
    assert (await reclassify(store, classifier)).changes == []


async def test_a_new_classifier_version_alone_is_a_change(store: SQLiteStore, tmp_path: Path) -> None:
    await store.upsert_item(refinery("itm_oil"))
    classifier = Classifier(load_taxonomy(reweighted(tmp_path, 1.0, version="2099.1")))
    report = await reclassify(store, classifier, write=True)
    [change] = report.changes
    assert change.rescored and change.version_after == classifier.version != change.version_before
    stored = await store.get_item("itm_oil")
    assert stored is not None and stored.classifier_version == classifier.version


async def test_evidence_alone_is_a_change_reclassify_writes(store: SQLiteStore) -> None:
    """Items stored without their link and stage sentences (an older version), or with evidence a
    reworded registry no longer gives, are written again: the timeline shows that evidence
    (review of 2026-12-05: reclassify compared only what the API filters on, and skipped them)."""
    classifier = Classifier(load_taxonomy(), load_registry())
    fresh = classifier.classify(
        RawItem(
            id="itm_rail",
            source_id="s",
            source_url="http://s",
            title="Pakistan Railways and KTZ begin the feasibility study",
            summary="Pakistan and Kazakhstan railways agreed.",
            fetched_at=NOW,
        )
    )
    assert fresh.stage and {e.kind for e in fresh.evidence} >= {"agreement", "stage"}, fresh.evidence
    long_ago = NOW - timedelta(days=30)
    stale = fresh.model_copy(
        update={"evidence": [e for e in fresh.evidence if e.kind in ("sector", "country")], "classified_at": long_ago}
    )
    await store.upsert_item(stale)
    report = await reclassify(store, classifier, write=True)
    [change] = report.changes
    assert change.rescored and report.written == 1
    stored = await store.get_item("itm_rail")
    assert stored is not None and stored.evidence == fresh.evidence
    # Nothing a feed shows changed: its entry keeps its date (feeds date updates by classified_at).
    assert stored.classified_at == long_ago
    assert (await reclassify(store, classifier)).changes == [], "written once: nothing left to change"
    # A link's terms alone are a change too.
    [link] = stored.agreements
    fewer = stored.model_copy(update={"agreements": [link.model_copy(update={"terms": link.terms[:1]})]})
    await store.upsert_item(fewer)
    assert len(link.terms) > 1 and len((await reclassify(store, classifier, write=True)).changes) == 1
    again = await store.get_item("itm_rail")
    assert again is not None and again.agreements == fresh.agreements


async def test_each_change_is_handed_on_once_it_is_written(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(3):
        await store.upsert_item(refinery(f"itm_{n}", days_ago=n).model_copy(update=STALE))
    log: list[str] = []
    replace = store.replace_item_if

    async def logged(item: ClassifiedItem, revision: int, content_hash: str) -> bool:
        written = await replace(item, revision, content_hash)
        log.append(f"stored {item.id}")
        return written

    monkeypatch.setattr(store, "replace_item_if", logged)
    report = await reclassify(
        store, Classifier(load_taxonomy()), write=True, on_change=lambda c: log.append(f"change {c.item_id}")
    )
    assert log == [f"{what} itm_{n}" for n in range(3) for what in ("stored", "change")]
    assert report.written == 3 and all(c.written for c in report.changes)


async def test_reclassify_leaves_a_revision_stored_while_it_ran(store: SQLiteStore) -> None:
    # The live classifier stored an edited entry (revision 1) after reclassify read revision 0:
    # writing the reclassified old text over it took the edit back (review of 2026-12-04).
    # The store now checks the revision and writes in one step (replace_item_if; the contract
    # test checks that step on both stores).
    await store.upsert_item(refinery("itm_oil").model_copy(update=STALE))
    list_items = store.list_items

    async def edited_after_the_page_was_read(query: EventQuery) -> list[ClassifiedItem]:
        page = await list_items(query)
        for current in page:
            edited = current.model_copy(update={"title": "Refinery deal revised", "revision": 1, "content_hash": "new"})
            await store.upsert_item(edited)
        return page

    store.list_items = edited_after_the_page_was_read  # type: ignore[method-assign]
    report = await reclassify(store, Classifier(load_taxonomy()), write=True)
    store.list_items = list_items  # type: ignore[method-assign]
    assert report.written == 0 and report.superseded == 1 and not report.changes[0].written
    stored = await store.get_item("itm_oil")
    assert stored is not None and stored.revision == 1 and stored.title == "Refinery deal revised"


def test_an_interrupted_reclassify_leaves_the_record_of_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    db = tmp_path / "cli.sqlite3"

    async def seed() -> None:
        s = SQLiteStore(db)
        await s.start()
        for n in range(2):
            await s.upsert_item(refinery(f"itm_{n}", days_ago=n).model_copy(update=STALE))
        await s.close()

    asyncio.run(seed())
    monkeypatch.setenv("CORRIDOR_SQLITE_PATH", str(db))
    monkeypatch.setenv("CORRIDOR_JUDGE_ENABLED", "false")
    replace = SQLiteStore.replace_item_if
    calls = 0

    async def fail_second(self: SQLiteStore, item: ClassifiedItem, revision: int, content_hash: str) -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("interrupted")
        return await replace(self, item, revision, content_hash)

    monkeypatch.setattr(SQLiteStore, "replace_item_if", fail_second)
    with pytest.raises(RuntimeError, match="interrupted"):
        main(["reclassify", "--write"])
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert line["item_id"] == "itm_0" and line["written"] is True and line["lost"] == ["textiles"]

    monkeypatch.setattr(SQLiteStore, "replace_item_if", replace)
    assert main(["reclassify", "--write"]) == 0
    *changes, summary = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [c["item_id"] for c in changes] == ["itm_1"] and summary["written"] == 1 and summary["rescored"] == 0


def test_a_timeline_item_carries_its_link_and_stage_evidence_for_that_agreement_only() -> None:
    """The timeline says why each item is there: the link's score, terms and sentences for this
    agreement (not another agreement's the item also links), and the sentence reporting its stage."""
    from services.classifier.agreement_routes import timeline_item
    from shared.models import Evidence

    def ev(kind: str, label: str, term: str) -> Evidence:
        return Evidence(kind=kind, label=label, term=term, snippet=f"… {term} …")  # type: ignore[arg-type]

    item = ClassifiedItem(
        id="itm_1",
        source_id="src",
        source_url="https://news.example/rss",
        title="KTZ and Pakistan Railways begin the feasibility study",
        published_at=NOW,
        fetched_at=NOW,
        agreements=[
            AgreementLink(id="transport-corridor-mou", area="transport-corridor", score=0.4, terms=[], via="sectors"),
            AgreementLink(id=RAILWAYS, area="railways", score=2.0, terms=["KTZ", "Pakistan Railways"]),
        ],
        stage="planning",
        evidence=[
            ev("sector", "transport", "railway"),
            ev("agreement", "transport-corridor-mou", "railway"),
            ev("agreement", RAILWAYS, "KTZ"),
            ev("agreement", RAILWAYS, "Pakistan Railways"),
            ev("stage", "planning", "feasibility study"),
        ],
        classifier_version="t",
    )
    t = timeline_item(item, RAILWAYS, "Dawn")
    assert (t.via, t.score, t.terms, t.source_name) == ("agreement", 2.0, ["KTZ", "Pakistan Railways"], "Dawn")
    assert [(e.kind, e.term) for e in t.evidence] == [
        ("agreement", "KTZ"),
        ("agreement", "Pakistan Railways"),
        ("stage", "feasibility study"),
    ]
    other = timeline_item(item, "transport-corridor-mou", None)
    assert (other.via, other.score, other.terms) == ("sectors", 0.4, [])
    assert [(e.kind, e.label) for e in other.evidence] == [
        ("agreement", "transport-corridor-mou"),
        ("stage", "planning"),
    ]
