"""Query benchmark: 100,000 stored events in FerretDB; p50/p99 latency of /api/v1/events with a
sector filter, with q, and of /api/v1/sectors, from a load generator on 127.0.0.1 against a real
`corridor run classifier` process, and the same queries run directly on the store in this process
(the baseline) — ratio = API p50 / store p50.

Needs FerretDB (make servers). `python bench/bench_query.py [EVENTS] [REQUESTS]` (default 100000 40).
The events are Reuters stories spread evenly over the last 52 weeks (~275 a day), loaded in random
time order (the worst case for the day partitions); one in five has a copy from another source, so
every page also looks up duplicates. The first /sectors call after the load computes every day's
stats and is reported on its own; the dashboard makes that call when it opens.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from itertools import cycle
from pathlib import Path

import httpx
from reuters import classified_reuters

from shared.models import DuplicateRef
from shared.store import EventQuery
from shared.store.mongo import MongoStore
from shared.text import search_tokens

MONGO = os.environ.get("CORRIDOR_TEST_MONGODB_URI", "mongodb://127.0.0.1:27017/")
EVENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
REQUESTS = int(sys.argv[2]) if len(sys.argv) > 2 else 40
LOADED = 4  # concurrent requests of the second API measurement
WORDS = ["oil", "wheat", "trade", "shipping", "gold", "crude prices", "grain exports", "tanker"]
SECTORS = ["petroleum", "agriculture", "trade_investment", "maritime", "mining", "energy"]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(values), 1), "p99_ms": round(percentile(values, 0.99), 1)}


async def load(store: MongoStore) -> float:
    base = classified_reuters()
    now = datetime.now(UTC)
    rng = random.Random(5)
    started = time.perf_counter()
    batch = []
    for n in range(EVENTS):
        item = base[n % len(base)]
        countries = rng.choice([["PK"], ["KZ"], ["PK", "KZ"], []])
        batch.append(
            item.model_copy(
                update={
                    "id": f"itm_{n:06d}",
                    "published_at": now - timedelta(minutes=rng.randint(0, 52 * 7 * 24 * 60)),
                    "countries": countries,
                    "bilateral": len(countries) == 2,
                }
            )
        )
        if len(batch) == 1000:
            await store.upsert_items(batch)
            batch = []
    if batch:
        await store.upsert_items(batch)
    copies = [
        DuplicateRef(id=f"itm_copy{n:06d}", item_id=f"itm_{n:06d}", source_id="src_copy", reason="canonical_url")
        for n in range(0, EVENTS, 5)
    ]
    # Several at a time; ingest records copies one by one through the same slots.
    await store._duplicates.add_many(copies)
    return time.perf_counter() - started


async def timed(fn: Callable[[], Awaitable[object]], count: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            started = time.perf_counter()
            await fn()
            latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(one() for _ in range(count)))
    return latencies


async def run(database: str, port: int) -> dict[str, object]:
    store = MongoStore(MONGO, database, socket_timeout_ms=600_000)
    await store.start()
    load_s = await load(store)
    env = {
        **os.environ,
        "MONGODB_URI": MONGO,
        "CORRIDOR_MONGODB_DATABASE": database,
        "CORRIDOR_HTTP_PORT": str(port),
        "CORRIDOR_LOG_LEVEL": "WARNING",
    }
    corridor = str(Path(sys.executable).parent / "corridor")
    with open(Path(tempfile.gettempdir()) / f"{database}.log", "wb") as log:  # noqa: ASYNC230 - once, at start
        # One child started once, before any concurrent work: a blocking Popen is fine here.
        proc = subprocess.Popen([corridor, "run", "classifier"], env=env, stdout=log, stderr=log)  # noqa: ASYNC220
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=900) as client:
                for _ in range(120):
                    try:
                        if (await client.get("/readyz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.5)
                # The API and the store get the same queries in the same order (search words
                # differ in cost by 20x, so a different draw would skew the ratio).
                api_sectors_next, store_sectors_next = cycle(SECTORS).__next__, cycle(SECTORS).__next__
                api_words_next, store_words_next = cycle(WORDS).__next__, cycle(WORDS).__next__

                async def api_sector() -> None:
                    (await client.get("/api/v1/events", params={"sector": api_sectors_next()})).raise_for_status()

                async def api_q() -> None:
                    (await client.get("/api/v1/events", params={"q": api_words_next()})).raise_for_status()

                async def api_sectors() -> None:
                    (await client.get("/api/v1/sectors", params={"weeks": 52})).raise_for_status()

                async def store_sector() -> None:
                    await store.list_items(EventQuery(sector=store_sectors_next(), limit=50))

                async def store_q() -> None:
                    await store.list_items(EventQuery(q_tokens=tuple(search_tokens(store_words_next())), limit=50))

                async def store_sectors() -> None:
                    await store.sector_counts(since=datetime.now(UTC) - timedelta(weeks=52))

                # The first /sectors after the load computes every day's stats (so does the
                # classifier's background refresh): it answers 503 while that takes longer than the
                # query budget, and each try keeps the days it finished.
                started, refused = time.perf_counter(), 0
                while (first := await client.get("/api/v1/sectors", params={"weeks": 52})).status_code == 503:
                    refused += 1
                first.raise_for_status()
                first_sectors_s = time.perf_counter() - started
                results: dict[str, object] = {
                    "events": EVENTS,
                    "load_s": round(load_s, 1),
                    "first_sectors_s": round(first_sectors_s, 1),
                    "first_sectors_503s": refused,
                }
                for name, via_api, direct in (
                    ("sectors", api_sectors, store_sectors),
                    ("events?sector", api_sector, store_sector),
                    ("events?q", api_q, store_q),
                ):
                    await client.get("/api/v1/events", params={"limit": 1})  # warm the connection
                    api = summary(await timed(via_api, REQUESTS, 1))
                    base = summary(await timed(direct, REQUESTS, 1))
                    loaded = summary(await timed(via_api, REQUESTS, LOADED))
                    results[name] = {
                        "api": api,
                        "store": base,
                        "ratio_p50": round(api["p50_ms"] / base["p50_ms"], 2),
                        f"api_{LOADED}_at_a_time": loaded,
                    }
                per_word: dict[str, float] = {}
                for word in WORDS:  # why the search tail is long: rare words read many days
                    started = time.perf_counter()
                    await store.list_items(EventQuery(q_tokens=tuple(search_tokens(word)), limit=50))
                    per_word[word] = round((time.perf_counter() - started) * 1000, 1)
                results["q_store_ms_per_word"] = per_word
        finally:
            proc.terminate()
            proc.wait(30)
    await store.db.client.drop_database(database)
    await store.close()
    return results


def main() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    database = f"bench_{uuid.uuid4().hex[:8]}"
    results = asyncio.run(run(database, port))
    print(
        f"{EVENTS:,} events in FerretDB, loaded in {results['load_s']} s; first /sectors answer (every day's stats) "
        f"after {results['first_sectors_s']} s and {results['first_sectors_503s']} 503s; "
        f"{REQUESTS} requests per query one at a time (and {LOADED} at a time); "
        "baseline = the same query on the store, one at a time"
    )
    for name in ("sectors", "events?sector", "events?q"):
        r = results[name]
        assert isinstance(r, dict)
        print(
            f"  {name:14} API p50 {r['api']['p50_ms']} ms, p99 {r['api']['p99_ms']} ms | store p50 "
            f"{r['store']['p50_ms']} ms, p99 {r['store']['p99_ms']} ms | ratio {r['ratio_p50']} | "
            f"{LOADED} at a time: API p50 {r[f'api_{LOADED}_at_a_time']['p50_ms']} ms, "
            f"p99 {r[f'api_{LOADED}_at_a_time']['p99_ms']} ms"
        )
    print(f"  events?q on the store, once per word (ms): {results['q_store_ms_per_word']}")
    print(json.dumps({"benchmark": "query", **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
