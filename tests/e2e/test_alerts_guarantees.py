"""No alert lost, none twice: SIGKILL the alerts process at random points while 500 matching
items stream through the real pipeline (Kafka + the MongoDB-wire server, three processes), restart it each time,
and check the receiver ends with every alert under exactly one webhook-id."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.conftest import AUTH, corridor_env
from helpers import FeedServer, Route, SmtpSink, WebhookReceiver, wait_until
from standardwebhooks.webhooks import Webhook

ITEMS = 500
KILLS = 3


def feed(count: int) -> bytes:
    items = "".join(
        f"<item><guid>g{n}</guid><title>Kazakhstan Pakistan rail freight update number {n}</title>"
        f"<link>http://news.example/{n}</link><description>Rail cargo {n} moved between Almaty and Karachi "
        f"under the transit agreement; train {n * 7} carried grain.</description></item>"
        for n in range(count)
    )
    return f"<rss version='2.0'><channel><title>stream</title>{items}</channel></rss>".encode()


@pytest.mark.e2e
@pytest.mark.kafka
@pytest.mark.mongo
def test_sigkill_at_random_points_loses_nothing(
    request: pytest.FixtureRequest,
    unique: str,
    tmp_path: Path,
    launch: Any,
    feed_server: FeedServer,
    receiver: WebhookReceiver,
    smtp: SmtpSink,
) -> None:
    env = corridor_env("distributed", request, unique, tmp_path, smtp)
    receiver.delay_s = 0.01
    alerts = launch("alerts", env)
    launch("classifier", env)
    ingest = launch("ingest", env)
    created = httpx.post(
        f"{alerts.base}/api/v1/subscriptions",
        headers=AUTH,
        timeout=10,
        json={"webhook_url": receiver.url, "sectors": ["transport"]},
    )
    secret = created.json()["secret"]
    feed_server.routes["/stream.xml"] = Route(body=feed(ITEMS))
    assert (
        httpx.post(
            f"{ingest.base}/api/v1/sources", headers=AUTH, json={"url": feed_server.url("/stream.xml")}, timeout=10
        ).status_code
        == 201
    )

    rng = random.Random(20260226)
    kill_points = sorted(rng.sample(range(20, ITEMS - 50), KILLS))
    killed_at = []
    for point in kill_points:
        wait_until(lambda p=point: len(receiver.snapshot()) >= p, 120, f"{point} deliveries")
        time.sleep(rng.uniform(0, 0.2))  # a random moment inside the batch
        alerts.kill()
        killed_at.append(len(receiver.snapshot()))
        alerts = launch("alerts", env)

    wait_until(lambda: len({r.webhook_id for r in receiver.snapshot()}) >= ITEMS, 180, "every alert")
    time.sleep(3)  # late duplicates would show up now
    received = receiver.snapshot()
    per_id = Counter(r.webhook_id for r in received)
    items = {r.json()["item"]["id"] for r in received}
    assert len(per_id) == ITEMS and len(items) == ITEMS, "every alert delivered, one webhook-id per item"
    for r in received:
        Webhook(secret).verify(r.body, r.headers)
    resends = sum(c - 1 for c in per_id.values())
    print(
        f"\nguarantees: {ITEMS} alerts, SIGKILL after {killed_at} deliveries; {len(received)} requests, "
        f"{resends} resends of an already received webhook-id (killed between send and record)"
    )
    assert resends <= KILLS * 8, "only in-flight deliveries at a kill may be resent"
