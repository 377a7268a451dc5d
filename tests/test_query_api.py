"""The query API: event filters, search, sort, cursors, duplicates, sector timelines, RSS and
Atom out, and the read/admin key scopes."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import httpx
import pytest

from services.app import create_app
from services.runtime import ALL_ROLES, Runtime
from shared.models import ClassifiedItem, DuplicateRef, SectorScore
from shared.settings import load_settings

NOW = datetime.now(UTC).replace(microsecond=0)
ADMIN = {"Authorization": "Bearer admin-key"}
READ = {"Authorization": "Bearer read-key"}


def event(
    n: int, title: str, sectors: list[str], countries: list[str], score: float, days_ago: int, **kw: object
) -> ClassifiedItem:
    return ClassifiedItem.model_validate(
        {
            "id": f"itm_{n:03d}",
            "source_id": kw.pop("source_id", "src_dawn"),
            "source_url": "http://s",
            "url": f"https://news.example/{n}",
            "title": title,
            "summary": f"{title}. More text.",
            "published_at": NOW - timedelta(days=days_ago, minutes=n),
            "fetched_at": NOW,
            "sectors": sectors,
            "sector_scores": [SectorScore(id=s, score=score, terms=[]) for s in sectors],
            "countries": countries,
            "bilateral": len(countries) == 2,
            "language": kw.pop("language", "en"),
            "classifier_version": "t",
            **kw,
        }
    )


async def make_client(tmp_path: Path, **settings: object) -> tuple[httpx.AsyncClient, Runtime]:
    runtime = Runtime(load_settings(sqlite_path=tmp_path / "q.sqlite3", api_key="admin-key", **settings), ALL_ROLES)
    await runtime.start()
    for item in [
        event(1, "Rail corridor to Gwadar agreed", ["transport", "maritime"], ["PK", "KZ"], 5.0, 1),
        event(2, "Hydropower plant opens", ["energy"], ["PK"], 2.0, 3),
        event(
            3,
            "Wheat exports to Afghanistan",
            ["agriculture", "trade_investment"],
            ["KZ"],
            3.0,
            10,
            source_id="src_kz",
            language="ru",
        ),
        event(4, "Rail freight tariffs cut", ["transport"], ["KZ"], 1.5, 20),
        event(5, "Cricket series ends", [], ["PK"], 0.0, 2),
    ]:
        await runtime.store.upsert_item(item)
    await runtime.store.add_duplicates(
        [
            DuplicateRef(
                id="itm_dup",
                item_id="itm_001",
                source_id="src_tribune",
                url="https://tribune.example/1",
                reason="near_duplicate",
            )
        ]
    )
    app = create_app(runtime)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://corridor"), runtime


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    client, runtime = await make_client(tmp_path)
    async with client:
        yield client
    await runtime.stop()


async def ids(api: httpx.AsyncClient, query: str) -> list[str]:
    response = await api.get(f"/api/v1/events?{query}")
    assert response.status_code == 200, response.text
    return [i["id"] for i in response.json()["items"]]


async def test_filters(api: httpx.AsyncClient) -> None:
    assert await ids(api, "") == ["itm_001", "itm_005", "itm_002", "itm_003", "itm_004"]
    assert await ids(api, "sector=transport") == ["itm_001", "itm_004"]
    assert await ids(api, "sector=energy&sector=agriculture") == ["itm_002", "itm_003"]
    assert await ids(api, "country=KZ") == ["itm_001", "itm_003", "itm_004"]
    assert await ids(api, "bilateral=true") == ["itm_001"]
    assert await ids(api, "source=src_kz") == ["itm_003"] and await ids(api, "language=ru") == ["itm_003"]
    since = (NOW - timedelta(days=5)).isoformat().replace("+00:00", "Z")
    assert await ids(api, f"since={since}") == ["itm_001", "itm_005", "itm_002"]
    assert await ids(api, f"until={since}") == ["itm_003", "itm_004"]
    assert await ids(api, "min_score=2.5") == ["itm_001", "itm_003"]
    assert await ids(api, "q=rail") == ["itm_001", "itm_004"]
    assert await ids(api, "q=RAIL+tariffs") == ["itm_004"]
    assert await ids(api, "sort=score") == ["itm_001", "itm_003", "itm_002", "itm_004", "itm_005"]


async def test_cursor_pages_through_everything_once(api: httpx.AsyncClient) -> None:
    for sort in ("time", "score"):
        seen: list[str] = []
        cursor = ""
        while True:
            page = (await api.get(f"/api/v1/events?limit=2&sort={sort}{cursor}")).json()
            seen += [i["id"] for i in page["items"]]
            if not page["next_cursor"]:
                break
            cursor = f"&cursor={page['next_cursor']}"
        assert sorted(seen) == ["itm_001", "itm_002", "itm_003", "itm_004", "itm_005"] and len(seen) == 5, sort
    first = (await api.get("/api/v1/events?limit=2&sort=time")).json()["next_cursor"]
    assert (await api.get(f"/api/v1/events?sort=score&cursor={first}")).status_code == 422


async def test_event_carries_duplicates_and_evidence_fields(api: httpx.AsyncClient) -> None:
    one = (await api.get("/api/v1/events/itm_001")).json()
    assert [d["source_id"] for d in one["duplicates"]] == ["src_tribune"]
    assert one["sector_scores"][0]["score"] == 5.0 and one["countries"] == ["PK", "KZ"] and one["url"]
    listed = (await api.get("/api/v1/events?sector=maritime")).json()["items"][0]
    assert listed["duplicates"][0]["url"] == "https://tribune.example/1"


@pytest.mark.parametrize(
    "query",
    [
        "sector=cheese",
        "country=FR",
        "bilateral=maybe",
        "since=yesterday",
        "since=2026-03-01T00:00:00",
        "min_score=-1",
        "q=a",
        "q=%20%20",
        "sort=random",
        "limit=0",
        "limit=201",
        "cursor=%%%",
        "cursor=abc",
        # a well-formed cursor whose time overflows once converted to UTC (a 500 before)
        "cursor=" + base64.urlsafe_b64encode(b'["time", "9999-12-31T23:59:59-05:00", "x"]').decode().rstrip("="),
        # Found by the API review of 2026-12-05 (each was answered 200):
        "sectors=energy",  # a mistyped filter was ignored: the unfiltered list read as the filtered one
        "min-score=0.9",
        "agreement_id=customs-cooperation",
        "q=alpha+bravo+charlie+delta+echo+foxtrot+golf+hotel+zulu",  # the ninth word was dropped
        "since=2026-03-02T00:00:00Z&until=2026-03-01T00:00:00Z",
        "min_score=nan",
        "sort=score&cursor=" + base64.urlsafe_b64encode(b'["score", NaN, "x"]').decode().rstrip("="),
    ],
)
async def test_invalid_parameters_get_422_with_the_field(api: httpx.AsyncClient, query: str) -> None:
    response = await api.get(f"/api/v1/events?{query}")
    assert response.status_code == 422, (query, response.text)
    detail = response.json()["detail"]
    assert detail[0]["loc"][0] == "query" and detail[0]["msg"]


async def test_sector_timeline(api: httpx.AsyncClient) -> None:
    body = (await api.get("/api/v1/sectors?weeks=8")).json()
    assert len(body["weeks"]) == 8 and body["weeks"] == sorted(body["weeks"])
    by_id = {s["id"]: s for s in body["sectors"]}
    assert by_id["transport"]["total"] == 2 and by_id["energy"]["total"] == 1 and by_id["pharmaceuticals"]["total"] == 0
    assert sum(w["count"] for w in by_id["transport"]["weeks"]) == 2
    kz = {s["id"]: s["total"] for s in (await api.get("/api/v1/sectors?weeks=8&country=KZ")).json()["sectors"]}
    assert kz["transport"] == 2 and kz["energy"] == 0 and kz["agriculture"] == 1
    assert (await api.get("/api/v1/sectors?weeks=0")).status_code == 422


async def test_rss_and_atom_follow_the_same_query(api: httpx.AsyncClient) -> None:
    rss = await api.get("/api/v1/events.rss?sector=transport")
    assert rss.status_code == 200 and rss.headers["content-type"].startswith("application/rss+xml")
    parsed = feedparser.parse(rss.content)
    assert not parsed.bozo and [e.title for e in parsed.entries] == [
        "Rail corridor to Gwadar agreed",
        "Rail freight tariffs cut",
    ]
    atom = feedparser.parse((await api.get("/api/v1/events.atom?q=hydropower")).content)
    assert atom.version.startswith("atom") and [e.title for e in atom.entries] == ["Hydropower plant opens"]
    assert (await api.get("/api/v1/events.rss?sector=cheese")).status_code == 422


async def test_read_and_admin_scopes(tmp_path: Path) -> None:
    client, runtime = await make_client(tmp_path, public_reads=False, read_api_keys="read-key,other-read")
    async with client:
        for path in (
            "/api/v1/events",
            "/api/v1/events/itm_001",
            "/api/v1/sectors",
            "/api/v1/sources",
            "/api/v1/events.rss",
        ):
            assert (await client.get(path)).status_code == 401, path
            assert (await client.get(path, headers=READ)).status_code == 200, path
            assert (await client.get(path, headers=ADMIN)).status_code == 200, path
        assert (await client.get("/api/v1/events.rss?key=read-key")).status_code == 200, "feed readers use ?key="
        assert (await client.get("/api/v1/subscriptions", headers=READ)).status_code == 401, "read is not admin"
        assert (
            await client.post("/api/v1/sources", headers=READ, json={"url": "https://x.example/f"})
        ).status_code == 401
        assert (await client.get("/healthz")).status_code == 200
    await runtime.stop()


async def test_store_unavailable_is_503_with_retry_after(tmp_path: Path) -> None:
    from shared.errors import StoreUnavailable

    client, runtime = await make_client(tmp_path)

    async def broken(*args: object, **kwargs: object) -> object:
        raise StoreUnavailable("list_items: NetworkTimeout: 127.0.0.1:27017: timed out")

    runtime.store.list_items = broken  # type: ignore[method-assign]
    async with client:
        response = await client.get("/api/v1/events")
    await runtime.stop()
    assert response.status_code == 503 and response.json() == {"detail": "store unavailable, try again later"}
    assert response.headers["retry-after"] == "5"


async def test_a_query_over_its_time_budget_is_503_with_retry_after(tmp_path: Path) -> None:
    import asyncio

    client, runtime = await make_client(tmp_path, query_timeout_s=0.3)
    calls = 0

    async def slow(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        await asyncio.sleep(30)
        raise AssertionError("not cancelled")

    runtime.store.list_items = slow  # type: ignore[method-assign]
    runtime.store.sector_counts = slow  # type: ignore[method-assign]
    async with client:
        events = await client.get("/api/v1/events?q=rail")
        sectors = await client.get("/api/v1/sectors")
        fine = await client.get("/api/v1/events/itm_001")
    await runtime.stop()
    for response in (events, sectors):
        assert response.status_code == 503 and response.headers["retry-after"] == "10"
        assert "took longer than 0.3 s" in response.json()["detail"]
    assert calls == 2 and fine.status_code == 200


async def test_what_the_api_review_of_2026_12_05_found(tmp_path: Path) -> None:
    """A mistyped parameter names the one meant; HEAD answers as GET does; a feed names itself
    on the public base URL (a proxy's Host has no port) and by its agreement; the sector
    timeline's total counts only the weeks it lists."""
    client, runtime = await make_client(tmp_path, public_base_url="https://corridor.example:8443")
    await runtime.store.upsert_item(event(9, "Port plan for next year", ["maritime"], ["PK"], 1.0, -200))
    from shared.models import AgreementLink

    link = [AgreementLink(id="railways-cooperation-mou", area="railways", score=2.0, terms=["KTZ"])]
    before_signing = (NOW - datetime(2026, 1, 10, tzinfo=UTC)).days
    for n, days_ago in ((10, before_signing), (11, before_signing + 3), (12, 5)):
        await runtime.store.upsert_item(
            event(
                n, f"Railway report {n}", ["transport"], ["PK", "KZ"], 1.0, days_ago, agreements=link, stage="planning"
            )
        )
    try:
        async with client:
            typo = await client.get("/api/v1/events?sectors=energy")
            assert typo.status_code == 422 and "did you mean sector?" in typo.json()["detail"][0]["msg"]
            keyed = await client.get("/api/v1/events?sector=energy&key=anything")
            assert keyed.status_code == 200, "key: the read key of feed readers"
            # What links pick up on their way is not a filter; one record's page has nothing to filter.
            for path in (
                "/api/v1/events?sector=energy&utm_source=newsletter&_=1700000000",
                "/api/v1/events.rss?utm_medium=feedly",
                "/api/v1/events/itm_001?utm_source=newsletter&ref=mail",
                "/api/v1/agreements/railways-cooperation-mou?fbclid=x",
            ):
                assert (await client.get(path)).status_code == 200, path
            for path in ("/api/v1/events?sector=transport", "/api/v1/events.rss", "/api/v1/agreements.ics"):
                got, head = await client.get(path), await client.head(path)
                assert head.status_code == 200 and head.content == b"", path
                assert head.headers["content-length"] == got.headers["content-length"], path
            assert (await client.head("/api/v1/events/nope")).status_code == 404
            # DTSTAMP is each entry's last change (no METHOD): every poll said every event changed.
            first, second = await client.get("/api/v1/agreements.ics"), await client.get("/api/v1/agreements.ics")
            assert first.content == second.content and b"DTSTAMP:20260204T000000Z" in first.content
            atom = await client.get(
                "/api/v1/events.atom?agreement=railways-cooperation-mou&key=secret", headers={"Host": "localhost"}
            )
            parsed = feedparser.parse(atom.content)
            assert (
                parsed.feed.id == "https://corridor.example:8443/api/v1/events.atom?agreement=railways-cooperation-mou"
            )
            assert "secret" not in atom.text and "localhost" not in atom.text
            assert parsed.feed.title == "Corridor — MoU on railway sector cooperation"
            # The detail counts and lists from the signing alike (reports before it rode along in a
            # source's row once it also reported after; the timeline listed them).
            detail = (await client.get("/api/v1/agreements/railways-cooperation-mou")).json()
            assert detail["items"] == len(detail["timeline"]) == 1
            assert [t["id"] for t in detail["timeline"]] == ["itm_012"]
            maritime = {s["id"]: s for s in (await client.get("/api/v1/sectors?weeks=4")).json()["sectors"]}["maritime"]
            assert maritime["total"] == sum(w["count"] for w in maritime["weeks"]) == 1, (
                "the item dated next year is in no week"
            )
    finally:
        await runtime.stop()  # also when an assertion fails: a runtime left running hangs pytest
