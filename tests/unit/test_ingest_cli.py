"""`corridor ingest parse` (the operator's diagnosis path) and the shipped catalogue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import SHARED_DATA

from services.cli import main
from services.ingest.catalogue import import_catalogue, load_catalogue
from shared.store.sqlite import SQLiteStore

URDU = SHARED_DATA / "feeds/miniflux/internal/reader/parser/testdata/urdu_UTF8.xml"


def test_parse_prints_items_as_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", "parse", str(URDU)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    items = [json.loads(line) for line in lines]
    assert len(items) == 26 and all(i["title"] and i["language"] == "ur" for i in items)


def test_parse_reports_the_classified_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text("<html><body><p>no feed here</p></body></html>")
    assert main(["ingest", "parse", str(page)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: not_a_feed:")
    assert main(["ingest", "parse", str(page), "--kind", "html", "--selectors", '{"item": "p"}']) == 0


def test_catalogue_is_valid_and_covers_the_mission() -> None:
    catalogue = load_catalogue()
    names = " ".join(s.name for s in catalogue.sources)
    for outlet in (
        "Dawn",
        "The News",
        "Express Tribune",
        "Business Recorder",
        "APP",
        "Radio Pakistan",
        "Astana Times",
        "Kazinform",
        "Kursiv",
        "Trend",
        "Foreign Affairs",
        "Railways",
        "Maritime",
        "Energy",
        "Commerce",
        "Investment",
        "GDELT",
    ):
        assert outlet in names, outlet
    assert {s.kind for s in catalogue.sources} == {"feed", "html", "gdelt"}
    assert all(s.language or s.kind == "gdelt" for s in catalogue.sources)
    assert all(s.note for s in catalogue.sources), "every entry says how far it was verified"
    assert all(not s.active for s in catalogue.sources if s.kind == "html"), "unverified selectors start paused"
    assert len({s.url for s in catalogue.sources}) == len(catalogue.sources)
    news_search = [s for s in catalogue.sources if "news.google." in s.url]
    assert news_search and all(s.aggregator for s in news_search), "the tracker believes their <source url>"
    assert not any(s.aggregator for s in catalogue.sources if s not in news_search)


def test_subscriptions_cli_against_a_running_corridor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers import CorridorProcess

    proc = CorridorProcess(
        "alerts",
        {
            "CORRIDOR_API_KEY": "cli-key",
            "CORRIDOR_SQLITE_PATH": str(tmp_path / "s.db"),
            "CORRIDOR_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
        },
        tmp_path / "log",
    ).start()
    try:
        monkeypatch.setenv("CORRIDOR_API_KEY", "cli-key")
        monkeypatch.setenv("CORRIDOR_PUBLIC_BASE_URL", proc.base)
        assert main(["subscriptions", "add", "--webhook", "http://127.0.0.1:9/h", "--sector", "energy"]) == 0
        created = json.loads(capsys.readouterr().out)
        assert created["secret"].startswith("whsec_") and created["sectors"] == ["energy"]
        assert main(["subscriptions", "pause", created["id"]]) == 0
        assert json.loads(capsys.readouterr().out)["active"] is False
        assert main(["subscriptions", "list"]) == 0
        assert "whsec_" not in capsys.readouterr().out
        assert main(["subscriptions", "add", "--email", "x@example.org", "--sector", "cheese"]) == 2
        assert "unknown sectors" in capsys.readouterr().err
        # The tracker's alerts and every other filter of the API (the CLI had sectors and
        # countries only: the audit of 2026-12-05).
        argv = ["--kind", "agreement.stalled", "--kind", "agreement.stage_changed", "--agreement"]
        assert main(["subscriptions", "add", "--kafka", *argv, "railways-cooperation-mou", "--area", "railways"]) == 0
        tracker = json.loads(capsys.readouterr().out)
        assert tracker["channel"] == "kafka" and sorted(tracker["kinds"]) == [
            "agreement.stage_changed",
            "agreement.stalled",
        ]
        assert tracker["agreements"] == ["railways-cooperation-mou"] and tracker["areas"] == ["railways"]
        digest = ["--cadence", "daily", "--digest-time", "07:30", "--timezone", "Asia/Almaty", "--language", "ru"]
        filters = ["--keyword", "transit*", "--min-score", "0.6", "--bilateral-only", "--source", "src_dawn"]
        assert main(["subscriptions", "add", "--email", "y@example.org", *digest, *filters]) == 0
        daily = json.loads(capsys.readouterr().out)
        assert (daily["cadence"], daily["digest_time"], daily["timezone"]) == ("daily", "07:30", "Asia/Almaty")
        assert (daily["keywords"], daily["min_score"], daily["bilateral_only"]) == (["transit*"], 0.6, True)
        assert (daily["sources"], daily["languages"], daily["kinds"]) == (["src_dawn"], ["ru"], ["item"])
        assert main(["subscriptions", "add", "--kafka", "--agreement", "nope"]) == 2
        assert "unknown agreements" in capsys.readouterr().err
        assert main(["subscriptions", "remove", created["id"]]) == 0
    finally:
        proc.stop()


def _sources_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["sources", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_sources_add_and_update_take_the_apis_fields_and_its_validation(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRIDOR_SQLITE_PATH", str(tmp_path / "s.sqlite3"))
    # A literal public address: the SSRF guard checks it without resolving a name; nothing connects.
    url = "https://8.8.8.8/press-releases"
    code, out, err = _sources_cli(
        capsys, "add", url, "--kind", "html", "--selectors", '{"item": "article", "title": "h3"}',
        "--language", "ur", "--country", "PK", "--official", "--name", "Ministry", "--aggregator",
    )  # fmt: skip
    assert code == 0, err
    added = json.loads(out)
    assert (added["kind"], added["language"], added["country"], added["official"]) == ("html", "ur", "PK", True)
    assert added["aggregator"] is True
    assert added["selectors"]["item"] == "article" and added["name"] == "Ministry"

    code, out, err = _sources_cli(
        capsys, "update", added["id"], "--interval", "3600", "--not-official", "--not-aggregator"
    )
    assert code == 0, err
    updated = json.loads(out)
    assert (updated["interval_s"], updated["official"], updated["name"]) == (3600.0, False, "Ministry")
    assert updated["aggregator"] is False
    code, out, _ = _sources_cli(capsys, "list")
    assert [json.loads(line)["interval_s"] for line in out.splitlines()] == [3600.0]

    refused = [
        (["add", "https://8.8.4.4/list", "--kind", "html"], "needs selectors"),
        (["add", "https://8.8.4.4/feed", "--interval", "5"], "interval_s: Input should be greater than or equal to 60"),
        (["add", "https://8.8.4.4/list", "--kind", "html", "--selectors", "{item"], "selectors: not JSON"),
        (["add", "https://8.8.4.4/list", "--kind", "html", "--selectors", '{"link": "a"}'], "selectors.item"),
        (["add", "http://127.0.0.1/feed"], "127.0.0.1"),
        (["add", url], "already"),
        (["update", added["id"]], "nothing to change"),
        (["update", "src_missing", "--name", "x"], "no such source src_missing"),
        (["update", added["id"], "--language", "x" * 20], "language"),
    ]
    for argv, message in refused:
        code, out, err = _sources_cli(capsys, *argv)
        assert (code, out) == (2, ""), argv
        assert message in err and err.startswith("error: ") and err.count("\n") == 1, (argv, err)
    code, out, _ = _sources_cli(capsys, "list")
    assert len(out.splitlines()) == 1, "a refused add stores nothing"


async def test_importing_the_catalogue_marks_its_aggregators_and_leaves_known_sources_alone(tmp_path: Path) -> None:
    # Compose imports the catalogue at every start: a known source keeps what its operator set
    # (an earlier version's unmarked Google News source too: README says how to mark it).
    catalogue = load_catalogue()
    store = SQLiteStore(tmp_path / "c.sqlite3")
    await store.start()
    try:
        assert await import_catalogue(store, catalogue, 900) == len(catalogue.sources)
        marked = {s.url: s.id for s in await store.list_sources() if s.aggregator}
        assert set(marked) == {s.url for s in catalogue.sources if s.aggregator} and marked
        unmarked = next(iter(marked.values()))
        await store.update_source(unmarked, {"aggregator": False})  # an operator's --not-aggregator
        assert await import_catalogue(store, catalogue, 900) == 0, "nothing added twice"
        kept = await store.get_source(unmarked)
        assert kept is not None and not kept.aggregator, "a restart does not undo the operator's choice"
    finally:
        await store.close()
