"""The classifier's bus handler: raw item in → classified item stored and published."""

from __future__ import annotations

from services.classifier.classify import Classifier
from services.classifier.watch import AgreementWatch
from shared.bus import Bus
from shared.envelope import TOPIC_CLASSIFIED, Envelope
from shared.errors import PoisonMessage
from shared.metrics import Metrics
from shared.models import RawItem
from shared.settings import Settings
from shared.store import Store


class ClassifierService:
    """Handles corridor.items.raw.v1 (``item.raw`` and ``item.updated``). Idempotent: the item is
    upserted by id, so an update replaces the stored event and keeps its deliveries; agreement
    events have ids fixed by what happened, so a redelivered item announces nothing twice."""

    def __init__(
        self,
        *,
        store: Store,
        bus: Bus,
        classifier: Classifier,
        settings: Settings,
        metrics: Metrics,
        watch: AgreementWatch | None = None,
    ) -> None:
        self._store = store
        self._watch = watch
        self._bus = bus
        self._classifier = classifier
        self._metrics = metrics
        self._out = settings.topic(TOPIC_CLASSIFIED)

    async def handle(self, envelope: Envelope) -> None:
        """Classify, store (durable first), then publish downstream."""
        if envelope.type not in ("item.raw", "item.updated"):
            raise PoisonMessage(f"unexpected event type {envelope.type!r} on the raw items topic")
        item = envelope.payload_as(RawItem)
        classified = self._classifier.classify(item)
        # An update may drop an agreement the item linked: that agreement's stage is recomputed too.
        previous = None
        if self._watch is not None and envelope.type == "item.updated":
            previous = await self._store.get_item(classified.id)
        await self._store.upsert_item(classified)
        await self._bus.publish(self._out, classified.id, Envelope.wrap("item.classified", classified))
        if self._watch is not None:
            # After the item is stored: its agreements' stages are recomputed from the store.
            dropped = {a.id for a in previous.agreements} - {a.id for a in classified.agreements} if previous else set()
            await self._watch.after_item(classified, dropped=dropped)
        self._metrics.classified.inc()
