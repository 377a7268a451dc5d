"""Webhook and email senders classify outcomes; the deliverer retries on the schedule, then gives up
to the dead-letter topic. Time is injected; the SMTP server is real (aiosmtpd)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from helpers import ManualClock, SmtpSink
from standardwebhooks.webhooks import Webhook

from services.alerts.deliverer import Deliverer
from services.alerts.mailer import build_message, send_email
from services.alerts.webhook import new_secret, send_webhook
from shared.bus.memory import MemoryBus
from shared.envelope import TOPIC_DEADLETTER, DeadLetter, Envelope
from shared.http import build_client
from shared.metrics import Metrics
from shared.models import ClassifiedItem, Delivery, Subscription
from shared.netguard import AddressPolicy
from shared.settings import load_settings
from shared.store.sqlite import SQLiteStore

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
ITEM = ClassifiedItem(
    id="itm_1",
    source_id="s",
    source_url="http://s",
    title="Oil deal",
    fetched_at=T0,
    sectors=["petroleum"],
    countries=["KZ"],
    classifier_version="t",
)


def sub(url: str = "http://8.8.8.8/hook") -> Subscription:
    return Subscription(id="sub_1", channel="webhook", webhook_url=url, secret=new_secret())


def client_for(handler: httpx.MockTransport) -> httpx.AsyncClient:
    return build_client(policy=AddressPolicy(), timeout_s=5, max_redirects=0, user_agent="t", transport=handler)


@pytest.mark.parametrize(
    ("status", "ok", "retryable"),
    [
        (200, True, False),
        (204, True, False),
        (500, False, True),
        (503, False, True),
        (408, False, True),
        (429, False, True),
        (400, False, False),
        (404, False, False),
        (410, False, False),
        (301, False, False),
    ],
)
async def test_webhook_outcomes(status: int, ok: bool, retryable: bool) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, headers={"Retry-After": "120"}, text="nope")

    s = sub()
    async with client_for(httpx.MockTransport(handler)) as client:
        outcome = await send_webhook(client, s, "msg_1", {"a": 1}, datetime.now(UTC))
    assert (outcome.ok, outcome.retryable) == (ok, retryable)
    if status in (429, 503):
        assert outcome.retry_after_s == 120
    request = seen[0]
    Webhook(s.secret or "").verify(request.content, dict(request.headers))  # a valid Standard Webhooks signature
    assert request.headers["webhook-id"] == "msg_1"


async def test_webhook_to_blocked_address_is_permanent() -> None:
    async with client_for(httpx.MockTransport(lambda r: httpx.Response(200))) as client:
        outcome = await send_webhook(client, sub("http://10.0.0.5/hook"), "msg_1", {}, datetime.now(UTC))
    assert not outcome.ok and not outcome.retryable and "not a public address" in (outcome.error or "")


async def test_webhook_connect_error_is_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with client_for(httpx.MockTransport(handler)) as client:
        outcome = await send_webhook(client, sub(), "msg_1", {}, datetime.now(UTC))
    assert not outcome.ok and outcome.retryable


async def test_email_over_real_smtp(smtp: SmtpSink) -> None:
    settings = load_settings(smtp_port=smtp.port)
    s = Subscription(id="sub_2", channel="email", email="a@example.org")
    outcome = await send_email(settings, build_message(settings, s, ITEM, delivery_id="msg_2", link="http://x/e"))
    assert outcome.ok
    [message] = smtp.messages
    assert message["To"] == "a@example.org" and "Oil deal" in message["Subject"]
    assert message.is_multipart()


async def test_email_to_unreachable_server_is_transient() -> None:
    from helpers import free_port

    settings = load_settings(smtp_port=free_port(), smtp_timeout_s=2)
    s = Subscription(id="sub_2", channel="email", email="a@example.org")
    outcome = await send_email(settings, build_message(settings, s, ITEM, delivery_id="m", link="http://x"))
    assert not outcome.ok and outcome.retryable


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "s.sqlite3")
    await s.start()
    yield s
    await s.close()


async def test_retries_follow_the_schedule_then_dead_letter(store: SQLiteStore) -> None:
    settings = load_settings(delivery_retry_schedule_s=["10", "60"], delivery_lease_s=5, webhook_timeout_s=1)
    calls: list[datetime] = []
    clock = ManualClock(T0)

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(clock.now)
        return httpx.Response(500)

    bus = MemoryBus()
    subscription = sub()
    await store.insert_subscription(subscription)
    await store.upsert_item(ITEM)
    delivery = Delivery(
        id="msg_1", subscription_id="sub_1", item_id="itm_1", channel="webhook", created_at=T0, next_attempt_at=T0
    )
    await store.insert_delivery(delivery)
    async with client_for(httpx.MockTransport(handler)) as client:
        deliverer = Deliverer(store=store, bus=bus, client=client, settings=settings, metrics=Metrics(), clock=clock)
        for _ in range(3):
            claimed = await store.claim_due_delivery(clock.now, clock.now + timedelta(seconds=5))
            assert claimed is not None
            await deliverer.attempt(claimed, ITEM)
            current = await store.get_delivery("msg_1")
            assert current is not None
            if current.status == "pending":
                assert current.next_attempt_at > clock.now
                assert await store.claim_due_delivery(clock.now, clock.now) is None, "not due before its time"
                clock.now = current.next_attempt_at
    final = await store.get_delivery("msg_1")
    assert final is not None and final.status == "failed" and final.attempts == 3
    assert len(calls) == 3
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(calls)]
    assert 8 <= gaps[0] <= 12 and 48 <= gaps[1] <= 72, gaps  # 10 s and 60 s with ±20 % jitter
    dead = [Envelope.decode(d) for _, d in bus._logs[TOPIC_DEADLETTER].messages]
    assert len(dead) == 1 and "after 3 attempts" in dead[0].payload_as(DeadLetter).reason
