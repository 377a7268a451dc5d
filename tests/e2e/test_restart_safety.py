"""Restart safety: SIGKILL the alerts process in the middle of a batch of deliveries, start it
again, and check every alert arrives with exactly one webhook-id (the receiver's dedupe key)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.conftest import AUTH, URDU_FEED, corridor_env, get_json
from helpers import FeedServer, Route, SmtpSink, WebhookReceiver, wait_until

from shared.models import Delivery
from shared.settings import Settings


@pytest.mark.e2e
@pytest.mark.kafka
@pytest.mark.mongo
def test_alerts_killed_mid_batch_loses_nothing_and_duplicates_nothing(
    request: pytest.FixtureRequest,
    unique: str,
    tmp_path: Path,
    launch: Any,
    feed_server: FeedServer,
    receiver: WebhookReceiver,
    smtp: SmtpSink,
) -> None:
    env = corridor_env("distributed", request, unique, tmp_path, smtp)
    receiver.delay_s = 0.25  # slow receiver: the kill lands while deliveries are in flight
    alerts = launch("alerts", env)
    classifier = launch("classifier", env)
    ingest = launch("ingest", env)
    created = httpx.post(
        f"{alerts.base}/api/v1/subscriptions", headers=AUTH, timeout=10, json={"webhook_url": receiver.url}
    )  # no filter: every item is an alert
    assert created.status_code == 201
    sub_id, secret = created.json()["id"], created.json()["secret"]
    feed_server.routes["/urdu.xml"] = Route(body=URDU_FEED.read_bytes())
    assert (
        httpx.post(
            f"{ingest.base}/api/v1/sources", headers=AUTH, json={"url": feed_server.url("/urdu.xml")}, timeout=10
        ).status_code
        == 201
    )

    wait_until(lambda: len(receiver.snapshot()) >= 5, 60, "the first deliveries")
    alerts.kill()  # SIGKILL: no drain, no final commit
    at_kill = len(receiver.snapshot())
    assert at_kill < 26, "the kill must land mid-batch"
    launch("alerts", env)

    events: Any = get_json(f"{classifier.base}/api/v1/events", limit=100)
    expected = {Delivery.make_id(sub_id, e["id"], "webhook"): e["id"] for e in events["items"]}
    assert len(expected) == 26

    wait_until(
        lambda: {r.webhook_id for r in receiver.snapshot()} >= set(expected),
        90,
        "every alert to be delivered after the restart",
    )
    received = receiver.snapshot()
    by_id: dict[str, set[bytes]] = defaultdict(set)
    items_by_id: dict[str, str] = {}
    for r in received:
        body = r.json()
        by_id[r.webhook_id].add(r.body)
        items_by_id[r.webhook_id] = body["item"]["id"]
    assert set(by_id) == set(expected), "no alert lost, no unexpected webhook-id"
    assert items_by_id == expected, "one webhook-id per (subscription, item): the receiver's dedupe key holds"
    duplicates = len(received) - len(by_id)
    # A duplicate can only be a resend of the same webhook-id (killed between send and record).
    print(
        f"\nrestart safety: {at_kill} delivered before SIGKILL, {len(received)} requests, "
        f"{len(by_id)} distinct webhook-ids, {duplicates} resends of an already received webhook-id"
    )
    share = Settings.model_fields["delivery_per_subscription"].default
    assert duplicates <= share, "only the requests in flight at the kill (one subscription's share) may be resent"
    from standardwebhooks.webhooks import Webhook

    for r in received:
        Webhook(secret).verify(r.body, r.headers)
