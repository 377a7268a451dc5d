"""A slow or dead endpoint holds a bounded share of the delivery slots and never the consume path:
real webhook receivers on 127.0.0.1, the in-process bus, the SQLite store, the real clock."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from helpers import WebhookReceiver, _QuietServer

from services.alerts.deliverer import Deliverer
from services.alerts.webhook import new_secret
from shared.bus.memory import MemoryBus
from shared.envelope import TOPIC_ALERTS, Envelope
from shared.http import build_client
from shared.metrics import Metrics
from shared.models import AlertPayload, ClassifiedItem, Delivery, Subscription
from shared.netguard import AddressPolicy
from shared.settings import load_settings
from shared.store.sqlite import SQLiteStore


class SlowReceiver:
    """Answers every POST after ``delay_s``; records the most requests it held at once."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.current = 0
        self.peak = 0
        self.count = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    outer.current += 1
                    outer.count += 1
                    outer.peak = max(outer.peak, outer.current)
                time.sleep(outer.delay_s)
                with lock:
                    outer.current -= 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "s.sqlite3")
    await s.start()
    yield s
    await s.close()


def item(n: int) -> ClassifiedItem:
    return ClassifiedItem(
        id=f"itm_{n}",
        source_id="s",
        source_url="http://s",
        title=f"Rail item {n}",
        fetched_at=datetime.now(UTC),
        sectors=["transport"],
        countries=["PK"],
        classifier_version="t",
    )


async def queue_alert(store: SQLiteStore, bus: MemoryBus, subscription: Subscription, subject: ClassifiedItem) -> None:
    now = datetime.now(UTC)
    delivery = Delivery(
        id=Delivery.make_id(subscription.id, subject.id, "webhook"),
        subscription_id=subscription.id,
        item_id=subject.id,
        channel="webhook",
        created_at=now,
        next_attempt_at=now,
    )
    await store.insert_delivery(delivery)
    payload = AlertPayload(delivery_id=delivery.id, subscription_id=subscription.id, channel="webhook", item=subject)
    await bus.publish(TOPIC_ALERTS, subscription.id, Envelope.wrap("alert", payload))


async def test_a_slow_endpoint_takes_its_share_of_slots_and_delays_no_one(store: SQLiteStore) -> None:
    settings = load_settings(
        delivery_concurrency=4,
        delivery_per_subscription=2,
        webhook_timeout_s=5,
        delivery_sweep_s=0.2,
        delivery_lease_s=30,
        allow_private_networks=["127.0.0.0/8"],
    )
    slow = SlowReceiver(delay_s=1.0)
    bus = MemoryBus()
    client = build_client(policy=AddressPolicy(["127.0.0.0/8"]), timeout_s=5, max_redirects=0, user_agent="t")
    with WebhookReceiver() as healthy:
        slow_sub = Subscription(id="sub_slow", channel="webhook", webhook_url=slow.url, secret=new_secret())
        good_sub = Subscription(id="sub_good", channel="webhook", webhook_url=healthy.url, secret=new_secret())
        await store.insert_subscription(slow_sub)
        await store.insert_subscription(good_sub)
        for n in range(12):
            subject = item(n)
            await store.upsert_item(subject)
            await queue_alert(store, bus, slow_sub, subject)
        for n in range(100, 106):
            subject = item(n)
            await store.upsert_item(subject)
            await queue_alert(store, bus, good_sub, subject)
        async with client:
            deliverer = Deliverer(store=store, bus=bus, client=client, settings=settings, metrics=Metrics())
            stop = asyncio.Event()
            started = time.monotonic()
            consumer = asyncio.create_task(bus.consume([TOPIC_ALERTS], "alerts", deliverer.handle, stop))
            sweeper = asyncio.create_task(deliverer.sweep(stop))
            try:
                while len(healthy.snapshot()) < 6:
                    assert time.monotonic() - started < 10, f"healthy got {len(healthy.snapshot())} of 6"
                    await asyncio.sleep(0.02)
                healthy_s = time.monotonic() - started
                log = bus._logs[TOPIC_ALERTS]
                while log.committed.get("alerts", 0) < 18:
                    assert time.monotonic() - started < 10, "the consume path waited on the slow endpoint"
                    await asyncio.sleep(0.02)
                while slow.count < 12:
                    assert time.monotonic() - started < 30, f"slow endpoint got {slow.count} of 12"
                    await asyncio.sleep(0.05)
            finally:
                stop.set()
                await asyncio.gather(consumer, sweeper)
                slow.close()
    # 12 alerts at 1 s each, two at a time: ~6 s for the slow endpoint; the healthy one is done
    # long before, and the slow one never held more than its share.
    assert healthy_s < 3.0, healthy_s
    assert slow.peak == 2, slow.peak
    delivered = await store.list_deliveries(subscription_id="sub_slow", status="delivered", limit=50)
    assert len(delivered) == 12
