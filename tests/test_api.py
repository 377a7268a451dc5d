"""The HTTP API in embedded mode: auth, validation (422 with a message), secrets shown once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.app import create_app
from services.runtime import ALL_ROLES, Runtime
from shared.settings import load_settings

KEY = {"Authorization": "Bearer api-test-key"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(
        sqlite_path=tmp_path / "c.sqlite3",
        api_key="api-test-key",
        poll_interval_s=60,
        allow_private_networks=["127.0.0.0/8"],
    )
    runtime = Runtime(settings, ALL_ROLES)
    app = create_app(runtime)
    await runtime.start()  # what the app's lifespan does under uvicorn
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://corridor") as c:
            yield c
    finally:
        await runtime.stop()


async def test_ops_routes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"started": True, "store": True, "bus": True}
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200 and "corridor_ingest_fetches" in metrics.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/v1/sources", {"url": "https://example.org/feed"}),
        ("post", "/api/v1/subscriptions", {"email": "a@example.org"}),
        ("get", "/api/v1/subscriptions", None),
        ("delete", "/api/v1/subscriptions/sub_x", None),
        ("get", "/api/v1/deliveries", None),
    ],
)
async def test_key_required(client: httpx.AsyncClient, method: str, path: str, body: dict[str, object] | None) -> None:
    kwargs = {"json": body} if body is not None else {}
    assert (await client.request(method, path, **kwargs)).status_code == 401  # type: ignore[arg-type]
    wrong = {"Authorization": "Bearer nope"}
    assert (await client.request(method, path, headers=wrong, **kwargs)).status_code == 401  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/sources", {}, "url"),
        ("/api/v1/sources", {"url": "ftp://example.org/feed"}, "url"),
        ("/api/v1/sources", {"url": "http://10.0.0.1/feed"}, "url"),
        ("/api/v1/sources", {"url": "http://169.254.169.254/latest"}, "url"),
        ("/api/v1/sources", {"url": "https://example.org/f", "interval_s": "soon"}, "interval_s"),
        ("/api/v1/subscriptions", {}, None),
        ("/api/v1/subscriptions", {"email": "not-an-email"}, "email"),
        ("/api/v1/subscriptions", {"email": "a@example.org", "webhook_url": "https://x.example/h"}, None),
        ("/api/v1/subscriptions", {"webhook_url": "javascript:alert(1)"}, None),
        ("/api/v1/subscriptions", {"email": "a@example.org", "sectors": ["cheese"]}, "sectors"),
        ("/api/v1/subscriptions", {"email": "a@example.org", "countries": ["FR"]}, "countries"),
        ("/api/v1/subscriptions", {"webhook_url": "http://192.168.1.10/hook"}, "webhook_url"),
        # A language is a tag ("en", "zh-cn"): "english" matched nothing (review of 2026-12-05).
        ("/api/v1/sources", {"url": "https://example.org/f", "language": "zz9"}, "language"),
        ("/api/v1/subscriptions", {"email": "a@example.org", "languages": ["english"]}, "languages"),
    ],
)
async def test_invalid_payloads_get_422_with_a_message(
    client: httpx.AsyncClient, path: str, body: dict[str, object], field: str | None
) -> None:
    response = await client.post(path, json=body, headers=KEY)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail and all(d["msg"] for d in detail)
    if field:
        assert any(field in d["loc"] for d in detail), detail


async def test_language_tags_with_a_region_are_taken(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/events?language=zh-cn")).status_code == 200
    created = await client.post(
        "/api/v1/sources", json={"url": "http://127.0.0.1:9/zh.xml", "language": "zh-cn"}, headers=KEY
    )
    assert created.status_code == 201 and created.json()["language"] == "zh-cn", created.text


async def test_invalid_json_gets_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/sources", content=b"{nope", headers={**KEY, "content-type": "application/json"}
    )
    assert response.status_code == 422


@pytest.mark.parametrize(
    "query", ["sector=cheese", "country=FR", "limit=0", "limit=100000", "cursor=%%%", "language=english"]
)
async def test_invalid_event_filters_get_422(client: httpx.AsyncClient, query: str) -> None:
    assert (await client.get(f"/api/v1/events?{query}")).status_code == 422


async def test_subscription_lifecycle_and_secret_shown_once(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/api/v1/subscriptions",
        headers=KEY,
        json={"webhook_url": "http://127.0.0.1:9/hook", "sectors": ["energy"], "countries": ["KZ"], "extra": "ignored"},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secret"].startswith("whsec_") and body["channel"] == "webhook"
    sub_id = body["id"]
    listed = (await client.get("/api/v1/subscriptions", headers=KEY)).json()
    assert [s["id"] for s in listed] == [sub_id] and "secret" not in listed[0]
    one = (await client.get(f"/api/v1/subscriptions/{sub_id}", headers=KEY)).json()
    assert "secret" not in one and one["sectors"] == ["energy"]
    assert (await client.delete(f"/api/v1/subscriptions/{sub_id}", headers=KEY)).status_code == 204
    assert (await client.delete(f"/api/v1/subscriptions/{sub_id}", headers=KEY)).status_code == 404


async def test_sources_create_list_conflict(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/v1/sources", headers=KEY, json={"url": "http://127.0.0.1:9/feed.xml"})
    assert created.status_code == 201
    assert created.json()["next_check_at"]
    again = await client.post("/api/v1/sources", headers=KEY, json={"url": "http://127.0.0.1:9/feed.xml"})
    assert again.status_code == 409
    listed = (await client.get("/api/v1/sources")).json()
    assert [s["url"] for s in listed] == ["http://127.0.0.1:9/feed.xml"]
    assert (await client.get("/api/v1/sources/src_nope")).status_code == 404


async def test_events_empty_and_missing(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/events?sector=energy&country=PK")).json() == {"items": [], "next_cursor": None}
    assert (await client.get("/api/v1/events/itm_nope")).status_code == 404


async def test_source_management(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/api/v1/sources",
        headers=KEY,
        json={"url": "http://127.0.0.1:9/list", "kind": "html", "selectors": {"item": "article"}},
    )
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    assert created.json()["selectors"] == {
        "item": "article",
        "link": None,
        "title": None,
        "date": None,
        "summary": None,
    }
    no_selectors = await client.post(
        "/api/v1/sources", headers=KEY, json={"url": "http://127.0.0.1:9/x", "kind": "html"}
    )
    assert no_selectors.status_code == 422 and no_selectors.json()["detail"][0]["loc"] == ["body", "selectors"]
    # A selector selectolax cannot parse would fail every poll: refused when given, on POST and PATCH.
    unparsable = {"url": "http://127.0.0.1:9/y", "kind": "html", "selectors": {"item": "[[["}}
    bad_selector = await client.post("/api/v1/sources", headers=KEY, json=unparsable)
    assert bad_selector.status_code == 422 and "invalid CSS selector" in bad_selector.text
    bad_patch_selector = await client.patch(f"/api/v1/sources/{sid}", headers=KEY, json={"selectors": {"item": "[[["}})
    assert bad_patch_selector.status_code == 422
    gdelt = await client.post(
        "/api/v1/sources",
        headers=KEY,
        json={"url": "http://127.0.0.1:9/api/v2/doc/doc?query=Gwadar&maxrecords=900", "kind": "gdelt"},
    )
    assert gdelt.status_code == 201 and "maxrecords=250" in gdelt.json()["url"]
    paused = await client.post(f"/api/v1/sources/{sid}/pause", headers=KEY)
    assert paused.status_code == 200 and paused.json()["active"] is False
    resumed = await client.post(f"/api/v1/sources/{sid}/resume", headers=KEY)
    assert resumed.json()["active"] is True
    patched = await client.patch(f"/api/v1/sources/{sid}", headers=KEY, json={"name": "MFA", "interval_s": 3600})
    assert patched.status_code == 200 and patched.json()["name"] == "MFA" and patched.json()["interval_s"] == 3600
    bad_patch = await client.patch(f"/api/v1/sources/{sid}", headers=KEY, json={"interval_s": 1})
    assert bad_patch.status_code == 422
    unknown_field = await client.patch(f"/api/v1/sources/{sid}", headers=KEY, json={"url": "http://evil"})
    assert unknown_field.status_code == 422
    assert (await client.post(f"/api/v1/sources/{sid}/poll", headers=KEY)).status_code == 202
    assert (await client.post(f"/api/v1/sources/{sid}/poll")).status_code == 401
    assert (await client.delete(f"/api/v1/sources/{sid}", headers=KEY)).status_code == 204
    assert (await client.delete(f"/api/v1/sources/{sid}", headers=KEY)).status_code == 404
    assert (await client.post("/api/v1/sources/src_nope/pause", headers=KEY)).status_code == 404


async def test_subscription_filters_rotation_pause_and_links(client: httpx.AsyncClient) -> None:
    fields = {
        "webhook_url": "http://127.0.0.1:9/hook",
        "sectors": ["transport"],
        "countries": ["PK", "KZ"],
        "bilateral_only": True,
        "min_score": 2,
        "keywords": ["Gwadar"],
        "languages": ["en"],
        "cadence": "daily",
        "digest_time": "07:30",
        "timezone": "Asia/Karachi",
        "owner_email": "ops@example.org",
    }
    # Digests are email only: a webhook (or kafka) subscription with a digest cadence is refused.
    refused = await client.post("/api/v1/subscriptions", headers=KEY, json=fields)
    assert refused.status_code == 422 and "email only" in refused.text, refused.text
    created = await client.post("/api/v1/subscriptions", headers=KEY, json={**fields, "cadence": "immediate"})
    assert created.status_code == 201, created.text
    body = created.json()
    sid, first_secret = body["id"], body["secret"]
    assert body["cadence"] == "immediate" and body["timezone"] == "Asia/Karachi" and body["confirmed"] is True
    rotated = await client.post(f"/api/v1/subscriptions/{sid}/rotate-secret", headers=KEY)
    assert rotated.status_code == 200 and rotated.json()["secret"] not in (None, first_secret)
    assert rotated.json()["previous_secret_expires_at"]
    shown = (await client.get(f"/api/v1/subscriptions/{sid}", headers=KEY)).json()
    assert "secret" not in shown and "previous_secret" not in shown
    assert (await client.post(f"/api/v1/subscriptions/{sid}/pause", headers=KEY)).json()["active"] is False
    assert (await client.post(f"/api/v1/subscriptions/{sid}/resume", headers=KEY)).json()["active"] is True
    patched = await client.patch(f"/api/v1/subscriptions/{sid}", headers=KEY, json={"cadence": "hourly"})
    assert patched.status_code == 422 and "email only" in patched.text, "no digests on a webhook"
    assert (await client.get(f"/api/v1/subscriptions/{sid}", headers=KEY)).json()["cadence"] == "immediate"
    for bad in ({"timezone": "Mars/Olympus"}, {"digest_time": "25:00"}, {"cadence": "weekly"}, {"min_score": -1}):
        assert (await client.patch(f"/api/v1/subscriptions/{sid}", headers=KEY, json=bad)).status_code == 422, bad
    kafka = await client.post("/api/v1/subscriptions", headers=KEY, json={"channel": "kafka", "sectors": ["energy"]})
    assert kafka.status_code == 201 and kafka.json()["channel"] == "kafka" and kafka.json()["secret"] is None
    mail = await client.post("/api/v1/subscriptions", headers=KEY, json={"email": "a@example.org"})
    mail_id = mail.json()["id"]
    assert mail.json()["confirmed"] is False
    confirmations = (await client.get(f"/api/v1/deliveries?subscription_id={mail_id}", headers=KEY)).json()
    assert [d["item_id"] for d in confirmations] == ["confirm"]
    # Keyless links: a wrong token is refused, GET changes nothing, POST with the right token acts.
    from pydantic import SecretStr

    from services.alerts.links import link_token
    from shared.settings import PLACEHOLDER_LINK_SECRET

    token = link_token(SecretStr(PLACEHOLDER_LINK_SECRET), "unsubscribe", mail_id)
    assert (await client.post(f"/api/v1/subscriptions/{mail_id}/unsubscribe?token=nope")).status_code == 404
    assert (await client.get(f"/api/v1/subscriptions/{mail_id}/unsubscribe?token={token}")).status_code == 200
    assert (await client.get(f"/api/v1/subscriptions/{mail_id}", headers=KEY)).json()["active"] is True
    one_click = await client.post(
        f"/api/v1/subscriptions/{mail_id}/unsubscribe?token={token}",
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200
    assert (await client.get(f"/api/v1/subscriptions/{mail_id}", headers=KEY)).json()["active"] is False
    # The recipient withdrew consent: the admin cannot switch them back on (a review found resume did).
    resumed = await client.post(f"/api/v1/subscriptions/{mail_id}/resume", headers=KEY)
    assert resumed.status_code == 409 and "unsubscribed" in resumed.json()["detail"]
    assert (await client.get(f"/api/v1/subscriptions/{mail_id}", headers=KEY)).json()["active"] is False
    redelivered = await client.post(f"/api/v1/deliveries/{confirmations[0]['id']}/redeliver", headers=KEY)
    assert redelivered.status_code == 202 and redelivered.json()["status"] == "pending"
    assert (await client.post("/api/v1/deliveries/msg_nope/redeliver", headers=KEY)).status_code == 404
    assert (
        await client.post("/api/v1/subscriptions", headers=KEY, json={"channel": "kafka", "email": "a@b.org"})
    ).status_code == 422


async def test_link_pages_escape_the_token(client: httpx.AsyncClient) -> None:
    page = await client.get("/api/v1/subscriptions/sub_x/unsubscribe", params={"token": "'><script>alert(1)</script>"})
    assert page.status_code == 200
    assert "<script>" not in page.text and "&lt;script&gt;" in page.text


async def test_an_unsubscribe_landing_between_resumes_read_and_write_wins(tmp_path: Path) -> None:
    """Resume reads the subscription, then writes it. A recipient's unsubscribe landing between
    the two must not be undone (a review found the check and the write apart): resume answers
    409 and the subscription stays unsubscribed."""
    from shared.models import UNSUBSCRIBED, Subscription

    settings = load_settings(sqlite_path=tmp_path / "c.sqlite3", api_key="api-test-key", poll_interval_s=60)
    runtime = Runtime(settings, ALL_ROLES)
    app = create_app(runtime)
    await runtime.start()
    store = runtime.store
    try:
        await store.insert_subscription(
            Subscription(id="sub_race", channel="email", email="a@example.org", active=False, disabled_reason="paused")
        )
        read = store.get_subscription
        raced = False

        async def read_then_recipient_unsubscribes(subscription_id: str) -> Subscription | None:
            nonlocal raced
            found = await read(subscription_id)
            if not raced:  # the recipient's one-click POST lands right after resume's read
                raced = True
                await store.update_subscription(subscription_id, {"active": False, "disabled_reason": UNSUBSCRIBED})
            return found

        store.get_subscription = read_then_recipient_unsubscribes  # type: ignore[method-assign]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://corridor") as client:
            resumed = await client.post("/api/v1/subscriptions/sub_race/resume", headers=KEY)
            assert raced and resumed.status_code == 409, resumed.text
            assert "unsubscribed" in resumed.json()["detail"]
            after = (await client.get("/api/v1/subscriptions/sub_race", headers=KEY)).json()
            assert after["active"] is False and after["disabled_reason"] == UNSUBSCRIBED
            assert (await client.post("/api/v1/subscriptions/sub_nope/resume", headers=KEY)).status_code == 404
    finally:
        await runtime.stop()
