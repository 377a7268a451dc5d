"""Two ingest replicas on the same store: no source is polled twice in one period, and a replica
killed mid-poll hands its sources to the other once their leases run out."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.conftest import AUTH, URDU_FEED, corridor_env, get_json
from helpers import FeedServer, Route, SmtpSink, wait_until


def fetches(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    return sum(float(v) for v in re.findall(r'^corridor_ingest_fetches_total\{outcome="ok"\} (\S+)$', text, re.M))


@pytest.mark.e2e
@pytest.mark.kafka
@pytest.mark.mongo
def test_replicas_share_sources_and_take_over(
    request: pytest.FixtureRequest, unique: str, tmp_path: Path, launch: Any, feed_server: FeedServer, smtp: SmtpSink
) -> None:
    env = corridor_env("distributed", request, unique, tmp_path, smtp) | {
        "CORRIDOR_FETCH_TIMEOUT_S": "2",
        "CORRIDOR_FETCH_DEADLINE_S": "2.5",
        "CORRIDOR_POLL_LEASE_S": "5",
        "CORRIDOR_POLL_PER_HOST": "8",
    }
    body = URDU_FEED.read_bytes()
    a = launch("ingest", env)
    b = launch("ingest", env)

    # Phase 1: twelve sources, two replicas: each source fetched exactly once, work shared.
    for n in range(12):
        feed_server.routes[f"/f{n}.xml"] = Route(body=body, delay_s=0.3)
        # Added through both replicas in turn: each polls what it is told of at once (and what
        # is due at its next tick), so both take part whatever the timing of the machine.
        created = httpx.post(
            f"{(a, b)[n % 2].base}/api/v1/sources",
            headers=AUTH,
            timeout=10,
            json={"url": feed_server.url(f"/f{n}.xml"), "interval_s": 3600},
        )
        assert created.status_code == 201

    def all_ok() -> bool:
        sources: Any = get_json(f"{b.base}/api/v1/sources")
        return len(sources) == 12 and all(s["last_status"] == "ok" for s in sources)

    wait_until(all_ok, 60, "every source to be polled")
    assert [feed_server.routes[f"/f{n}.xml"].hits for n in range(12)] == [1] * 12, "no source polled twice"
    assert fetches(a.base) + fetches(b.base) == 12
    assert fetches(a.base) > 0 and fetches(b.base) > 0, "both replicas took sources"

    # Phase 2: only A runs; it is SIGKILLed while holding leases on six slow sources.
    b.stop()
    for n in range(6):
        feed_server.routes[f"/slow{n}.xml"] = Route(body=body, delay_s=1.5)
        httpx.post(
            f"{a.base}/api/v1/sources",
            headers=AUTH,
            timeout=10,
            json={"url": feed_server.url(f"/slow{n}.xml"), "interval_s": 3600},
        )
    slow = [feed_server.routes[f"/slow{n}.xml"] for n in range(6)]
    wait_until(lambda: all(r.hits == 1 for r in slow), 30, "A to start fetching every slow source")
    a.kill()
    c = launch("ingest", env)

    def slow_ok() -> bool:
        sources: Any = get_json(f"{c.base}/api/v1/sources")
        return sum(1 for s in sources if "/slow" in s["url"] and s["last_status"] == "ok") == 6

    wait_until(slow_ok, 60, "the surviving replica to take over the dead one's sources")
    assert [r.hits for r in slow] == [2] * 6, "each taken over exactly once, after the lease ran out"
    assert all(r.max_active == 1 for r in slow), "never fetched by two replicas at once"
    gaps = [float(r.requests[1]["at"]) - float(r.requests[0]["at"]) for r in slow]
    assert min(gaps) >= 3.0, f"the lease (5 s) was respected: {gaps}"
