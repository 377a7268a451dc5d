"""Alerts: the review's findings, one test (or a few) each, against the real SQLite store, the
in-process bus, real SMTP servers (aiosmtpd) and real HTTP receivers on 127.0.0.1, a fake clock.

1 a digest on a channel that cannot carry it never crashes the worker; the API refuses the shape
2 temporary SMTP refusals and our own SMTP misconfiguration are retried, not failed
3 a consumed-again alert keeps its retry schedule
4 an attempt never outlives its lease
5 redeliver refuses a delivery in flight
6 PATCH clears min_score with null and refuses null elsewhere
7 410 Gone disables the endpoint; Retry-After as an HTTP-date
8 queued alerts are never stranded (cadence switched to immediate, late alerts of a sent period)
9 the pool's bounds hold when the alert consumer and claims race
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from helpers import ManualClock, SmtpSink, WebhookReceiver, free_port

from services.alerts.deliverer import Deliverer, digest_item
from services.alerts.mailer import build_message, send_email
from services.alerts.routes import build_router
from services.alerts.webhook import new_secret, send_webhook
from shared.bus.memory import MemoryBus
from shared.envelope import TOPIC_ALERTS, TOPIC_OPS, Envelope
from shared.http import build_client
from shared.metrics import Metrics
from shared.models import AlertPayload, ClassifiedItem, Delivery, Subscription
from shared.netguard import AddressPolicy
from shared.settings import Settings, load_settings
from shared.store.sqlite import SQLiteStore

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
LOOPBACK = ["127.0.0.0/8"]


def item(n: int = 1) -> ClassifiedItem:
    return ClassifiedItem(
        id=f"itm_{n}",
        source_id="s",
        source_url="http://s",
        title=f"Rail item {n}",
        fetched_at=T0,
        sectors=["transport"],
        countries=["PK"],
        classifier_version="t",
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "s.sqlite3")
    await s.start()
    yield s
    await s.close()


def settings_for(**kw: Any) -> Settings:
    base: dict[str, Any] = dict(
        delivery_retry_schedule_s=["60", "60", "60"],
        delivery_lease_s=30,
        webhook_timeout_s=2,
        allow_private_networks=LOOPBACK,
    )
    return load_settings(**{**base, **kw})


def loopback_client(timeout_s: float = 2, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    return build_client(
        policy=AddressPolicy(LOOPBACK), timeout_s=timeout_s, max_redirects=0, user_agent="t", transport=transport
    )


def deliverer_for(
    store: SQLiteStore, settings: Settings, client: httpx.AsyncClient, clock: ManualClock, bus: MemoryBus | None = None
) -> Deliverer:
    return Deliverer(
        store=store, bus=bus or MemoryBus(), client=client, settings=settings, metrics=Metrics(), clock=clock
    )


def webhook_sub(url: str, **kw: Any) -> Subscription:
    return Subscription.model_validate(
        {"id": "sub_w", "channel": "webhook", "webhook_url": url, "secret": new_secret(), **kw}
    )


def pending(sub_id: str, item_id: str, channel: str, at: datetime, **kw: Any) -> Delivery:
    return Delivery.model_validate(
        {
            "id": Delivery.make_id(sub_id, item_id, channel),
            "subscription_id": sub_id,
            "item_id": item_id,
            "channel": channel,
            "created_at": at,
            "next_attempt_at": at,
            **kw,
        }
    )


async def claim(store: SQLiteStore, delivery_id: str, now: datetime) -> Delivery:
    claimed = await store.claim_delivery(delivery_id, now, now + timedelta(seconds=30))
    assert claimed is not None
    return claimed


async def current(store: SQLiteStore, delivery_id: str) -> Delivery:
    found = await store.get_delivery(delivery_id)
    assert found is not None
    return found


# 1 ────────────────────────────────────────────────────────────────────────────────────────────


async def test_a_stored_webhook_digest_fails_permanently_instead_of_crashing(
    store: SQLiteStore, receiver: WebhookReceiver
) -> None:
    """A webhook subscription stored with cadence=daily (accepted before the API refused it): its
    digest used to reach send_email with no address, raise ValueError and crash the worker."""
    clock = ManualClock(T0)
    await store.insert_subscription(webhook_sub(receiver.url, cadence="daily"))
    await store.upsert_item(item(1))
    digest = pending("sub_w", digest_item("2026-03-01"), "webhook", T0, digest_period="2026-03-01")
    queued = pending("sub_w", "itm_1", "webhook", T0, status="queued", digest_period="2026-03-01")
    await store.insert_deliveries([digest, queued])
    async with loopback_client() as client:
        deliverer = deliverer_for(store, settings_for(), client, clock)
        await deliverer._attempt_stored(await claim(store, digest.id, clock.now))  # must not raise
        failed = await current(store, digest.id)
        assert failed.status == "failed" and "carries no digests" in (failed.last_error or "")
        # Its queued alert is sent on its own, as the channel can carry it.
        await deliverer.open_digests()
        released = await current(store, queued.id)
        assert released.status == "pending"
        await deliverer._attempt_stored(await claim(store, queued.id, clock.now))
    assert (await current(store, queued.id)).status == "delivered"
    assert [r.json()["item"]["id"] for r in receiver.snapshot()] == ["itm_1"]


async def test_a_digest_subscription_on_webhook_makes_no_digest_and_the_sweep_survives(
    store: SQLiteStore, receiver: WebhookReceiver
) -> None:
    """The whole loop: the matcher alerts a stored webhook+daily subscription one by one, and the
    sweep (which used to raise the ValueError out of claim_loop) keeps running."""
    from services.alerts.matcher import Matcher

    clock = ManualClock(T0)
    bus = MemoryBus()
    settings = settings_for(delivery_sweep_s=0.05)
    await store.insert_subscription(webhook_sub(receiver.url, cadence="daily"))
    digest = pending("sub_w", digest_item("2026-02-28"), "webhook", T0, digest_period="2026-02-28")
    await store.insert_delivery(digest)
    matcher = Matcher(store=store, bus=bus, settings=settings, metrics=Metrics(), clock=clock)
    await store.upsert_item(item(1))
    await matcher.handle(Envelope.wrap("item.classified", item(1)))
    [alert] = await store.list_deliveries(item_id="itm_1")
    assert alert.status == "pending" and alert.digest_period is None, "not queued: webhooks have no digests"
    clock.now += timedelta(minutes=5)
    async with loopback_client() as client:
        deliverer = deliverer_for(store, settings, client, clock, bus)
        stop = asyncio.Event()
        sweep = asyncio.create_task(deliverer.sweep(stop))
        for _ in range(100):  # up to 5 s
            if (await current(store, alert.id)).status != "pending":
                break
            await asyncio.sleep(0.05)
        assert not sweep.done(), "the sweep must not end on a delivery it cannot send"
        stop.set()
        await sweep  # raises if the pool recorded a bug
    assert (await current(store, digest.id)).status == "failed"
    assert (await current(store, alert.id)).status == "delivered"


async def test_an_email_delivery_without_an_address_fails_permanently(store: SQLiteStore) -> None:
    clock = ManualClock(T0)
    await store.insert_subscription(Subscription(id="sub_e", channel="email", email=None))
    delivery = pending("sub_e", "itm_1", "email", T0)
    await store.insert_delivery(delivery)
    async with loopback_client() as client:
        await deliverer_for(store, settings_for(), client, clock).attempt(await claim(store, delivery.id, T0), item(1))
    failed = await current(store, delivery.id)
    assert failed.status == "failed" and "no email address" in (failed.last_error or "")


async def test_redelivering_a_kafka_delivery_publishes_the_alert_again(store: SQLiteStore) -> None:
    """A kafka delivery's attempt (after POST …/redeliver) used to take the email branch and raise."""
    clock = ManualClock(T0)
    bus = MemoryBus()
    await store.insert_subscription(Subscription(id="sub_k", channel="kafka"))
    await store.upsert_item(item(1))
    delivery = pending("sub_k", "itm_1", "kafka", T0)
    await store.insert_delivery(delivery)
    async with loopback_client() as client:
        deliverer = deliverer_for(store, settings_for(), client, clock, bus)
        await deliverer._attempt_stored(await claim(store, delivery.id, T0))
    assert (await current(store, delivery.id)).status == "delivered"
    [published] = [Envelope.decode(d) for _, d in bus._logs[TOPIC_ALERTS].messages]
    payload = published.payload_as(AlertPayload)
    assert payload.delivery_id == delivery.id and payload.item is not None and payload.item.id == "itm_1"


async def test_send_email_turns_unsendable_messages_into_permanent_outcomes(smtp: SmtpSink) -> None:
    settings = load_settings(smtp_port=smtp.port, smtp_timeout_s=2)
    no_recipient = EmailMessage()
    no_recipient["From"] = settings.smtp_from
    no_recipient["To"] = ""
    no_recipient.set_content("x")
    outcome = await send_email(settings, no_recipient)
    assert not outcome.ok and not outcome.retryable and "no recipient" in (outcome.error or "")
    no_sender = EmailMessage()  # aiosmtplib raises ValueError once connected
    no_sender["To"] = "a@example.org"
    no_sender.set_content("x")
    outcome = await send_email(settings, no_sender)
    assert not outcome.ok and not outcome.retryable and "ValueError" in (outcome.error or "")
    assert smtp.messages == []


# 2 ────────────────────────────────────────────────────────────────────────────────────────────


class ReplyingSmtp:
    """A real SMTP server (aiosmtpd) whose replies to MAIL, RCPT and DATA are set per test, and
    which refuses every login (535) when started with ``auth=True``."""

    def __init__(self, *, auth: bool = False) -> None:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.mail = "250 OK"
        self.rcpt = "250 OK"
        self.data = "250 Message accepted for delivery"
        outer = self

        class Handler:
            async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
                envelope.mail_from = address
                return outer.mail

            async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
                envelope.rcpt_tos.append(address)
                return outer.rcpt

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                return outer.data

        def refuse(*args: Any) -> AuthResult:
            return AuthResult(success=False, handled=False)

        self.port = free_port()
        extra: dict[str, Any] = {"authenticator": refuse, "auth_require_tls": False} if auth else {}
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **extra)

    def __enter__(self) -> ReplyingSmtp:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


@pytest.fixture
def replying_smtp() -> Iterator[ReplyingSmtp]:
    with ReplyingSmtp() as server:
        yield server


def alert_email(settings: Settings) -> EmailMessage:
    s = Subscription(id="sub_e", channel="email", email="a@example.org")
    return build_message(settings, s, item(1), delivery_id="msg_e", link="http://x/e")


@pytest.mark.parametrize(
    ("stage", "reply", "retryable"),
    [
        ("rcpt", "450 4.2.1 Mailbox busy", True),
        ("rcpt", "451 4.7.1 Greylisted, try again later", True),
        ("rcpt", "452 4.2.2 Over quota", True),
        ("rcpt", "550 5.1.1 No such user", False),
        ("rcpt", "530 5.7.0 Authentication required", True),  # our configuration, not the recipient
        ("mail", "530 5.7.0 Must issue a STARTTLS command first", True),
        ("mail", "553 5.1.8 Sender address rejected", True),
        ("data", "451 4.3.0 Try again later", True),
        ("data", "554 5.6.0 Message content rejected", False),
    ],
)
async def test_smtp_refusals_are_classified_by_reply_code(
    replying_smtp: ReplyingSmtp, stage: str, reply: str, retryable: bool
) -> None:
    setattr(replying_smtp, stage, reply)
    settings = load_settings(smtp_port=replying_smtp.port, smtp_timeout_s=5)
    outcome = await send_email(settings, alert_email(settings))
    assert not outcome.ok and outcome.retryable is retryable, outcome
    assert outcome.status_code == int(reply[:3])


async def test_smtp_authentication_failure_is_retried() -> None:
    """535 on AUTH is our credentials: every delivery would fail permanently at once."""
    with ReplyingSmtp(auth=True) as server:
        settings = load_settings(
            smtp_port=server.port, smtp_timeout_s=5, smtp_username="corridor", smtp_password="wrong"
        )
        outcome = await send_email(settings, alert_email(settings))
    assert not outcome.ok and outcome.retryable and outcome.status_code == 535, outcome


# 3 ────────────────────────────────────────────────────────────────────────────────────────────


async def test_an_alert_consumed_again_keeps_the_retry_schedule(store: SQLiteStore) -> None:
    """A re-published alert (edited entry, Kafka redelivery) used to attempt a failing endpoint
    at once, ignoring next_attempt_at and Retry-After."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers["webhook-id"])
        return httpx.Response(200)

    clock = ManualClock(T0)
    await store.insert_subscription(webhook_sub("http://127.0.0.1:9/hook"))
    retrying = pending("sub_w", "itm_1", "webhook", T0, attempts=1, next_attempt_at=T0 + timedelta(minutes=10))
    fresh = pending("sub_w", "itm_2", "webhook", T0, next_attempt_at=T0 + timedelta(seconds=30))  # hand-off time
    await store.insert_deliveries([retrying, fresh])
    async with loopback_client(transport=httpx.MockTransport(handler)) as client:
        deliverer = deliverer_for(store, settings_for(), client, clock)
        for delivery, n in ((retrying, 1), (fresh, 2)):
            payload = AlertPayload(delivery_id=delivery.id, subscription_id="sub_w", channel="webhook", item=item(n))
            await deliverer.handle(Envelope.wrap("alert", payload))
        await deliverer._pool.drain()
    assert calls == [fresh.id], "the fresh alert goes at once, the retried one waits for its time"
    waiting = await current(store, retrying.id)
    assert waiting.attempts == 1 and waiting.lease_until is None and waiting.next_attempt_at == retrying.next_attempt_at


# 4 ────────────────────────────────────────────────────────────────────────────────────────────


class DripServer:
    """Answers 200 with a 1000-byte body, one byte every 0.1 s: no read ever times out."""

    def __init__(self) -> None:
        self.url = ""
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(1000):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.1)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> DripServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
            if getattr(task.get_coro(), "__name__", "") == "_serve":
                task.cancel()
        await self._server.wait_closed()


async def test_an_attempt_is_cut_before_its_lease_runs_out(store: SQLiteStore) -> None:
    clock = ManualClock(T0)
    # lease = max(1, 2 × 0.3) = 1 s; budget = 1 − 0.5 = 0.5 s. The drip takes 100 s.
    settings = settings_for(delivery_lease_s=1, webhook_timeout_s=0.3)
    async with DripServer() as server:
        await store.insert_subscription(webhook_sub(server.url))
        delivery = pending("sub_w", "itm_1", "webhook", T0)
        await store.insert_delivery(delivery)
        async with loopback_client(timeout_s=0.3) as client:
            deliverer = deliverer_for(store, settings, client, clock)
            assert deliverer.budget_s == 0.5
            started = time.monotonic()
            await deliverer.attempt(await claim(store, delivery.id, T0), item(1))
            elapsed = time.monotonic() - started
    assert elapsed < 2, f"the attempt ran {elapsed:.1f} s"
    retry = await current(store, delivery.id)
    assert retry.status == "pending" and retry.attempts == 1 and retry.lease_until is None
    assert "took longer than 0.5 s" in (retry.last_error or "")


# 5, 6 ─────────────────────────────────────────────────────────────────────────────────────────


@pytest.fixture
async def api(store: SQLiteStore) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for()
    app = FastAPI()
    router = build_router(
        store=store,
        policy=AddressPolicy(LOOPBACK),
        sector_ids=["transport", "energy"],
        agreement_ids=[],
        require_key=lambda: None,
        settings=settings,
    )
    app.include_router(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://corridor") as c:
        yield c


async def test_redeliver_refuses_a_delivery_in_flight(api: httpx.AsyncClient, store: SQLiteStore) -> None:
    await store.insert_subscription(webhook_sub("http://127.0.0.1:9/hook"))
    now = datetime.now(UTC)
    delivery = pending("sub_w", "itm_1", "webhook", now, attempts=2)
    await store.insert_delivery(delivery)
    lease = now + timedelta(seconds=60)
    assert await store.claim_delivery(delivery.id, now, lease) is not None  # a worker is sending it
    answer = await api.post(f"/api/v1/deliveries/{delivery.id}/redeliver")
    assert answer.status_code == 409 and "in flight" in answer.json()["detail"]
    held = await current(store, delivery.id)
    assert held.lease_until is not None and abs(held.lease_until - lease) < timedelta(milliseconds=1)
    assert held.attempts == 2, "the worker's lease and attempts are untouched"
    await store.update_delivery(delivery.id, {"lease_until": None, "status": "failed"})  # the attempt ended
    answer = await api.post(f"/api/v1/deliveries/{delivery.id}/redeliver")
    assert answer.status_code == 202 and answer.json()["status"] == "pending" and answer.json()["attempts"] == 0
    again = await api.post(f"/api/v1/deliveries/{delivery.id}/redeliver")  # pending, not leased: fine
    assert again.status_code == 202 and again.json()["lease_until"] is None


async def test_redeliver_refuses_what_the_attempt_would_refuse(api: httpx.AsyncClient, store: SQLiteStore) -> None:
    # Answered 202, and the delivery turned "failed" at its attempt a moment later.
    await store.insert_subscription(webhook_sub("http://127.0.0.1:9/hook"))
    delivery = pending("sub_w", "itm_1", "webhook", datetime.now(UTC), attempts=3)
    await store.insert_delivery(delivery)
    await store.update_delivery(delivery.id, {"status": "failed"})
    await store.update_subscription("sub_w", {"active": False})  # paused, or disabled by a 410
    paused = await api.post(f"/api/v1/deliveries/{delivery.id}/redeliver")
    assert paused.status_code == 409 and "resume it first" in paused.json()["detail"]
    await store.delete_subscription("sub_w")
    gone = await api.post(f"/api/v1/deliveries/{delivery.id}/redeliver")
    assert gone.status_code == 409 and "deleted" in gone.json()["detail"]
    assert (await current(store, delivery.id)).attempts == 3, "nothing was reset"


async def test_deliveries_list_pages_with_before(api: httpx.AsyncClient, store: SQLiteStore) -> None:
    now = datetime.now(UTC)
    await store.insert_deliveries(
        [
            pending("sub_w", f"itm_{n}", "webhook", now).model_copy(update={"created_at": now + timedelta(seconds=n)})
            for n in range(5)
        ]
    )
    first = (await api.get("/api/v1/deliveries", params={"limit": 2})).json()
    second = (await api.get("/api/v1/deliveries", params={"limit": 2, "before": first[-1]["id"]})).json()
    third = (await api.get("/api/v1/deliveries", params={"limit": 2, "before": second[-1]["id"]})).json()
    assert [d["item_id"] for d in first + second + third] == ["itm_4", "itm_3", "itm_2", "itm_1", "itm_0"]
    unknown = await api.get("/api/v1/deliveries", params={"before": "msg_nope"})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["query", "before"]


async def test_patch_clears_min_score_and_refuses_other_nulls(api: httpx.AsyncClient) -> None:
    created = await api.post(
        "/api/v1/subscriptions", json={"webhook_url": "http://127.0.0.1:9/hook", "min_score": 2, "sectors": ["energy"]}
    )
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    cleared = await api.patch(f"/api/v1/subscriptions/{sid}", json={"min_score": None})
    assert cleared.status_code == 200 and cleared.json()["min_score"] is None
    for field in ("sectors", "keywords", "bilateral_only", "cadence", "timezone"):
        refused = await api.patch(f"/api/v1/subscriptions/{sid}", json={field: None})
        assert refused.status_code == 422 and "cannot be null" in refused.text, field
    shown = (await api.get(f"/api/v1/subscriptions/{sid}")).json()
    assert shown["sectors"] == ["energy"] and shown["min_score"] is None


async def test_digest_cadence_is_email_only(api: httpx.AsyncClient) -> None:
    for body in (
        {"webhook_url": "http://127.0.0.1:9/hook", "cadence": "daily"},
        {"channel": "kafka", "cadence": "hourly"},
    ):
        refused = await api.post("/api/v1/subscriptions", json=body)
        assert refused.status_code == 422 and "email only" in refused.text, body
    hook = (await api.post("/api/v1/subscriptions", json={"webhook_url": "http://127.0.0.1:9/hook"})).json()
    refused = await api.patch(f"/api/v1/subscriptions/{hook['id']}", json={"cadence": "daily"})
    assert refused.status_code == 422 and "email only" in refused.text
    mail = await api.post("/api/v1/subscriptions", json={"email": "a@example.org", "cadence": "daily"})
    assert mail.status_code == 201
    assert (
        await api.patch(f"/api/v1/subscriptions/{mail.json()['id']}", json={"cadence": "hourly"})
    ).status_code == 200


# 7 ────────────────────────────────────────────────────────────────────────────────────────────


async def test_410_disables_the_endpoint_at_once(store: SQLiteStore, receiver: WebhookReceiver, smtp: SmtpSink) -> None:
    clock = ManualClock(T0)
    bus = MemoryBus()
    await store.insert_subscription(webhook_sub(receiver.url, owner_email="o@example.org"))
    delivery = pending("sub_w", "itm_1", "webhook", T0)
    await store.insert_delivery(delivery)
    receiver.statuses = [410]
    async with loopback_client() as client:
        deliverer = deliverer_for(store, settings_for(smtp_port=smtp.port), client, clock, bus)
        await deliverer.attempt(await claim(store, delivery.id, T0), item(1))
    subscription = await store.get_subscription("sub_w")
    assert subscription is not None and not subscription.active
    assert "410" in (subscription.disabled_reason or "")
    assert [Envelope.decode(d).type for _, d in bus._logs[TOPIC_OPS].messages] == ["subscription.disabled"]
    assert [m["To"] for m in smtp.messages] == ["o@example.org"]


async def test_an_owners_notice_that_cannot_be_sent_is_logged(
    store: SQLiteStore, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on the SMTP port: the endpoint is still disabled, and the notice that did
    # not go out is said so (it was dropped without a word: the audit of 2026-12-05).
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    await store.insert_subscription(webhook_sub(receiver.url, owner_email="o@example.org"))
    delivery = pending("sub_w", "itm_1", "webhook", T0)
    await store.insert_delivery(delivery)
    receiver.statuses = [410]
    async with loopback_client() as client:
        deliverer = deliverer_for(store, settings_for(smtp_port=port), client, ManualClock(T0), MemoryBus())
        await deliverer.attempt(await claim(store, delivery.id, T0), item(1))
    subscription = await store.get_subscription("sub_w")
    assert subscription is not None and not subscription.active
    assert "sub_w: the owner's notice was not sent" in caplog.text


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (format_datetime(T0 + timedelta(seconds=90), usegmt=True), 90.0),
        ("Sun, 01 Mar 2026 12:02:00 -0000", 120.0),  # no zone given: UTC
        (format_datetime(T0 - timedelta(hours=1), usegmt=True), 0.0),  # in the past: now
        ("soon", None),
    ],
)
async def test_retry_after_in_seconds_or_as_an_http_date(header: str, expected: float | None) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": header})

    async with loopback_client(transport=httpx.MockTransport(handler)) as client:
        outcome = await send_webhook(client, webhook_sub("http://127.0.0.1:9/hook"), "msg_1", {}, T0)
    assert outcome.retryable and outcome.retry_after_s == expected


# 8 ────────────────────────────────────────────────────────────────────────────────────────────


def digest_sub(cadence: str = "daily") -> Subscription:
    return Subscription.model_validate(
        {"id": "sub_d", "channel": "email", "email": "d@example.org", "cadence": cadence, "digest_time": "08:00"}
    )


def queued(n: int, period: str, closes: datetime) -> Delivery:
    return pending("sub_d", f"itm_{n}", "email", T0, status="queued", digest_period=period, next_attempt_at=closes)


async def drain(deliverer: Deliverer, store: SQLiteStore, clock: ManualClock) -> int:
    await deliverer.open_digests()
    attempted = 0
    while d := await store.claim_due_delivery(clock.now, clock.now + timedelta(seconds=30)):
        await deliverer._attempt_stored(d)
        attempted += 1
    return attempted


def bodies(smtp: SmtpSink) -> list[str]:
    return [m.get_body(preferencelist=("plain",)).get_content() for m in smtp.messages]  # type: ignore[union-attr]


async def test_switching_to_immediate_sends_the_leftover_queue(store: SQLiteStore, smtp: SmtpSink) -> None:
    clock = ManualClock(T0)
    await store.insert_subscription(digest_sub("daily"))
    for n in (1, 2):
        await store.upsert_item(item(n))
    tomorrow_8 = datetime(2026, 3, 2, 8, tzinfo=UTC)
    await store.insert_deliveries([queued(1, "2026-03-02", tomorrow_8), queued(2, "2026-03-02", tomorrow_8)])
    await store.update_subscription("sub_d", {"cadence": "immediate"})  # PATCH cadence=immediate
    async with loopback_client() as client:
        deliverer = deliverer_for(store, settings_for(smtp_port=smtp.port), client, clock)
        assert await drain(deliverer, store, clock) == 1
    [body] = bodies(smtp)
    assert "Rail item 1" in body and "Rail item 2" in body and "daily digest" in smtp.messages[0]["Subject"]
    assert await store.list_deliveries(subscription_id="sub_d", status="queued") == []


async def test_alerts_late_for_a_sent_period_go_in_a_follow_up_digest(store: SQLiteStore, smtp: SmtpSink) -> None:
    clock = ManualClock(T0)
    clock.now = datetime(2026, 3, 1, 8, 0, 30, tzinfo=UTC)
    await store.insert_subscription(digest_sub("daily"))
    for n in (1, 2, 3):
        await store.upsert_item(item(n))
    today_8 = datetime(2026, 3, 1, 8, tzinfo=UTC)
    await store.insert_delivery(queued(1, "2026-03-01", today_8))
    async with loopback_client() as client:
        settings = settings_for(smtp_port=smtp.port)
        deliverer = deliverer_for(store, settings, client, clock)
        assert await drain(deliverer, store, clock) == 1
        # digest_time moved to 20:00: new alerts map to the key "2026-03-01" again, whose digest is gone.
        today_20 = datetime(2026, 3, 1, 20, tzinfo=UTC)
        await store.insert_deliveries([queued(2, "2026-03-01", today_20), queued(3, "2026-03-01", today_20)])
        clock.now = today_20 + timedelta(seconds=30)
        replica = deliverer_for(store, settings, client, clock)
        await replica.open_digests()  # a second replica opens the same follow-up, not another one
        assert await drain(deliverer, store, clock) == 1
        assert await drain(deliverer, store, clock) == 0, "sent once"
    first, late = bodies(smtp)
    assert "Rail item 1" in first and "Rail item 2" not in first
    assert "Rail item 2" in late and "Rail item 3" in late and "Rail item 1" not in late
    assert "follow-up" in smtp.messages[1]["Subject"]
    follow_up = await store.get_delivery(Delivery.make_id("sub_d", digest_item("2026-03-01", 1), "email"))
    assert follow_up is not None and follow_up.status == "delivered"
    assert await store.list_deliveries(subscription_id="sub_d", status="queued") == []


async def test_a_digest_that_fails_permanently_fails_its_alerts(
    store: SQLiteStore, replying_smtp: ReplyingSmtp
) -> None:
    """They were carried by the digest: left queued they would wait for a period that is over."""
    clock = ManualClock(T0)
    replying_smtp.rcpt = "550 5.1.1 No such user"
    await store.insert_subscription(digest_sub("daily"))
    await store.upsert_item(item(1))
    await store.insert_delivery(queued(1, "2026-03-01", datetime(2026, 3, 1, 8, tzinfo=UTC)))
    async with loopback_client() as client:
        deliverer = deliverer_for(store, settings_for(smtp_port=replying_smtp.port), client, clock)
        assert await drain(deliverer, store, clock) == 1
        assert await drain(deliverer, store, clock) == 0, "no follow-up for alerts that failed with their digest"
    [alert] = await store.list_deliveries(item_id="itm_1")
    assert alert.status == "failed" and "550" in (alert.last_error or "")


# 9 ────────────────────────────────────────────────────────────────────────────────────────────


async def test_concurrent_alerts_never_exceed_the_pool(store: SQLiteStore) -> None:
    """handle() used to check for room, await the claim, then spawn: alerts consumed together
    all passed the check and all started."""
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.1)
        in_flight -= 1
        return httpx.Response(200)

    clock = ManualClock(T0)
    settings = settings_for(delivery_concurrency=4, delivery_per_subscription=2)
    await store.insert_subscription(webhook_sub("http://127.0.0.1:9/hook"))
    deliveries = [pending("sub_w", f"itm_{n}", "webhook", T0) for n in range(6)]
    await store.insert_deliveries(deliveries)
    async with loopback_client(transport=httpx.MockTransport(handler)) as client:
        deliverer = deliverer_for(store, settings, client, clock)
        envelopes = [
            Envelope.wrap(
                "alert", AlertPayload(delivery_id=d.id, subscription_id="sub_w", channel="webhook", item=item(n))
            )
            for n, d in enumerate(deliveries)
        ]
        await asyncio.gather(*(deliverer.handle(e) for e in envelopes))
        await deliverer._pool.drain()
    assert peak <= 2, f"{peak} requests in flight for one subscription (its share is 2)"
    assert len(deliverer._waiting) == 4, "the others wait for a slot"
