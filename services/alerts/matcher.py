"""The alerts matcher: classified item in → one delivery per matching subscription.

The delivery record is written before the alert message is published: the store's unique id
(subscription, item, channel) is what makes a redelivered item produce no second alert, and a
delivery whose message never made it to the bus is picked up by the deliverer's sweep.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from services.alerts.periods import period_of
from shared.bus import Bus
from shared.envelope import TOPIC_ALERTS, Envelope
from shared.errors import PoisonMessage
from shared.metrics import Metrics
from shared.models import EVENT_ITEM_PREFIX, AgreementEvent, AlertPayload, ClassifiedItem, Delivery, Subscription
from shared.settings import Settings
from shared.store import Store
from shared.timeutil import Clock, utcnow

SUBSCRIPTION_CACHE_S = 2.0


class SubscriptionIndex:
    """Subscriptions by the sectors they ask for: an item is checked only against those that
    ask for one of its sectors, or for none (most ask for a few of the sixteen, so an item meets
    a fraction of them). :meth:`Subscription.matches` still decides; this only skips the ones
    whose sector filter cannot pass."""

    def __init__(self, subscriptions: list[Subscription]) -> None:
        self.all = subscriptions
        self._order = {s.id: n for n, s in enumerate(subscriptions)}
        self._any = [s for s in subscriptions if not s.sectors]
        self._by_sector: dict[str, list[Subscription]] = {}
        for subscription in subscriptions:
            for sector in set(subscription.sectors):
                self._by_sector.setdefault(sector, []).append(subscription)

    def candidates(self, item: ClassifiedItem) -> list[Subscription]:
        found = {s.id: s for sector in item.sectors for s in self._by_sector.get(sector, ())}
        found.update((s.id, s) for s in self._any)
        return sorted(found.values(), key=lambda s: self._order[s.id])  # the stored order, as before


class Matcher:
    """Handles corridor.items.classified.v1."""

    def __init__(self, *, store: Store, bus: Bus, settings: Settings, metrics: Metrics, clock: Clock = utcnow) -> None:
        self._store = store
        self._bus = bus
        self._metrics = metrics
        self._clock = clock
        self._out = settings.topic(TOPIC_ALERTS)
        # The sweep leaves fresh deliveries to the alert consumer for this long.
        self._handoff = timedelta(seconds=settings.delivery_lease_s)
        # Active subscriptions, re-read at most every SUBSCRIPTION_CACHE_S: one store read per
        # item would dominate matching; a new or changed subscription applies within seconds.
        self._index = SubscriptionIndex([])
        self._cache_at = float("-inf")

    def subscriptions_changed(self) -> None:
        """Re-read the subscriptions before the next match (called when this process changed one)."""
        self._cache_at = float("-inf")

    async def _subscriptions(self, item: ClassifiedItem | None) -> list[Subscription]:
        if time.monotonic() - self._cache_at > SUBSCRIPTION_CACHE_S:
            self._index = SubscriptionIndex(await self._store.list_subscriptions(active_only=True))
            self._cache_at = time.monotonic()
        return self._index.candidates(item) if item is not None else self._index.all

    async def handle(self, envelope: Envelope) -> None:
        """Bus handler for corridor.items.classified.v1."""
        if envelope.type != "item.classified":
            raise PoisonMessage(f"unexpected event type {envelope.type!r} on the classified topic")
        item = envelope.payload_as(ClassifiedItem)
        now = self._clock()
        matched = [(s, self._delivery(s, item.id, now)) for s in await self._subscriptions(item) if s.matches(item)]
        await self._deliver(matched, item=item)

    async def handle_agreement(self, envelope: Envelope) -> None:
        """Bus handler for corridor.agreements.v1: the subscriptions that asked for this kind of
        agreement event (and its agreement or area) get one delivery each."""
        if envelope.type != "agreement.event":
            raise PoisonMessage(f"unexpected event type {envelope.type!r} on the agreements topic")
        event = envelope.payload_as(AgreementEvent)
        now = self._clock()
        wanted = [s for s in await self._subscriptions(None) if s.wants(event)]
        matched = [(s, self._delivery(s, EVENT_ITEM_PREFIX + event.id, now)) for s in wanted]
        await self._deliver(matched, event=event)

    async def _deliver(
        self,
        matched: list[tuple[Subscription, Delivery]],
        *,
        item: ClassifiedItem | None = None,
        event: AgreementEvent | None = None,
    ) -> None:
        if not matched:
            return
        # One store round trip for all of the item's deliveries, before any alert is published.
        new = await self._store.insert_deliveries([d for _, d in matched])
        self._metrics.matched.inc(len(new))
        for subscription, delivery in matched:
            if delivery.status == "queued":
                continue
            # Published even when the delivery existed: the previous run may have died before
            # publishing; the deliverer's claim makes a second message harmless.
            payload = AlertPayload(
                delivery_id=delivery.id,
                subscription_id=subscription.id,
                channel=subscription.channel,
                item=item,
                event=event,
            )
            await self._bus.publish(self._out, subscription.id, Envelope.wrap("alert", payload))

    def _delivery(self, subscription: Subscription, item_id: str, now: datetime) -> Delivery:
        delivery = Delivery(
            id=Delivery.make_id(subscription.id, item_id, subscription.channel),
            subscription_id=subscription.id,
            item_id=item_id,
            channel=subscription.channel,
            created_at=now,
            next_attempt_at=now + self._handoff,
        )
        if subscription.cadence != "immediate" and subscription.channel == "email":
            # Queued for its digest, which the deliverer sends when the period closes. Only email
            # has digests: a webhook or kafka subscription stored with a digest cadence (before the
            # API refused that) is alerted one by one.
            period, end = period_of(subscription, now)
            return delivery.model_copy(update={"status": "queued", "digest_period": period, "next_attempt_at": end})
        if subscription.channel == "kafka":
            # The alert on corridor.alerts.v1 *is* the delivery for the kafka channel.
            return delivery.model_copy(update={"status": "delivered", "delivered_at": now, "attempts": 1})
        return delivery
