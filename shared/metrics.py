"""Prometheus metrics, owned by a per-process registry (no import-time global registry).

The runtime creates one :class:`Metrics` and passes it to every service; /metrics renders it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """Every metric Corridor exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.fetches = Counter("corridor_ingest_fetches", "Feed fetches by outcome", ["outcome"], registry=r)
        self.fetch_bytes = Counter("corridor_ingest_fetch_bytes", "Feed bytes downloaded", registry=r)
        self.items_published = Counter("corridor_ingest_items_published", "New items published", registry=r)
        self.items = Counter(
            "corridor_ingest_items",
            "Parsed items by dedupe outcome (new, updated, duplicate, unchanged)",
            ["outcome"],
            registry=r,
        )
        self.poll_queue = Gauge(
            "corridor_ingest_poll_queue",
            "Sources due and not yet leased by any replica (the polling queue's depth, read every 10 s)",
            registry=r,
        )
        self.host_deferred = Gauge(
            "corridor_ingest_host_deferred",
            "Due sources given back in the last round because their host was busy",
            registry=r,
        )
        self.polls_in_flight = Gauge("corridor_ingest_polls_in_flight", "Polls in progress", registry=r)
        self.poll_seconds = Histogram("corridor_ingest_poll_seconds", "Poll latency per source", registry=r)
        self.classified = Counter("corridor_classifier_items", "Items classified", registry=r)
        self.matched = Counter("corridor_alerts_matched", "Alerts created (subscription × item)", registry=r)
        self.deliveries = Counter(
            "corridor_alerts_delivery_attempts",
            "Delivery attempts by channel and outcome",
            ["channel", "outcome"],
            registry=r,
        )

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
