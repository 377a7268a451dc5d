"""Paced cluster-metadata refreshes for aiokafka clients.

aiokafka refreshes metadata whenever a part of the client asks for it (``force_metadata_update``)
and does not space those refreshes out: the fetcher asks again as soon as a refresh ends while a
partition it reads has no known leader, and so does the producer's sender for a partition it
writes. When no broker answers, each refresh fails within a fraction of a millisecond
(connection refused on every known node) and the fetcher asks again at once; a consumer whose
last metadata showed a partition without a leader — as it does when the cluster stops while
leaders are moving — then spins a core for the whole outage (measured on a three-node cluster,
aiokafka 0.14.0: 0.65 cores with every broker down, 0.2 with a live broker answering "no
leader"; aio-libs/aiokafka#1155 reports the fetch side of it). The Java client waits
``retry.backoff.ms`` between metadata refreshes; :func:`pace_metadata_refresh` gives an aiokafka
client the same rule.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka.client import AIOKafkaClient


def pace_metadata_refresh(client: AIOKafkaClient, min_interval_s: float) -> None:
    """Make the client's background refreshes of its own cluster metadata start at least
    ``min_interval_s`` after the previous one ended.

    Only the refresh of ``client.cluster`` (the one ``force_metadata_update`` and the periodic
    refresh trigger) waits; a one-off read into fresh metadata (``fetch_all_metadata``, used for
    readiness probes) does not. The first refresh runs at once. Callers waiting on
    ``force_metadata_update`` simply get their answer later; closing the client cancels the wait
    with the refresh task.

    This wraps the private ``_metadata_update`` of the instance (aiokafka has no hook for it);
    tests/faults/test_consumer_idle_without_leader.py checks on a real cluster that a consumer
    stays idle while its partition has no leader, so a change in aiokafka that bypasses the
    wrapper shows up as a failure, not as a silent spin.
    """
    refresh = client._metadata_update
    next_start = 0.0

    async def paced(cluster_metadata: Any, topics: Any) -> bool:
        nonlocal next_start
        if cluster_metadata is not client.cluster:
            return bool(await refresh(cluster_metadata, topics))
        wait = next_start - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            return bool(await refresh(cluster_metadata, topics))
        finally:
            next_start = time.monotonic() + min_interval_s

    client._metadata_update = paced
