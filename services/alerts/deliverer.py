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

Contracts:
- A claimed delivery is attempted only when due: a fresh one (no attempt yet) at once, a retried
  one not before its ``next_attempt_at`` (the retry schedule and Retry-After hold even when its
  alert is consumed again: an edited feed entry, a redelivered Kafka message).
- An attempt never outlives its lease: its sending part is cut at the lease minus a margin and
  counts as a retryable failure, so no other worker can claim the delivery while it still runs.
- Every failure of one delivery ends in an outcome (sent, retry, failed with a reason); only a
  store or bus outage (the lease runs out, the delivery is claimed again) or a bug propagates.
- Digests are email only. Each closed period's queued alerts go out in one digest; alerts that
  reach a period after its digest finished go out in a follow-up digest of that period; a
  subscription switched to ``immediate`` has its leftover queued alerts sent at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

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
from shared.envelope import TOPIC_ALERTS, TOPIC_DEADLETTER, TOPIC_OPS, DeadLetter, Envelope
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
DIGEST_PREFIX = "digest:"  # item id of a digest's delivery: digest:<period>[:late-<n>]
MAX_ERROR_CHARS = 500
MAX_RETRY_AFTER_S = 6 * 3600.0
DIGEST_CHECK_S = 30.0  # a digest goes out at most this long after its period closes
# Time kept from an attempt's lease for recording its outcome (at most half the lease).
LEASE_MARGIN_S = 10.0
# Follow-up digests of one period looked for before giving up (each one takes every alert that
# was queued for the period when it was sent, so more than a few means something is wrong).
MAX_DIGESTS_PER_PERIOD = 50

Verdict = Literal["delivered", "retry", "failed"]


def digest_item(period: str, n: int = 0) -> str:
    """Item id of a period's digest (``n`` = 0) or of its n-th follow-up: fixed by content, so
    replicas opening the same digest create the same delivery."""
    return f"{DIGEST_PREFIX}{period}" if n == 0 else f"{DIGEST_PREFIX}{period}:late-{n}"


@dataclass(frozen=True)
class _Sent:
    """What one send produced: its outcome, and for a digest the queued alerts it carried."""

    outcome: Outcome
    covered: list[Delivery] = field(default_factory=list)


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
        self._lease_s = max(settings.delivery_lease_s, settings.webhook_timeout_s * 2)
        self._lease = timedelta(seconds=self._lease_s)
        # The sending part of an attempt must end while the lease still holds, with time left to
        # record the outcome: per-phase timeouts (connect per address, read per chunk, SMTP per
        # command) do not bound the whole, and a slow-drip receiver could outlast the lease.
        self.budget_s = self._lease_s - min(LEASE_MARGIN_S, self._lease_s / 2)
        self._alerts = settings.topic(TOPIC_ALERTS)
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
        """Bus handler for corridor.alerts.v1: start the claim and attempt in the background and
        return — the consume path never waits on an endpoint or the store. When the alert's
        subscription already has its share of attempts in flight (a slow or dead endpoint), the
        alert waits for a slot as an id in memory, and in the store in any case: the sweep claims
        it if this process dies, or once its hand-off time passes."""
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
        # The slot is taken here, before any await: checking for room, awaiting the claim and
        # then spawning let concurrent handlers and the sweep overshoot the pool's bounds. A claim
        # that finds nothing to do just frees the slot; one that fails (store outage) is logged
        # by the pool, and the sweep claims the delivery after its hand-off time.
        subject = alert.item or alert.event
        self._pool.spawn(
            self._claim_and_attempt(alert.delivery_id, subject),
            key=alert.subscription_id,
            name=f"deliver {alert.delivery_id}",
        )

    async def _claim_and_attempt(self, delivery_id: str, subject: ClassifiedItem | AgreementEvent | None) -> None:
        delivery = await self._claim_if_due(delivery_id)
        if delivery is not None:
            await self.attempt(delivery, subject)

    async def _claim_if_due(self, delivery_id: str) -> Delivery | None:
        """Lease the delivery if it is pending, free and due. A delivery never attempted is due
        at once (its ``next_attempt_at`` is only the sweep's hand-off time); one attempted before
        waits for its retry time (schedule, Retry-After): its lease is released at once."""
        now = self._clock()
        delivery = await self._store.claim_delivery(delivery_id, now, now + self._lease)
        if delivery is None:
            return None  # already delivered, given up, or being attempted by another worker
        if delivery.attempts and delivery.next_attempt_at > now:
            await self._store.update_delivery(delivery.id, {"lease_until": None})
            return None
        return delivery

    async def _claim_next(self) -> Delivery | None:
        """The next delivery to attempt: a fresh alert waiting for its subscription's slot, else
        the longest-due delivery of a subscription with a free slot."""
        for delivery_id in self._waiting.take(self._pool):
            delivery = await self._claim_if_due(delivery_id)
            if delivery is None:
                continue
            return await self._room_for(delivery)
        now = self._clock()
        delivery = await self._store.claim_due_delivery(
            now, now + self._lease, exclude_subscriptions=self._pool.full_keys()
        )
        return None if delivery is None else await self._room_for(delivery)

    async def _room_for(self, delivery: Delivery) -> Delivery | None:
        """The claimed delivery if the pool still has a slot for it: the alert consumer may
        have taken the last one while the claim was awaited. Otherwise its lease is released
        (a fresh alert goes back to wait for a slot, a retry stays due for the sweep) and None
        ends this round of claims."""
        if self._pool.has_room(delivery.subscription_id):
            return delivery
        await self._store.update_delivery(delivery.id, {"lease_until": None})
        if not delivery.attempts:
            self._waiting.add(delivery.subscription_id, delivery.id)
        return None

    def _start(self, delivery: Delivery) -> None:
        self._pool.spawn(self._attempt_stored(delivery), key=delivery.subscription_id, name=f"deliver {delivery.id}")

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
            start=self._start,
            stop=stop,
            tick_s=self._settings.delivery_sweep_s,
            on_tick=on_tick,
        )

    async def open_digests(self) -> None:
        """Turn queued alerts into deliveries, for every active subscription that has some:

        - email: each period that closed gets one digest delivery, or a follow-up digest when the
          period's digest already finished (alerts queued after it was sent: a changed
          ``digest_time`` or time zone mapped them to that period, or the period held more than
          one digest reads, MAX_SCAN). A subscription switched to ``immediate`` has every
          period's leftovers sent at once, as a last digest per period.
        - webhook and kafka carry no digests (subscriptions of that shape stored before the API
          refused them): their queued alerts become ordinary pending deliveries.

        Idempotent and safe on several replicas at once: digest ids are fixed by subscription,
        period and follow-up number, and a period never has two digests pending."""
        now = self._clock()
        for subscription in await self._store.list_subscriptions(active_only=True):
            queued = await self._store.list_deliveries(subscription_id=subscription.id, status="queued", limit=MAX_SCAN)
            if not queued:
                continue
            if subscription.channel != "email":
                for entry in queued:
                    await self._store.update_delivery(entry.id, {"status": "pending", "next_attempt_at": now})
                continue
            leftovers = subscription.cadence == "immediate"
            due = {d.digest_period for d in queued if d.digest_period and (leftovers or d.next_attempt_at <= now)}
            for period in sorted(due):
                await self._open_digest(subscription, period, now)

    async def _open_digest(self, subscription: Subscription, period: str, now: datetime) -> None:
        """Create the period's digest, or its next follow-up when every earlier one finished;
        nothing while one is pending (it takes the period's queued alerts when it is sent)."""
        for n in range(MAX_DIGESTS_PER_PERIOD):
            item_id = digest_item(period, n)
            delivery_id = Delivery.make_id(subscription.id, item_id, subscription.channel)
            existing = await self._store.get_delivery(delivery_id)
            if existing is not None and existing.status == "pending":
                return
            if existing is None:
                await self._store.insert_delivery(
                    Delivery(
                        id=delivery_id,
                        subscription_id=subscription.id,
                        item_id=item_id,
                        channel=subscription.channel,
                        created_at=now,
                        next_attempt_at=now,
                        digest_period=period,
                    )
                )
                return
        log.error(
            "subscription %s: period %s already had %d digests; its queued alerts stay queued",
            subscription.id,
            period,
            MAX_DIGESTS_PER_PERIOD,
        )

    async def _attempt_stored(self, delivery: Delivery) -> None:
        """Attempt a claimed delivery whose subject is read from the store. An outage propagates
        (the pool logs it; the lease runs out and the delivery is claimed again); so does a bug."""
        if delivery.item_id == CONFIRM_ITEM or delivery.item_id.startswith(DIGEST_PREFIX):
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
        confirmation) and record the outcome. The sending part gets ``budget_s`` (the lease less
        a margin): past it the attempt is a retryable failure. A delivery its channel cannot
        carry (a digest or an email without an address) fails permanently with the reason."""
        subscription = await self._store.get_subscription(delivery.subscription_id)
        is_confirm = delivery.item_id == CONFIRM_ITEM
        if subscription is None or not subscription.active or (not subscription.confirmed and not is_confirm):
            await self._finish(delivery, Outcome.permanent("subscription deleted, paused or unconfirmed"))
            return
        budget = asyncio.timeout(self.budget_s)
        try:
            async with budget:
                sent = await self._send(delivery, subscription, item)
        except TimeoutError:
            if not budget.expired():
                raise  # not ours: a bug in a sender, which should have turned it into an Outcome
            error = f"attempt took longer than {self.budget_s:g} s (its lease is {self._lease_s:g} s)"
            sent = _Sent(Outcome.transient(error))
        if sent is None:
            return  # deferred by the recipient's rate limit, no attempt spent
        outcome = sent.outcome
        if delivery.channel == "email" and subscription.email and outcome.ok:
            self._recipients.record(subscription.email, time.monotonic())
        verdict = self._verdict(delivery, outcome)
        # The digest's alerts are marked before the digest itself: a crash in between leaves the
        # digest pending, and its next attempt finds them no longer queued (nothing sent twice).
        if verdict != "retry":
            await self._close_covered(delivery, sent.covered, outcome, verdict)
        await self._finish(delivery, outcome)
        if delivery.channel == "webhook" and not is_confirm:
            if outcome.status_code == 410:
                # Standard Webhooks: 410 Gone means the receiver removed the endpoint for good.
                await self._disable(subscription, f"endpoint answered 410 Gone: {outcome.error}")
            else:
                await self._track_endpoint(subscription, outcome)

    async def _send(
        self, delivery: Delivery, subscription: Subscription, item: ClassifiedItem | AgreementEvent | None
    ) -> _Sent | None:
        """One send on the delivery's channel; None when the recipient's rate limit deferred it."""
        now = self._clock()
        is_digest = delivery.item_id.startswith(DIGEST_PREFIX)
        is_confirm = delivery.item_id == CONFIRM_ITEM
        if delivery.channel == "email":
            if not subscription.email:
                return _Sent(Outcome.permanent("email delivery, but the subscription has no email address"))
            wait = self._recipients.wait_s(subscription.email, time.monotonic())
            if wait > 0:
                await self._defer(delivery, wait)
                return None
        elif is_digest or is_confirm:
            what = "digests" if is_digest else "confirmation emails"
            return _Sent(Outcome.permanent(f"the {delivery.channel} channel carries no {what}: only email does"))
        if is_digest:
            return await self._send_digest(delivery, subscription)
        if is_confirm:
            message = build_confirmation(self._settings, subscription, delivery_id=delivery.id)
            return _Sent(await send_email(self._settings, message))
        if item is None:
            return _Sent(Outcome.permanent("item no longer stored"))
        if delivery.channel == "kafka":
            # The alert on corridor.alerts.v1 is the delivery: sending again is publishing again
            # (a redelivery, or an alert that was queued for a digest before kafka had none).
            payload = AlertPayload(
                delivery_id=delivery.id,
                subscription_id=subscription.id,
                channel="kafka",
                item=item if isinstance(item, ClassifiedItem) else None,
                event=item if isinstance(item, AgreementEvent) else None,
            )
            await self._bus.publish(self._alerts, subscription.id, Envelope.wrap("alert", payload))
            return _Sent(Outcome.success())
        base = self._settings.public_base_url.rstrip("/")
        if isinstance(item, AgreementEvent):
            link = f"{base}/api/v1/agreements/{item.agreement_id}"
            if delivery.channel == "webhook":
                body = agreement_body(subscription, item, link=link)
                return _Sent(await send_webhook(self._client, subscription, delivery.id, body, now))
            message = build_agreement_message(self._settings, subscription, item, delivery_id=delivery.id, link=link)
            return _Sent(await send_email(self._settings, message))
        link = f"{base}/api/v1/events/{item.id}"
        if delivery.channel == "webhook":
            body = alert_body(subscription, item, link=link)
            return _Sent(await send_webhook(self._client, subscription, delivery.id, body, now))
        message = build_message(self._settings, subscription, item, delivery_id=delivery.id, link=link)
        return _Sent(await send_email(self._settings, message))

    async def _send_digest(self, delivery: Delivery, subscription: Subscription) -> _Sent:
        """One email with the alerts queued for the digest's period (all of them, a follow-up
        included: a period never has two digests pending). Queued alerts whose item or event is
        gone fail at once; an empty digest succeeds without an email."""
        period = delivery.digest_period or ""
        queued = await self._store.list_deliveries(
            subscription_id=subscription.id, status="queued", digest_period=delivery.digest_period, limit=MAX_SCAN
        )
        stored = await self._store.get_items(d.item_id for d in queued)
        items: list[ClassifiedItem] = []
        events: list[AgreementEvent] = []
        covered: list[Delivery] = []
        gone: list[Delivery] = []
        for entry in queued:
            if entry.item_id.startswith(EVENT_ITEM_PREFIX):
                event = await self._store.get_agreement_event(entry.item_id.removeprefix(EVENT_ITEM_PREFIX))
                if event is not None:
                    events.append(event)
                    covered.append(entry)
                    continue
            elif (found := stored.get(entry.item_id)) is not None:
                items.append(found)
                covered.append(entry)
                continue
            gone.append(entry)
        for entry in gone:
            await self._store.update_delivery(entry.id, {"status": "failed", "last_error": "item no longer stored"})
        if not covered:
            return _Sent(Outcome.success())
        message = build_digest(
            self._settings,
            subscription,
            items,
            delivery_id=delivery.id,
            period=period,
            events=events,
            follow_up=delivery.item_id != digest_item(period),
        )
        return _Sent(await send_email(self._settings, message), covered)

    async def _close_covered(
        self, digest: Delivery, covered: list[Delivery], outcome: Outcome, verdict: Verdict
    ) -> None:
        """A digest finished: the alerts it carried share its fate (delivered, or failed with its
        reason), so none stays queued for a period whose digest is over."""
        now = self._clock()
        for entry in covered:
            if verdict == "delivered":
                fields: dict[str, object] = {"status": "delivered", "delivered_at": now}
            else:
                error = f"digest {digest.id} failed: {outcome.error}"
                fields = {"status": "failed", "last_error": error[:MAX_ERROR_CHARS]}
            await self._store.update_delivery(entry.id, fields)

    async def _defer(self, delivery: Delivery, wait_s: float) -> None:
        """Rate-limited: try again later without spending one of the delivery's attempts."""
        next_at = self._clock() + timedelta(seconds=wait_s)
        await self._record(delivery, {"next_attempt_at": next_at, "lease_until": None})
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
        await self._disable(
            subscription, f"endpoint failing since {subscription.failing_since.isoformat()}: {outcome.error}"
        )

    async def _disable(self, subscription: Subscription, reason: str) -> None:
        """Stop sending to a webhook endpoint: the subscription is deactivated with the reason
        (its pending deliveries then fail as paused), a ``subscription.disabled`` event goes to
        the ops topic and the owner, if any, is emailed. Resuming the subscription undoes it."""
        reason = reason[:MAX_ERROR_CHARS]
        await self._store.update_subscription(subscription.id, {"active": False, "disabled_reason": reason})
        event = SubscriptionDisabled(
            subscription_id=subscription.id, webhook_url=subscription.webhook_url or "", reason=reason, at=self._clock()
        )
        await self._bus.publish(self._ops, subscription.id, Envelope.wrap("subscription.disabled", event))
        log.warning("subscription %s disabled: %s", subscription.id, reason)
        if subscription.owner_email:
            # Sent once, not retried (the ops topic's event above is the durable record); a notice
            # that did not go out is said so, not lost in silence.
            notice = await send_email(self._settings, build_disabled_notice(self._settings, subscription, reason))
            if not notice.ok:
                log.error("subscription %s: the owner's notice was not sent: %s", subscription.id, notice.error)

    def _verdict(self, delivery: Delivery, outcome: Outcome) -> Verdict:
        """What this attempt's outcome does to the delivery (it is attempt ``attempts + 1``)."""
        if outcome.ok:
            return "delivered"
        if outcome.retryable and delivery.attempts + 1 <= len(self._delays):
            return "retry"
        return "failed"

    async def _record(self, delivery: Delivery, fields: dict[str, object]) -> bool:
        """Write an attempt's result while its lease holds (a delivery attempted unclaimed, as
        in tests and tools, is written as is); whether it was written."""
        if delivery.lease_until is None:
            await self._store.update_delivery(delivery.id, fields)
            return True
        return await self._store.finish_delivery(delivery.id, delivery.lease_until, fields)

    async def _finish(self, delivery: Delivery, outcome: Outcome) -> None:
        """Record the attempt and its verdict, releasing the lease; a failed delivery goes to the
        dead-letter topic with the reason. Recorded only while this attempt still holds its lease
        (``attempt`` keeps inside it): past it, another worker may have claimed the delivery, and
        its record is not overwritten with this attempt's stale count and verdict."""
        now = self._clock()
        attempts = delivery.attempts + 1
        verdict = self._verdict(delivery, outcome)
        fields: dict[str, object] = {
            "attempts": attempts,
            "last_attempt_at": now,
            "last_status_code": outcome.status_code,
            "last_error": outcome.error[:MAX_ERROR_CHARS] if outcome.error else None,
            "lease_until": None,
        }
        if verdict == "delivered":
            fields |= {"status": "delivered", "delivered_at": now}
        elif verdict == "retry":
            delay = self._delays[attempts - 1] * random.uniform(0.8, 1.2)
            if outcome.retry_after_s is not None:
                delay = max(delay, min(outcome.retry_after_s, MAX_RETRY_AFTER_S))
            fields["next_attempt_at"] = now + timedelta(seconds=delay)
        else:
            fields["status"] = "failed"
        if not await self._record(delivery, fields):
            log.warning(
                "delivery %s: attempt %d (%s) not recorded: its lease ran out and the delivery was claimed "
                "again (it may have been sent twice)",
                delivery.id,
                attempts,
                verdict,
            )
            return
        self._metrics.deliveries.labels(delivery.channel, verdict).inc()
        if verdict == "failed":
            reason = f"delivery failed after {attempts} attempts: {outcome.error}"
            dead = DeadLetter(
                topic="(delivery)", key=delivery.id, reason=reason[:2000], original=delivery.model_dump_json()
            )
            await self._bus.publish(self._deadletter, delivery.subscription_id, Envelope.wrap("deadletter", dead))
            log.warning("delivery %s failed permanently: %s", delivery.id, outcome.error)
        elif verdict == "retry":
            log.info("delivery %s attempt %d failed, will retry: %s", delivery.id, attempts, outcome.error)
