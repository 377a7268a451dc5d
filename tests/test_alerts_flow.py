"""Alerts end to end in one process with a fake clock: digests hold exactly their period's items,
failing endpoints are disabled only after the window, emails are rate-limited without losing
attempts, a 410 stops retries, a 500-then-200 receiver gets everything."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from helpers import ManualClock, SmtpSink, WebhookReceiver

from services.alerts.deliverer import Deliverer
from services.alerts.matcher import Matcher
from shared.bus.memory import MemoryBus
from shared.envelope import TOPIC_OPS, Envelope
from shared.http import build_client
from shared.metrics import Metrics
from shared.models import ClassifiedItem, Subscription
from shared.netguard import AddressPolicy
from shared.settings import Settings, load_settings
from shared.store.sqlite import SQLiteStore

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)


class World:
    def __init__(self, store: SQLiteStore, settings: Settings, client: httpx.AsyncClient) -> None:
        self.clock = ManualClock(T0)
        self.bus = MemoryBus()
        self.store = store
        self.matcher = Matcher(store=store, bus=self.bus, settings=settings, metrics=Metrics(), clock=self.clock)
        self.deliverer = Deliverer(
            store=store, bus=self.bus, client=client, settings=settings, metrics=Metrics(), clock=self.clock
        )

    async def publish(self, n: int, **kw: object) -> ClassifiedItem:
        item = ClassifiedItem.model_validate(
            {
                "id": f"itm_{n}",
                "source_id": "s",
                "source_url": "http://s",
                "title": f"Rail item {n}",
                "fetched_at": self.clock.now,
                "sectors": ["transport"],
                "countries": ["PK"],
                "classifier_version": "t",
                **kw,
            }
        )
        await self.store.upsert_item(item)
        self.matcher._cache_at = float("-inf")  # see new subscriptions at once
        await self.matcher.handle(Envelope.wrap("item.classified", item))
        return item

    async def drain(self) -> int:
        """One second later (past the matcher's hand-off), open digests and attempt every due
        delivery; returns how many were attempted."""
        self.clock.now += timedelta(seconds=1)
        await self.deliverer.open_digests()
        attempted = 0
        while d := await self.store.claim_due_delivery(self.clock.now, self.clock.now + timedelta(seconds=30)):
            await self.deliverer._attempt_stored(d)
            attempted += 1
        return attempted


@pytest.fixture
async def world(tmp_path: Path, smtp: SmtpSink) -> AsyncIterator[World]:
    settings = load_settings(
        smtp_port=smtp.port,
        delivery_retry_schedule_s=["60", "60", "60"],
        delivery_lease_s=1,
        endpoint_disable_after_s=3600,
        email_rate_per_hour=3,
        webhook_timeout_s=2,
        allow_private_networks=["127.0.0.0/8"],
    )
    store = SQLiteStore(tmp_path / "s.sqlite3")
    await store.start()
    client = build_client(policy=AddressPolicy(["127.0.0.0/8"]), timeout_s=2, max_redirects=0, user_agent="t")
    async with client:
        yield World(store, settings, client)
    await store.close()


async def test_daily_digest_holds_exactly_its_period(world: World, smtp: SmtpSink) -> None:
    digest = Subscription(
        id="sub_d",
        channel="email",
        email="d@example.org",
        cadence="daily",
        digest_time="08:00",
        timezone="UTC",
        sectors=["transport"],
    )
    await world.store.insert_subscription(digest)
    for n in range(3):  # 06:00–06:20, before 08:00: today's digest
        world.clock.now = T0 + timedelta(minutes=10 * n)
        await world.publish(n)
    await world.publish(99, sectors=["energy"])  # not wanted
    world.clock.now = T0 + timedelta(hours=2, minutes=30)  # 08:30: into tomorrow's period
    await world.publish(3)
    assert await world.drain() == 1 and len(smtp.messages) == 1
    [first] = smtp.messages
    body = first.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "2026-03-01" in first["Subject"] and "3 items" in first["Subject"]
    assert all(f"Rail item {n}" in body for n in range(3)) and "Rail item 3" not in body and "item 99" not in body
    assert "transport (3)" in body and first["List-Unsubscribe"]
    # On the wire, the URL stays one readable line: aiosmtplib's 78-column policy once turned it
    # into RFC 2047 encoded words (=?utf-8?q?=3Chttp...), which no mail client reads as a link.
    wire = smtp.raw[0].replace(b"\r\n", b"\n")
    unsubscribe = next(line for line in wire.split(b"\n") if line.startswith(b"List-Unsubscribe:"))
    assert unsubscribe == b"List-Unsubscribe: <" + first["List-Unsubscribe"].strip("<>").encode() + b">"
    assert b"=?utf-8?" not in unsubscribe and len(unsubscribe) > 78
    assert await world.drain() == 0, "the digest is sent once"
    world.clock.now = datetime(2026, 3, 2, 8, 0, 1, tzinfo=UTC)
    assert await world.drain() == 1
    assert "Rail item 3" in smtp.messages[1].get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    queued = await world.store.list_deliveries(subscription_id="sub_d", status="queued")
    assert queued == []


async def test_endpoint_disabled_only_after_sustained_failure(
    world: World, receiver: WebhookReceiver, smtp: SmtpSink
) -> None:
    await world.store.insert_subscription(
        Subscription(
            id="sub_w",
            channel="webhook",
            webhook_url=receiver.url,
            secret="whsec_" + "A" * 32,
            owner_email="o@example.org",
        )
    )
    receiver.statuses = [500]
    await world.publish(0)
    await world.drain()
    sub = await world.store.get_subscription("sub_w")
    assert sub is not None and sub.failing_since == world.clock.now and sub.active
    world.clock.now += timedelta(minutes=59)
    await world.drain()  # the retry succeeds: the failure streak is over, nothing is disabled
    sub = await world.store.get_subscription("sub_w")
    assert sub is not None and sub.active and sub.failing_since is None
    receiver.statuses = [500] * 20
    for n in range(3, 7):  # failures spread over more than the one-hour window
        await world.publish(n)
        world.clock.now += timedelta(minutes=25)
        await world.drain()
    sub = await world.store.get_subscription("sub_w")
    assert sub is not None and not sub.active and sub.disabled_reason and "failing since" in sub.disabled_reason
    ops = [Envelope.decode(d) for _, d in world.bus._logs[TOPIC_OPS].messages]
    assert [e.type for e in ops] == ["subscription.disabled"]
    assert any(m["To"] == "o@example.org" and "disabled" in m["Subject"] for m in smtp.messages)


async def test_410_stops_retries_and_500_then_200_recovers(world: World, receiver: WebhookReceiver) -> None:
    await world.store.insert_subscription(
        Subscription(id="sub_w", channel="webhook", webhook_url=receiver.url, secret="whsec_" + "A" * 32)
    )
    receiver.statuses = [410]
    await world.publish(1)
    await world.drain()
    gone = await world.store.list_deliveries(item_id="itm_1")
    assert gone[0].status == "failed" and gone[0].attempts == 1 and gone[0].last_status_code == 410
    world.clock.now += timedelta(minutes=10)
    assert await world.drain() == 0, "no retry after 410"
    disabled = await world.store.get_subscription("sub_w")
    assert disabled is not None and not disabled.active and "410" in (disabled.disabled_reason or "")
    # The owner fixed the endpoint and resumed the subscription (what POST …/resume does).
    await world.store.update_subscription("sub_w", {"active": True, "disabled_reason": None, "failing_since": None})
    receiver.statuses = [500, 503]
    await world.publish(2)
    for _ in range(3):
        await world.drain()
        world.clock.now += timedelta(seconds=80)
    [ok] = await world.store.list_deliveries(item_id="itm_2")
    assert ok.status == "delivered" and ok.attempts == 3
    ids = [r.webhook_id for r in receiver.snapshot() if r.json()["item"]["id"] == "itm_2"]
    assert len(ids) == 3 and len(set(ids)) == 1, "every retry carries the same webhook-id"


async def test_email_confirmation_then_rate_limit_without_losing_attempts(world: World, smtp: SmtpSink) -> None:
    from services.alerts.deliverer import CONFIRM_ITEM
    from shared.models import Delivery

    sub = Subscription(id="sub_e", channel="email", email="e@example.org", confirmed=False)
    await world.store.insert_subscription(sub)
    await world.store.insert_delivery(
        Delivery(
            id=Delivery.make_id("sub_e", CONFIRM_ITEM, "email"),
            subscription_id="sub_e",
            item_id=CONFIRM_ITEM,
            channel="email",
            next_attempt_at=world.clock.now,
        )
    )
    await world.publish(1)  # unconfirmed: not matched
    await world.drain()
    assert [m["Subject"] for m in smtp.messages] == ["[Corridor] Confirm your alert subscription"]
    await world.store.update_subscription("sub_e", {"confirmed": True})
    for n in range(2, 6):
        await world.publish(n)
    await world.drain()
    sent = [m for m in smtp.messages if "Rail item" in m["Subject"]]
    assert len(sent) == 2, "3 per hour including the confirmation"
    waiting = await world.store.list_deliveries(subscription_id="sub_e", status="pending")
    assert len(waiting) == 2 and all(d.attempts == 0 for d in waiting), "deferred, no attempt spent"
