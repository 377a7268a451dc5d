"""Query benchmark: every query shape of the events API on a loaded store, through the API and
directly on the store, in the same run.

    python bench/bench_query.py sqlite 100000      # embedded mode (SQLite file)
    python bench/bench_query.py sqlite 1000000
    python bench/bench_query.py mongo 100000       # the Mongo-wire test server (make servers)

Loads N Reuters events spread over the last 52 weeks in random time order (random countries and
languages, 20 sources, one in five with a copy from another source) and reports the load rate.
Then a real `corridor run classifier` process serves the API and a load generator on 127.0.0.1
asks each query shape REQUESTS times, one at a time; the same queries, in the same order, run on
the store directly in this process (the baseline). ratio = API p50 / store p50 (target <= 1.5):
the API's own cost (duplicates lookup, JSON, HTTP) over the store's. Peak memory: the server's and
this process's high-water RSS. The Mongo-wire test server is SecantusDB, not mongod: its figures
show the schema and the indexes at work, not what MongoDB itself would answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from reuters import classified_reuters

from shared.models import DuplicateRef
from shared.store import EventQuery, Store
from shared.store.mongo import MongoStore
from shared.store.sqlite import SQLiteStore
from shared.text import search_tokens

MONGO = os.environ.get("CORRIDOR_TEST_MONGODB_URI", "mongodb://127.0.0.1:27017/")
KIND = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
EVENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
REQUESTS = int(sys.argv[3]) if len(sys.argv) > 3 else 30
BATCH = 2000
NOW = datetime.now(UTC).replace(microsecond=0)
SECTORS = ["petroleum", "agriculture", "trade_investment", "maritime", "mining", "energy"]
WORDS = ["oil", "wheat", "trade", "shipping", "gold", "crude prices", "grain exports", "tanker"]

# name → a function of the request number giving the query parameters (the same for both sides).
SHAPES: dict[str, Callable[[int], dict[str, Any]]] = {
    "latest": lambda n: {},
    "sector": lambda n: {"sector": SECTORS[n % len(SECTORS)]},
    "two sectors": lambda n: {"sector": [SECTORS[n % 6], SECTORS[(n + 1) % 6]]},
    "country": lambda n: {"country": ["PK", "KZ"][n % 2]},
    "bilateral": lambda n: {"bilateral": "true"},
    "source": lambda n: {"source": f"src_{n % 20}"},
    "language": lambda n: {"language": ["ru", "ur"][n % 2]},
    "last week": lambda n: {"since": (NOW - timedelta(days=7)).isoformat()},
    "min_score": lambda n: {"min_score": 4},
    "q": lambda n: {"q": WORDS[n % len(WORDS)]},
    "sector+country": lambda n: {"sector": SECTORS[n % 6], "country": "KZ"},
    "sector+q": lambda n: {"sector": SECTORS[n % 6], "q": WORDS[n % len(WORDS)]},
    "score": lambda n: {"sort": "score"},
    "score+sector": lambda n: {"sort": "score", "sector": SECTORS[n % 6]},
}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(statistics.median(values), 2), "p99_ms": round(percentile(values, 0.99), 2)}


def to_query(params: dict[str, Any], after: tuple[datetime | float, str] | None = None) -> EventQuery:
    """What the API makes of ``params`` (routes.EventFilters), for the store baseline."""
    sectors = params.get("sector", [])
    return EventQuery(
        sectors=tuple([sectors] if isinstance(sectors, str) else sectors),
        country=params.get("country"),
        bilateral=True if params.get("bilateral") else None,
        source_id=params.get("source"),
        language=params.get("language"),
        since=datetime.fromisoformat(params["since"]) if "since" in params else None,
        min_score=params.get("min_score"),
        q_tokens=tuple(search_tokens(params.get("q", ""))),
        sort=params.get("sort", "time"),
        limit=50,
        after=after,
    )


async def load(store: Store) -> float:
    base = classified_reuters()
    rng = random.Random(5)
    started = time.perf_counter()
    batch, copies = [], []
    for n in range(EVENTS):
        countries = rng.choice([["PK"], ["KZ"], ["PK", "KZ"], []])
        batch.append(
            base[n % len(base)].model_copy(
                update={
                    "id": f"itm_{n:07d}",
                    "published_at": NOW - timedelta(minutes=rng.randint(0, 52 * 7 * 24 * 60)),
                    "countries": countries,
                    "bilateral": len(countries) == 2,
                    "language": rng.choice(["en", "en", "en", "ru", "ur"]),
                }
            )
        )
        if n % 5 == 0:
            copies.append(
                DuplicateRef(
                    id=f"itm_copy{n:07d}", item_id=f"itm_{n:07d}", source_id="src_copy", reason="canonical_url"
                )
            )
        if len(batch) == BATCH:
            await store.upsert_items(batch)
            await store.add_duplicates(copies)
            batch, copies = [], []
            if n % 100_000 < BATCH:
                print(f"  loaded {n + 1:,} events in {time.perf_counter() - started:.0f} s", flush=True)
    await store.upsert_items(batch)
    await store.add_duplicates(copies)
    return time.perf_counter() - started


def rss_peak_mib(pid: int | None = None) -> float:
    if pid is None:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def measure(client: httpx.AsyncClient, store: Store) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, params_of in SHAPES.items():
        api, direct = [], []
        for n in range(REQUESTS):
            params = params_of(n)
            started = time.perf_counter()
            (await client.get("/api/v1/events", params=params)).raise_for_status()
            api.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            items = await store.list_items(to_query(params))
            await store.duplicates_of(i.id for i in items)
            direct.append((time.perf_counter() - started) * 1000)
        results[name] = {"api": summary(api), "store": summary(direct)}
    # The next page of a sector query, by cursor.
    api, direct = [], []
    for n in range(REQUESTS):
        params = SHAPES["sector"](n)
        first = (await client.get("/api/v1/events", params=params)).json()
        started = time.perf_counter()
        (await client.get("/api/v1/events", params={**params, "cursor": first["next_cursor"]})).raise_for_status()
        api.append((time.perf_counter() - started) * 1000)
        page = await store.list_items(to_query(params))
        started = time.perf_counter()
        items = await store.list_items(to_query(params, after=(page[-1].sort_at, page[-1].id)))
        await store.duplicates_of(i.id for i in items)
        direct.append((time.perf_counter() - started) * 1000)
    results["sector, next page"] = {"api": summary(api), "store": summary(direct)}
    api, direct = [], []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        (await client.get("/api/v1/sectors", params={"weeks": 26})).raise_for_status()
        api.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        await store.sector_counts(since=NOW - timedelta(weeks=26))
        direct.append((time.perf_counter() - started) * 1000)
    results["sectors (26 weeks)"] = {"api": summary(api), "store": summary(direct)}
    api, direct = [], []
    for n in range(REQUESTS):
        item_id = f"itm_{(n * 7919) % EVENTS:07d}"
        started = time.perf_counter()
        (await client.get(f"/api/v1/events/{item_id}")).raise_for_status()
        api.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        await store.get_item(item_id)
        await store.duplicates_of([item_id])
        direct.append((time.perf_counter() - started) * 1000)
    results["event by id"] = {"api": summary(api), "store": summary(direct)}
    for r in results.values():
        r["ratio_p50"] = round(r["api"]["p50_ms"] / max(r["store"]["p50_ms"], 0.01), 2)
    return results


async def run() -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-query-"))
    database = f"bench_{uuid.uuid4().hex[:8]}"
    store: Store
    env = {**os.environ, "CORRIDOR_LOG_LEVEL": "WARNING", "CORRIDOR_QUERY_TIMEOUT_S": "600"}
    if KIND == "mongo":
        store = MongoStore(MONGO, database, socket_timeout_ms=600_000)
        env |= {"MONGODB_URI": MONGO, "CORRIDOR_MONGODB_DATABASE": database}
    else:
        store = SQLiteStore(tmp / "bench.sqlite3")
        env |= {"CORRIDOR_SQLITE_PATH": str(tmp / "bench.sqlite3")}
    await store.start()
    load_s = await load(store)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env["CORRIDOR_HTTP_PORT"] = str(port)
    corridor = str(Path(sys.executable).parent / "corridor")
    log = open(tmp / "corridor.log", "wb")  # noqa: ASYNC230, SIM115 - once, before any concurrent work
    proc = subprocess.Popen([corridor, "run", "classifier"], env=env, stdout=log, stderr=log)  # noqa: ASYNC220
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            for _ in range(240):
                try:
                    if (await client.get("/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)
            await client.get("/api/v1/events", params={"limit": 1})  # warm the connection
            results = await measure(client, store)
        server_peak = rss_peak_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    disk = sum(p.stat().st_size for p in tmp.glob("bench.sqlite3*")) if KIND == "sqlite" else None  # noqa: ASYNC240
    if isinstance(store, MongoStore):
        await store.db.client.drop_database(database)
    await store.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "store": KIND,
        "events": EVENTS,
        "requests_per_shape": REQUESTS,
        "load_s": round(load_s, 1),
        "load_events_per_s": round(EVENTS / load_s),
        "server_peak_rss_mib": server_peak,
        "bench_peak_rss_mib": rss_peak_mib(),
        "sqlite_file_mib": round(disk / 2**20) if disk is not None else None,
        "shapes": results,
    }


def main() -> int:
    results = asyncio.run(run())
    print(
        f"{results['events']:,} events on {results['store']}: loaded in {results['load_s']} s "
        f"({results['load_events_per_s']:,} events/s); peak RSS server {results['server_peak_rss_mib']} MiB, "
        f"bench {results['bench_peak_rss_mib']} MiB; {REQUESTS} requests per shape, one at a time; "
        "baseline = the same query on the store in this process"
    )
    for name, r in results["shapes"].items():
        print(
            f"  {name:20} API p50 {r['api']['p50_ms']:8} ms  p99 {r['api']['p99_ms']:8} ms | store p50 "
            f"{r['store']['p50_ms']:8} ms  p99 {r['store']['p99_ms']:8} ms | ratio {r['ratio_p50']}"
        )
    print(json.dumps({"benchmark": "query", **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
