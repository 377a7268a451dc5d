"""End to end: a real feed travels fetch → classify → store → match → webhook + email.

distributed: ingest, classifier and alerts as three processes on the local Kafka broker and
the MongoDB-wire test server. embedded: `corridor run all`, one process, in-process bus, SQLite.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.conftest import AUTH, URDU_FEED, corridor_env, get_json
from helpers import CorridorProcess, FeedServer, Route, SmtpSink, WebhookReceiver, wait_until
from standardwebhooks.webhooks import Webhook

SECTOR = "defence_security"


def start_corridor(mode: str, launch: Any, env: dict[str, str]) -> tuple[str, str, str]:
    """Start Corridor; returns the base URLs serving (sources, events, subscriptions)."""
    if mode == "embedded":
        base = launch("all", env).base
        return base, base, base
    alerts: CorridorProcess = launch("alerts", env)
    classifier: CorridorProcess = launch("classifier", env)
    ingest: CorridorProcess = launch("ingest", env)
    return ingest.base, classifier.base, alerts.base


def all_events(events_base: str, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query: dict[str, str | int] = {"limit": 10, **params}
        if cursor:
            query["cursor"] = cursor
        page: Any = get_json(f"{events_base}/api/v1/events", **query)
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items


@pytest.mark.e2e
@pytest.mark.parametrize(
    "mode", [pytest.param("distributed", marks=[pytest.mark.kafka, pytest.mark.mongo]), "embedded"]
)
def test_feed_item_reaches_subscribers(
    mode: str,
    request: pytest.FixtureRequest,
    unique: str,
    tmp_path: Path,
    launch: Any,
    feed_server: FeedServer,
    receiver: WebhookReceiver,
    smtp: SmtpSink,
) -> None:
    env = corridor_env(mode, request, unique, tmp_path, smtp)
    sources_base, events_base, subs_base = start_corridor(mode, launch, env)
    feed_server.routes["/urdu.xml"] = Route(body=URDU_FEED.read_bytes())

    hook = httpx.post(
        f"{subs_base}/api/v1/subscriptions",
        headers=AUTH,
        timeout=10,
        json={"webhook_url": receiver.url, "sectors": [SECTOR], "countries": ["PK"]},
    )
    assert hook.status_code == 201, hook.text
    secret = hook.json()["secret"]
    assert secret.startswith("whsec_")
    mail = httpx.post(
        f"{subs_base}/api/v1/subscriptions",
        headers=AUTH,
        timeout=10,
        json={"email": "analyst@example.org", "sectors": [SECTOR]},
    )
    assert mail.status_code == 201, mail.text
    assert mail.json()["confirmed"] is False, "email needs double opt-in"
    wait_until(lambda: len(smtp.messages) >= 1, 30, "the confirmation email")
    confirmation = smtp.messages.pop(0)
    assert "Confirm" in confirmation["Subject"]
    link = re.search(r"(/api/v1/subscriptions/\S+/confirm\?token=\S+)", confirmation.get_content())
    assert link is not None
    assert httpx.get(f"{subs_base}{link.group(1)}", timeout=10).status_code == 200  # a page; confirms nothing
    assert httpx.post(f"{subs_base}{link.group(1)}", timeout=10).status_code == 200
    assert httpx.post(f"{subs_base}{link.group(1)[:-4]}AAAA", timeout=10).status_code == 404
    listed: Any = get_json(f"{subs_base}/api/v1/subscriptions")
    assert [s["confirmed"] for s in listed] == [True, True]
    assert all("secret" not in s for s in listed), "the secret is shown only once"

    created = httpx.post(
        f"{sources_base}/api/v1/sources", headers=AUTH, json={"url": feed_server.url("/urdu.xml")}, timeout=10
    )
    assert created.status_code == 201, created.text

    wait_until(lambda: len(all_events(events_base)) == 26, 90, "all 26 feed items to be classified and stored")
    events = all_events(events_base)
    matching = {e["id"] for e in events if SECTOR in e["sectors"]}
    assert {e["id"] for e in all_events(events_base, sector=SECTOR)} == matching
    assert 0 < len(matching) < len(events), "the feed must have items in and out of the sector"
    assert all("PK" in e["countries"] for e in events if e["id"] in matching)

    wait_until(
        lambda: len(receiver.snapshot()) >= len(matching) and len(smtp.messages) >= len(matching),
        60,
        "webhooks and emails for every matching item",
    )
    time.sleep(2)  # anything extra (a duplicate, an item of another sector) would arrive now
    received = receiver.snapshot()
    assert len(received) == len(matching), "exactly one webhook per matching item"
    verifier = Webhook(secret)
    delivered_items = []
    for r in received:
        body = verifier.verify(r.body, r.headers)  # raises unless the Standard Webhooks signature is valid
        delivered_items.append(body["item"]["id"])
        assert SECTOR in body["item"]["sectors"]
        assert body["item"]["evidence"], "alerts carry the evidence"
    assert Counter(delivered_items) == Counter(matching)
    assert len({r.webhook_id for r in received}) == len(received)

    assert len(smtp.messages) == len(matching)
    assert {m["X-Corridor-Delivery-Id"] for m in smtp.messages}.isdisjoint({r.webhook_id for r in received})
    assert all(m["To"] == "analyst@example.org" for m in smtp.messages)
    assert all(m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for m in smtp.messages)

    deliveries: Any = get_json(f"{subs_base}/api/v1/deliveries", limit=200)
    assert len(deliveries) == 2 * len(matching) + 1  # + the confirmation email
    assert {d["status"] for d in deliveries} == {"delivered"}

    source: Any = get_json(f"{sources_base}/api/v1/sources")
    assert source[0]["last_status"] == "ok" and source[0]["items_seen"] == 26
