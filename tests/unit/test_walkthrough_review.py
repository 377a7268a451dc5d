"""Defects two walkthroughs of the README found (2026-12-04, as a new user and as an operator),
each checked here against the behaviour that was wrong."""

from __future__ import annotations

import base64
import codecs
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import HTTPException
from helpers import runtime_client
from pydantic import SecretStr

from services import cli
from services.ingest.parser import parse_feed_document
from services.runtime import ALL_ROLES, Runtime
from shared.api import api_key_dependency
from shared.settings import load_settings


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    runtime = Runtime(load_settings(sqlite_path=tmp_path / "w.sqlite3", api_key="admin-key"), ALL_ROLES)
    async with runtime_client(runtime) as c:
        yield c


def _cursor(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


async def test_a_cursor_with_a_lone_surrogate_is_a_422(client: httpx.AsyncClient) -> None:
    # json.dumps writes "\ud800" as an escape; decoded, it reached SQLite and failed to encode: 500.
    bad = await client.get("/api/v1/events", params={"cursor": _cursor("time", "2026-02-04T14:00:00+00:00", "\ud800")})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "cursor"]
    not_text = await client.get("/api/v1/events", params={"cursor": _cursor("time", "2026-02-04T14:00:00+00:00", 7)})
    assert not_text.status_code == 422


async def test_a_path_cannot_forge_a_log_line(client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="corridor.access")
    forged = "x\n2026-12-04 20:00:00,000 WARNING services.alerts.deliverer: FORGED"
    await client.get("/api/v1/events/" + forged.replace("\n", "%0A").replace(" ", "%20"))
    [line] = [r.getMessage() for r in caplog.records if r.name == "corridor.access"]
    assert "\n" not in line and "\\n2026-12-04" in line


async def test_an_empty_bearer_token_never_matches_an_empty_key() -> None:
    require = api_key_dependency(SecretStr(""))
    with pytest.raises(HTTPException) as refused:
        await require("Bearer ")
    assert refused.value.status_code == 401


FEED = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<item><guid>1</guid><title>Surrogate &#xD800; and &#55296; and past the end &#x110000;</title>
<link>http://x.example/1</link><description>d</description></item>
<item><guid>3</guid><title>Zeros &#x0000000000D800; &#0000000000055296; &#99999999999999999999;</title>
<link>http://x.example/3</link><description>d</description></item>
<item><guid>2</guid><title>Fine &#x41;&#66;</title><link>http://x.example/2</link><description>d</description></item>
</channel></rss>"""


def test_a_character_reference_utf8_cannot_hold_loses_nothing() -> None:
    # feedparser encoded each reference's character as UTF-8 and raised: the whole feed was lost.
    entries, _ = parse_feed_document(FEED)
    assert [e.title for e in entries] == [
        "Surrogate \ufffd and \ufffd and past the end \ufffd",
        "Zeros \ufffd \ufffd \ufffd",
        "Fine AB",
    ]


WIDE = (
    '<?xml version="1.0" encoding="UTF-16"?><rss version="2.0"><channel><title>t</title>'
    "<item><guid>1</guid><title>Астана &#xD800; ок</title><link>http://x.example/1</link></item>"
    "<item><guid>2</guid><title>Fine &#x41;</title><link>http://x.example/2</link></item>"
    "</channel></rss>"
)


@pytest.mark.parametrize(
    "data",
    [
        WIDE.encode("utf-16"),  # with the machine's BOM
        codecs.BOM_UTF16_BE + WIDE.encode("utf-16-be"),
        WIDE.encode("utf-16-le"),  # no BOM: known by how "<?" is written
        WIDE.encode("utf-16-be"),
        WIDE.encode("utf-32"),
        WIDE.replace("UTF-16", "UTF-32").encode("utf-32-be"),
    ],
    ids=["utf16-bom", "utf16be-bom", "utf16le", "utf16be", "utf32-bom", "utf32be"],
)
def test_a_wide_encoded_feed_with_a_bad_reference_loses_nothing(data: bytes) -> None:
    # The references were rewritten in ASCII-compatible bytes only: in UTF-16 "&#xD800;" is not
    # those bytes, so one bad reference still lost the whole document there.
    entries, _ = parse_feed_document(data)
    assert [e.title for e in entries] == ["Астана \ufffd ок", "Fine A"]


def test_ingest_parse_reports_a_parser_crash_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def crash(*args: object, **kwargs: object) -> object:
        raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")

    monkeypatch.setattr(cli, "parse_document", crash)
    feed = tmp_path / "f.xml"
    feed.write_bytes(FEED)
    assert cli.main(["ingest", "parse", str(feed)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: parse_error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_taken_port_fails_the_start_at_once_with_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # uvicorn bound only after the whole runtime had started (every loop had run once), then
    # ended with sys.exit(3); the README's contract is exit 1 for a start that failed.
    store = tmp_path / "c.sqlite3"
    monkeypatch.setenv("CORRIDOR_SQLITE_PATH", str(store))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert cli.main(["run", "all", "--port", str(taken.getsockname()[1])]) == 1
    assert not store.exists(), "nothing started"


def test_a_bad_setting_is_one_error_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CORRIDOR_HTTP_PORT", "abc")
    assert cli.main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid configuration: CORRIDOR_HTTP_PORT: ") and len(err.splitlines()) == 1


async def test_min_score_with_a_sector_means_that_sectors_score(tmp_path: Path) -> None:
    # The API compared the item's top score (any sector), a subscription its asked-for sectors':
    # ?sector=culture_media&min_score=0.9 listed a story whose culture score was 0.57.
    from datetime import UTC, datetime, timedelta

    from shared.models import ClassifiedItem, SectorScore

    now = datetime(2026, 12, 1, tzinfo=UTC)
    runtime = Runtime(load_settings(sqlite_path=tmp_path / "m.sqlite3", api_key="admin-key"), ALL_ROLES)
    async with runtime_client(runtime) as api:
        items = []
        for n in range(23):
            culture = 0.95 if n % 4 == 0 else 0.57  # 6 of 23 reach 0.9 in culture
            items.append(
                ClassifiedItem(
                    id=f"itm_{n:03d}",
                    source_id="src",
                    source_url="http://s",
                    title=f"Story {n}",
                    published_at=now - timedelta(hours=n),
                    fetched_at=now,
                    sectors=["transport", "culture_media"],
                    sector_scores=[
                        SectorScore(id="transport", score=0.98, terms=[]),
                        SectorScore(id="culture_media", score=culture, terms=[]),
                    ],
                    countries=["PK"],
                    classifier_version="t",
                )
            )
        await runtime.store.upsert_items(items)
        for sort in ("time", "score"):
            seen: list[str] = []
            params: dict[str, str | int] = {"sector": "culture_media", "min_score": 0.9, "limit": 2, "sort": sort}
            for _ in range(20):
                page = (await api.get("/api/v1/events", params=params)).json()
                seen += [i["id"] for i in page["items"]]
                if not page["next_cursor"]:
                    break
                params["cursor"] = page["next_cursor"]
            assert sorted(seen) == [f"itm_{n:03d}" for n in range(0, 23, 4)], (sort, seen)
        rss = await api.get("/api/v1/events.rss", params={"sector": "culture_media", "min_score": 0.9})
        assert rss.text.count("<item>") == 6
        # Without a sector, min_score is the item's best score, as before.
        everything = await api.get("/api/v1/events", params={"min_score": 0.9, "limit": 200})
        assert len(everything.json()["items"]) == 23


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [(410, b"", "HTTP 410 Gone"), (500, b"db down\n", "HTTP 500 Internal Server Error: db down")],
)
async def test_a_webhook_error_reads_whole_without_a_body(status: int, body: bytes, error: str) -> None:
    # An empty answer left "HTTP 410: " in the delivery's last_error.
    from datetime import UTC, datetime

    from services.alerts.webhook import new_secret, send_webhook
    from shared.models import Subscription

    sub = Subscription(id="sub_1", channel="webhook", webhook_url="http://127.0.0.1:9/hook", secret=new_secret())
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body))
    async with httpx.AsyncClient(transport=transport) as client:
        outcome = await send_webhook(client, sub, "msg_1", {"x": 1}, datetime.now(UTC))
    assert outcome.error is not None and outcome.error.strip() == error


async def test_probes_answer_head(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz"):
        answer = await client.head(path)
        assert answer.status_code == 200 and answer.content == b"", path


def test_a_host_naming_an_address_this_machine_lacks_still_listens_on_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "localhost" names ::1 too in Docker's /etc/hosts, where IPv6 may be off: binding each
    # address must not fail the start while one of them can be used.
    real = socket.getaddrinfo

    def addresses(host: str | None, port: int, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        if host == "localhost":
            v6 = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::1", port, 0, 0))  # not ours
            return [v6, (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", addresses)
    sockets = cli._listening_sockets("localhost", 0)
    try:
        assert [s.getsockname()[0] for s in sockets] == ["127.0.0.1"]
    finally:
        for s in sockets:
            s.close()


async def test_a_feed_with_a_sector_score_reads_on_past_many_weak_items(tmp_path: Path) -> None:
    # 300 newer items weak in energy (strong in transport) hid an older strong energy story:
    # the feed read 5 store pages and came out empty, and a feed reader follows no cursor
    # (the audit of 2026-12-05). A feed now reads up to FEED_SCORE_SCANS pages.
    from datetime import UTC, datetime, timedelta

    from shared.models import ClassifiedItem, SectorScore

    now = datetime(2026, 12, 1, tzinfo=UTC)

    def story(n: int, energy: float) -> ClassifiedItem:
        return ClassifiedItem(
            id=f"itm_{n:03d}",
            source_id="src",
            source_url="http://s",
            title=f"Story {n}",
            published_at=now - timedelta(minutes=n),
            fetched_at=now,
            sectors=["transport", "energy"],
            sector_scores=[
                SectorScore(id="transport", score=0.99, terms=[]),
                SectorScore(id="energy", score=energy, terms=[]),
            ],
            countries=["PK"],
            classifier_version="t",
        )

    runtime = Runtime(load_settings(sqlite_path=tmp_path / "f.sqlite3", api_key="admin-key"), ALL_ROLES)
    async with runtime_client(runtime) as api:
        await runtime.store.upsert_items([story(n, 0.3) for n in range(300)] + [story(400, 0.95)])
        params = {"sector": "energy", "min_score": 0.9}
        rss = await api.get("/api/v1/events.rss", params=params)
        assert rss.text.count("<item>") == 1 and "Story 400" in rss.text
        atom = await api.get("/api/v1/events.atom", params=params)
        assert atom.text.count("<entry>") == 1
        # The JSON API says with its cursor that more may follow; following it finds the story.
        seen: list[str] = []
        query: dict[str, str | float] = dict(params)
        for _ in range(20):
            page = (await api.get("/api/v1/events", params=query)).json()
            seen += [i["id"] for i in page["items"]]
            if not page["next_cursor"]:
                break
            query["cursor"] = page["next_cursor"]
        assert seen == ["itm_400"]
