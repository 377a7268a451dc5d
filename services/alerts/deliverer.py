"""The deliverer: sends alerts, records every attempt, retries on a schedule, never twice.

Two ways in, one path out:
- ``handle`` consumes corridor.alerts.v1 and starts the attempt in the background at once (or,
  when the subscription has its share of attempts in flight, leaves the alert waiting);
- ``sweep`` claims pending deliveries whose next attempt is due (retries, alerts whose message
  was lost, alerts that waited) and attempts them.
Both first *claim* the delivery (an atomic lease in the store), so one delivery is attempted by
one worker at a time, across replicas and restarts. The webhook-id is the delivery id, stable
across retries, so a receiver can drop the rare duplicate (a crash between send and record).
Attempts run in one bounded pool (shared.workpool) with a per-subscription share: a dead
endpoint's backlog waits in the store for its retry schedule, never in front of other
subscribers, and never in the consume path.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import timedelta

import httpx

from services.alerts.mailer import (
    build_agreement_message,
    build_confirmation,
    build_digest,
    build_disabled_notice,
    build_message,
    send_email,
)
from services.alerts.outcome import Outcome
from services.alerts.ratelimit import RecipientLimiter
from services.alerts.waiting import WaitingAlerts
from services.alerts.webhook import agreement_body, alert_body, send_webhook
from shared.bus import Bus
from shared.envelope import TOPIC_DEADLETTER, TOPIC_OPS, DeadLetter, Envelope
from shared.errors import PoisonMessage
from shared.metrics import Metrics
from shared.models import (
    EVENT_ITEM_PREFIX,
    AgreementEvent,
    AlertPayload,
    ClassifiedItem,
    Delivery,
    Subscription,
    SubscriptionDisabled,
)
from shared.settings import Settings
from shared.store import Store
from shared.store.base import MAX_SCAN
from shared.timeutil import Clock, utcnow
from shared.workpool import WorkPool, claim_loop

log = logging.getLogger(__name__)

CONFIRM_ITEM = "confirm"  # item id of a double opt-in email's delivery
MAX_ERROR_CHARS = 500
MAX_RETRY_AFTER_S = 6 * 3600.0
DIGEST_CHECK_S = 30.0  # a digest goes out at most this long after its period closes


class Deliverer:
    """Attempts deliveries and records their outcome."""

    def __init__(
        self,
        *,
        store: Store,
        bus: Bus,
        client: httpx.AsyncClient,
        settings: Settings,
        metrics: Metrics,
        clock: Clock = utcnow,
    ) -> None:
        self._store = store
        self._bus = bus
        self._client = client
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._delays = settings.retry_delays_s
        self._lease = timedelta(seconds=max(settings.delivery_lease_s, settings.webhook_timeout_s * 2))
        self._deadletter = settings.topic(TOPIC_DEADLETTER)
        self._ops = settings.topic(TOPIC_OPS)
        self._recipients = RecipientLimiter(settings.email_rate_per_hour)
        # Attempts in flight: at most delivery_concurrency, at most delivery_per_subscription for
        # one subscription, so a slow or dead endpoint holds a bounded share of the slots.
        self._pool = WorkPool(
            "alerts deliverer",
            limit=settings.delivery_concurrency,
            per_key_limit=min(settings.delivery_per_subscription, settings.delivery_concurrency),
        )
        self._waiting = WaitingAlerts(settings.delivery_waiting_max)

    async def handle(self, envelope: Envelope) -> None:
        """Bus handler for corridor.alerts.v1: start the attempt in the background and return —
        the consume path never waits on an endpoint. When the alert's subscription already has
        its share of attempts in flight (a slow or dead endpoint), the alert waits for a slot as
        an id in memory, and in the store in any case: the sweep claims it if this process
        dies, or once its hand-off time passes."""
        if envelope.type != "alert":
            raise PoisonMessage(f"unexpected event type {envelope.type!r} on the alerts topic")
        alert = envelope.payload_as(AlertPayload)
        if alert.channel == "kafka":
            return  # delivered by being on the topic
        if not self._pool.has_room(alert.subscription_id):
            # No wake-up: nothing can start before a slot frees, and a finishing attempt wakes the
            # sweep itself (waking it per queued alert cost a store claim each, for nothing).
            self._waiting.add(alert.subscription_id, alert.delivery_id)
            return
        now = self._clock()
        delivery = await self._store.claim_delivery(alert.delivery_id, now, now + self._lease)
        if delivery is None:
            return  # already delivered, given up, or being attempted by another worker
        self._start(delivery, alert.item or alert.event, stored=False)

    def _start(self, delivery: Delivery, subject: ClassifiedItem | AgreementEvent | None, *, stored: bool) -> None:
        work = self._attempt_stored(delivery) if stored else self.attempt(delivery, subject)
        self._pool.spawn(work, key=delivery.subscription_id, name=f"deliver {delivery.id}")

    async def _claim_next(self) -> Delivery | None:
        """The next delivery to attempt: a fresh alert waiting for its subscription's slot, else
        the longest-due delivery of a subscription with a free slot."""
        now = self._clock()
        for delivery_id in self._waiting.take(self._pool):
            delivery = await self._store.claim_delivery(delivery_id, now, now + self._lease)
            if delivery is None:
                continue
            if delivery.attempts and delivery.next_attempt_at > now:
                # Attempted meanwhile (by the sweep of another process): keep its retry schedule.
                await self._store.update_delivery(delivery.id, {"lease_until": None})
                continue
            return delivery
        return await self._store.claim_due_delivery(
            now, now + self._lease, exclude_subscriptions=self._pool.full_keys()
        )

    async def sweep(self, stop: asyncio.Event) -> None:
        """Attempt due deliveries until ``stop`` (retries, alerts whose message was lost, alerts
        that waited for a slot), within the pool's bounds; open the digests whose period closed.
        Drains the attempts in flight before returning."""
        digests_checked = float("-inf")

        async def on_tick() -> None:
            nonlocal digests_checked
            # Digest periods are an hour at the shortest: scanning every subscription on each
            # sweep (every 2 s) would be repeated store reads for nothing.
            if time.monotonic() - digests_checked >= DIGEST_CHECK_S:
                await self.open_digests()
                digests_checked = time.monotonic()

        await claim_loop(
            self._pool,
            claim=self._claim_next,
            start=lambda delivery: self._start(delivery, None, stored=True),
            stop=stop,
            tick_s=self._settings.delivery_sweep_s,
            on_tick=on_tick,
        )

    async def open_digests(self) -> None:
        """For every digest subscription, turn each closed period's queued alerts into one digest
        delivery (idempotent: the digest's id is fixed by subscription and period)."""
        now = self._clock()
        for subscription in await self._store.list_subscriptions(active_only=True):
            if subscription.cadence == "immediate":
                continue
            queued = await self._store.list_deliveries(subscription_id=subscription.id, status="queued", limit=MAX_SCAN)
            for period in sorted({d.digest_period for d in queued if d.digest_period and d.next_attempt_at <= now}):
                digest_item = f"digest:{period}"
                await self._store.insert_delivery(
                    Delivery(
                        id=Delivery.make_id(subscription.id, digest_item, subscription.channel),
                        subscription_id=subscription.id,
                        item_id=digest_item,
                        channel=subscription.channel,
                        created_at=now,
                        next_attempt_at=now,
                        digest_period=period,
                    )
                )

    async def _attempt_stored(self, delivery: Delivery) -> None:
        """Attempt a claimed delivery whose subject is read from the store. An outage propagates
        (the pool logs it; the lease runs out and the delivery is claimed again); so does a bug."""
        if delivery.item_id == CONFIRM_ITEM or delivery.item_id.startswith("digest:"):
            await self.attempt(delivery, None)
            return
        subject: ClassifiedItem | AgreementEvent | None
        if delivery.item_id.startswith(EVENT_ITEM_PREFIX):
            subject = await self._store.get_agreement_event(delivery.item_id.removeprefix(EVENT_ITEM_PREFIX))
        else:
            subject = await self._store.get_item(delivery.item_id)
        if subject is None:
            await self._finish(delivery, Outcome.permanent("item no longer stored"))
            return
        await self.attempt(delivery, subject)

    async def attempt(self, delivery: Delivery, item: ClassifiedItem | AgreementEvent | None) -> None:
        """Send one claimed delivery (an item's or an agreement event's alert, a digest or a
        confirmation) and record the outcome."""
        subscription = await self._store.get_subscription(delivery.subscription_id)
        is_confirm = delivery.item_id == CONFIRM_ITEM
        if subscription is None or not subscription.active or (not subscription.confirmed and not is_confirm):
            await self._finish(delivery, Outcome.permanent("subscription deleted, paused or unconfirmed"))
            return
        now = self._clock()
        if delivery.channel == "email" and subscription.email:
            wait = self._recipients.wait_s(subscription.email, time.monotonic())
            if wait > 0:
                await self._defer(delivery, wait)
                return
        queued: list[Delivery] = []
        if delivery.item_id.startswith("digest:"):
            queued = await self._store.list_deliveries(
                subscription_id=subscription.id, status="queued", digest_period=delivery.digest_period, limit=MAX_SCAN
            )
            stored = await self._store.get_items(d.item_id for d in queued)
            items = [stored[d.item_id] for d in queued if d.item_id in stored]
            events = [
                e
                for d in queued
                if d.item_id.startswith(EVENT_ITEM_PREFIX)
                and (e := await self._store.get_agreement_event(d.item_id.removeprefix(EVENT_ITEM_PREFIX)))
            ]
            if not items and not events:
                await self._finish(delivery, Outcome.success())
                return
            message = build_digest(
                self._settings,
                subscription,
                items,
                delivery_id=delivery.id,
                period=delivery.digest_period or "",
                events=events,
            )
            outcome = await send_email(self._settings, message)
        elif is_confirm:
            outcome = await send_email(
                self._settings, build_confirmation(self._settings, subscription, delivery_id=delivery.id)
            )
        elif item is None:
            outcome = Outcome.permanent("item no longer stored")
        elif isinstance(item, AgreementEvent):
            link = f"{self._settings.public_base_url.rstrip('/')}/api/v1/agreements/{item.agreement_id}"
            if delivery.channel == "webhook":
                body = agreement_body(subscription, item, link=link)
                outcome = await send_webhook(self._client, subscription, delivery.id, body, now)
            else:
                message = build_agreement_message(
                    self._settings, subscription, item, delivery_id=delivery.id, link=link
                )
                outcome = await send_email(self._settings, message)
        elif delivery.channel == "webhook":
            link = f"{self._settings.public_base_url.rstrip('/')}/api/v1/events/{item.id}"
            outcome = await send_webhook(
                self._client, subscription, delivery.id, alert_body(subscription, item, link=link), now
            )
        else:
            link = f"{self._settings.public_base_url.rstrip('/')}/api/v1/events/{item.id}"
            message = build_message(self._settings, subscription, item, delivery_id=delivery.id, link=link)
            outcome = await send_email(self._settings, message)
        if delivery.channel == "email" and subscription.email and outcome.ok:
            self._recipients.record(subscription.email, time.monotonic())
        await self._finish(delivery, outcome)
        if outcome.ok:
            for entry in queued:
                await self._store.update_delivery(entry.id, {"status": "delivered", "delivered_at": now})
        if delivery.channel == "webhook" and not is_confirm:
            await self._track_endpoint(subscription, outcome)

    async def _defer(self, delivery: Delivery, wait_s: float) -> None:
        """Rate-limited: try again later without spending one of the delivery's attempts."""
        next_at = self._clock() + timedelta(seconds=wait_s)
        await self._store.update_delivery(delivery.id, {"next_attempt_at": next_at, "lease_until": None})
        self._metrics.deliveries.labels(delivery.channel, "rate_limited").inc()

    async def _track_endpoint(self, subscription: Subscription, outcome: Outcome) -> None:
        """Disable a webhook endpoint only after it failed without a single success for the whole
        window; occasional failures never disable it."""
        now = self._clock()
        if outcome.ok:
            if subscription.failing_since is not None:
                await self._store.update_subscription(subscription.id, {"failing_since": None})
            return
        if subscription.failing_since is None:
            await self._store.update_subscription(subscription.id, {"failing_since": now})
            return
        if (now - subscription.failing_since).total_seconds() < self._settings.endpoint_disable_after_s:
            return
        reason = f"endpoint failing since {subscription.failing_since.isoformat()}: {outcome.error}"
        await self._store.update_subscription(subscription.id, {"active": False, "disabled_reason": reason[:500]})
        event = SubscriptionDisabled(
            subscription_id=subscription.id, webhook_url=subscription.webhook_url or "", reason=reason[:500], at=now
        )
        await self._bus.publish(self._ops, subscription.id, Envelope.wrap("subscription.disabled", event))
        log.warning("subscription %s disabled: %s", subscription.id, reason)
        if subscription.owner_email:
            await send_email(self._settings, build_disabled_notice(self._settings, subscription, reason))

    async def _finish(self, delivery: Delivery, outcome: Outcome) -> None:
        now = self._clock()
        attempts = delivery.attempts + 1
        fields: dict[str, object] = {
            "attempts": attempts,
            "last_attempt_at": now,
            "last_status_code": outcome.status_code,
            "last_error": outcome.error[:MAX_ERROR_CHARS] if outcome.error else None,
            "lease_until": None,
        }
        if outcome.ok:
            fields |= {"status": "delivered", "delivered_at": now}
            label = "delivered"
        elif outcome.retryable and attempts <= len(self._delays):
            delay = self._delays[attempts - 1] * random.uniform(0.8, 1.2)
            if outcome.retry_after_s is not None:
                delay = max(delay, min(outcome.retry_after_s, MAX_RETRY_AFTER_S))
            fields["next_attempt_at"] = now + timedelta(seconds=delay)
            label = "retry"
        else:
            fields["status"] = "failed"
            label = "failed"
        await self._store.update_delivery(delivery.id, fields)
        self._metrics.deliveries.labels(delivery.channel, label).inc()
        if label == "failed":
            reason = f"delivery failed after {attempts} attempts: {outcome.error}"
            dead = DeadLetter(
                topic="(delivery)", key=delivery.id, reason=reason[:2000], original=delivery.model_dump_json()
            )
            await self._bus.publish(self._deadletter, delivery.subscription_id, Envelope.wrap("deadletter", dead))
            log.warning("delivery %s failed permanently: %s", delivery.id, outcome.error)
        elif label == "retry":
            log.info("delivery %s attempt %d failed, will retry: %s", delivery.id, attempts, outcome.error)
