"""The deliverer: sends alerts, records every attempt, retries on a schedule, never twice.

Two ways in, one path out:
- ``handle`` consumes corridor.alerts.v1 and attempts the delivery at once;
- ``sweep`` finds pending deliveries whose next attempt is due (retries, and alerts whose
  message was lost) and attempts them.
Both first *claim* the delivery (an atomic lease in the store), so one delivery is attempted by
one worker at a time, across replicas and restarts. The webhook-id is the delivery id, stable
across retries, so a receiver can drop the rare duplicate (a crash between send and record).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import timedelta

import httpx

from services.alerts.mailer import build_message, send_email
from services.alerts.outcome import Outcome
from services.alerts.webhook import alert_body, send_webhook
from shared.bus import Bus
from shared.envelope import TOPIC_DEADLETTER, DeadLetter, Envelope
from shared.errors import PoisonMessage
from shared.metrics import Metrics
from shared.models import AlertPayload, ClassifiedItem, Delivery
from shared.settings import Settings
from shared.store import Store
from shared.timeutil import Clock, utcnow

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 500
MAX_RETRY_AFTER_S = 6 * 3600.0
DRAIN_DEADLINE_S = 10.0


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

    async def handle(self, envelope: Envelope) -> None:
        """Bus handler for corridor.alerts.v1."""
        if envelope.type != "alert":
            raise PoisonMessage(f"unexpected event type {envelope.type!r} on the alerts topic")
        alert = envelope.payload_as(AlertPayload)
        now = self._clock()
        delivery = await self._store.claim_delivery(alert.delivery_id, now, now + self._lease)
        if delivery is None:
            return  # already delivered, given up, or being attempted by another worker
        await self.attempt(delivery, alert.item)

    async def sweep(self, stop: asyncio.Event) -> None:
        """Attempt due deliveries until ``stop``, at most ``delivery_concurrency`` at once."""
        in_flight: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            while len(in_flight) < self._settings.delivery_concurrency:
                now = self._clock()
                delivery = await self._store.claim_due_delivery(now, now + self._lease)
                if delivery is None:
                    break
                task = asyncio.create_task(self._attempt_stored(delivery))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.delivery_sweep_s)
        if in_flight:
            await asyncio.wait(in_flight, timeout=DRAIN_DEADLINE_S)

    async def _attempt_stored(self, delivery: Delivery) -> None:
        try:
            item = await self._store.get_item(delivery.item_id)
            if item is None:
                await self._finish(delivery, Outcome.permanent("item no longer stored"))
                return
            await self.attempt(delivery, item)
        except Exception:
            # The lease runs out and the sweep tries again; the error is not swallowed silently.
            log.exception("delivery %s failed unexpectedly", delivery.id)

    async def attempt(self, delivery: Delivery, item: ClassifiedItem) -> None:
        """Send one claimed delivery and record the outcome."""
        subscription = await self._store.get_subscription(delivery.subscription_id)
        if subscription is None or not subscription.active:
            await self._finish(delivery, Outcome.permanent("subscription deleted or paused"))
            return
        now = self._clock()
        link = f"{self._settings.public_base_url.rstrip('/')}/api/v1/events/{item.id}"
        if delivery.channel == "webhook":
            outcome = await send_webhook(
                self._client, subscription, delivery.id, alert_body(subscription, item, link=link), now
            )
        else:
            message = build_message(self._settings, subscription, item, delivery_id=delivery.id, link=link)
            outcome = await send_email(self._settings, message)
        await self._finish(delivery, outcome)

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
