"""Every query the API and the services send to MongoDB is served by an index.

A command listener records every read the MongoDB store sends while the HTTP API is driven
through each event filter alone and in pairs, both sort orders, first page and next page, and
the other routes, and while the services' store calls run (claims, dedupe, digests). Each
recorded command is then explained on the test server with data loaded: the winning plan must
not scan the collection, and a time- or score-ordered page whose filters match an index's
leading keys must take its order from that index (no blocking SORT stage). A new query shape
without a fitting index fails here.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pymongo import monitoring

from services.app import create_app
from services.runtime import ALL_ROLES, Runtime
from shared.models import ClassifiedItem, Delivery, DuplicateRef, SectorScore, Source, Subscription
from shared.settings import load_settings
from shared.store.base import MAX_PAGE

pytestmark = pytest.mark.mongo

NOW = datetime.now(UTC).replace(microsecond=0)
SECTORS = ["energy", "transport", "mining", "maritime", "agriculture", "trade_investment"]
WORDS = ["rail", "gas", "port", "wheat", "copper", "tariff", "gwadar", "astana", "freight", "pipeline"]
READ_COMMANDS = {"find", "aggregate", "findAndModify", "update", "delete", "count", "distinct"}
# Filters that lead an index followed by the sort keys. A page filtered on one of them (or on
# nothing but bounds of the sort key) must take its order from an index; other score-ordered
# pages are read through a filter's index and sorted in memory (bounded by what matches).
TIME_LEADING = {"sector", "sectors", "country", "source", "language", "bilateral", "q", "q2", "agreement"}
SCORE_ONLY = {"sector", "sectors", "min_score"}
# Service reads outside the events collection whose order must come from an index too.
ORDERED_BY_INDEX = {"service active subscriptions", "service agreement events", "service all agreement events"}


FIELD = {
    "sector": "sectors",
    "sectors": "sectors",
    "country": "countries",
    "source": "source_id",
    "language": "language",
    "bilateral": "bilateral",
    "q": "tokens",
    "q2": "tokens",
    "agreement": "agreement_ids",
}


def expects_index_order(sort: str, filters: set[str]) -> bool:
    if sort == "time":
        return bool(filters & TIME_LEADING) or filters <= {"since", "until"}
    return filters <= SCORE_ONLY


FILTERS: dict[str, dict[str, str]] = {
    "sector": {"sector": "energy"},
    "sectors": {"sector": ["energy", "maritime"]},  # type: ignore[dict-item]
    "country": {"country": "KZ"},
    "bilateral": {"bilateral": "true"},
    "source": {"source": "src_b"},
    "language": {"language": "ru"},
    "since": {"since": (NOW - timedelta(days=20)).isoformat()},
    "until": {"until": (NOW - timedelta(days=5)).isoformat()},
    "min_score": {"min_score": "2"},
    "q": {"q": "rail"},
    "q2": {"q": "gas port"},
    "agreement": {"agreement": "railways-cooperation-mou"},
}


class Recorder(monitoring.CommandListener):
    """Keeps the read commands sent to one database."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.database_name == self.database and event.command_name in READ_COMMANDS:
            cmd = {k: v for k, v in event.command.items() if k not in ("lsid", "$db", "$clusterTime", "cursor")}
            if event.command_name == "aggregate":
                cmd["cursor"] = {}
            self.commands.append(cmd)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def events(count: int) -> Iterator[ClassifiedItem]:
    rng = random.Random(2)
    for n in range(count):
        sectors = rng.sample(SECTORS, rng.choice([0, 1, 1, 2]))
        linked = rng.sample(["railways-cooperation-mou", "transit-trade", "media-app"], rng.choice([0, 0, 0, 1]))
        countries = rng.choice([[], ["PK"], ["KZ"], ["PK", "KZ"]])
        score = rng.choice([0.5, 1.0, 2.0, 3.5])
        yield ClassifiedItem.model_validate(
            {
                "id": f"itm_{n:05d}",
                "source_id": rng.choice(["src_a", "src_b", "src_c", "src_d"]),
                "source_url": "http://feeds.example/rss",
                "title": "Story " + " ".join(rng.sample(WORDS, 3)),
                "summary": "body",
                "published_at": NOW - timedelta(minutes=rng.randrange(60 * 24 * 60)),
                "fetched_at": NOW,
                "language": rng.choice(["en", "en", "ru", "ur"]),
                "sectors": sectors,
                "sector_scores": [SectorScore(id=s, score=score, terms=[]) for s in sectors],
                "countries": countries,
                "bilateral": len(countries) == 2,
                "agreements": [{"id": a, "area": "railways", "score": 1.0, "terms": []} for a in linked],
                "stage": "signed" if linked else None,
                "classifier_version": "test",
            }
        )


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every stage of an explained plan tree."""
    yield plan
    for key in ("inputStage", "queryPlan"):
        if isinstance(plan.get(key), dict):
            yield from nodes(plan[key])
    for child in plan.get("inputStages", []):
        yield from nodes(child)


def winning_plans(explained: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The winning plans of a find/update/delete explain, or of each $cursor stage of an aggregate."""
    if "queryPlanner" in explained:
        yield explained["queryPlanner"]["winningPlan"]
    for stage in explained.get("stages", []):
        if "$cursor" in stage:
            yield stage["$cursor"]["queryPlanner"]["winningPlan"]


async def test_every_query_shape_uses_an_index(mongo_uri: str, unique: str) -> None:
    database = f"test_{unique}"
    recorder = Recorder(database)
    monitoring.register(recorder)  # before the runtime creates its client
    settings = load_settings(
        mongodb_uri=mongo_uri, mongodb_database=database, api_key="admin-key", poll_tick_s=0.2, delivery_sweep_s=0.2
    )
    runtime = Runtime(settings, ALL_ROLES)
    await runtime.start()
    store = runtime.store
    try:
        items = list(events(3000))
        await store.upsert_items(items)
        await store.add_duplicates(
            [
                DuplicateRef(id=f"itm_c{n}", item_id=items[n].id, source_id="s", reason="near_duplicate")
                for n in range(50)
            ]
            # more copies than a page shows: duplicates_of reads the items after it one by one
            + [
                DuplicateRef(id=f"itm_m{n}", item_id=items[60].id, source_id="s", reason="near_duplicate")
                for n in range(MAX_PAGE + 1)
            ]
        )
        subs = [
            Subscription(
                id=f"sub_{n}",
                channel="webhook",
                webhook_url="https://h.example/x",
                cadence="daily" if n % 2 else "immediate",
            )
            for n in range(20)
        ]
        for sub in subs:
            await store.insert_subscription(sub)
        await store.insert_deliveries(
            [
                Delivery(
                    id=f"msg_{n}",
                    subscription_id=f"sub_{n % 20}",
                    item_id=items[n].id,
                    channel="webhook",
                    status="queued" if n % 3 == 0 else "pending",
                    digest_period="2026-11-30" if n % 3 == 0 else None,
                    next_attempt_at=NOW + timedelta(days=1),
                )
                for n in range(600)
            ]
        )
        for n in range(30):
            await store.insert_source(
                Source(
                    id=f"src_{n}",
                    url=f"https://feeds{n}.example/rss",
                    interval_s=900,
                    next_check_at=NOW + timedelta(hours=1),
                )
            )

        # The services' calls, each recorded under its name (the runtime's own loops add theirs
        # while it runs; those are explained under whatever request was running).
        recorder.commands.clear()
        shapes: list[tuple[str, int]] = []
        service_calls: list[tuple[str, Awaitable[object]]] = [
            ("seen_hashes", store.seen_hashes([i.id for i in items[:20]])),
            ("claim_keys", store.claim_keys({"url:x": "itm_00001", "fp:y": "itm_00001"}, NOW)),
            (
                "take_over_keys",
                store.take_over_keys({"url:x": ("itm_00001", "itm_00002")}, NOW + timedelta(minutes=3), NOW),
            ),
            ("claim_due_source", store.claim_due_source(NOW, NOW + timedelta(minutes=2))),
            ("count_due_sources", store.count_due_sources(NOW)),
            ("claim_due_delivery", store.claim_due_delivery(NOW, NOW + timedelta(minutes=1))),
            (
                "claim_due_delivery, full subscriptions skipped",
                store.claim_due_delivery(NOW, NOW + timedelta(minutes=1), exclude_subscriptions={"sub_1", "sub_2"}),
            ),
            ("claim_delivery", store.claim_delivery("msg_1", NOW, NOW + timedelta(minutes=1))),
            ("finish_delivery", store.finish_delivery("msg_1", NOW + timedelta(minutes=1), {"lease_until": None})),
            ("duplicates of an item with more than a page of copies", store.duplicates_of([items[60].id])),
            ("queued deliveries", store.list_deliveries(subscription_id="sub_3", status="queued", limit=5000)),
            (
                "deliveries, next page",
                store.list_deliveries(subscription_id="sub_3", limit=5, before=(NOW, "msg_300")),
            ),
            ("all deliveries, next page", store.list_deliveries(limit=5, before=(NOW, "msg_300"))),
            (
                "digest deliveries",
                store.list_deliveries(subscription_id="sub_3", status="queued", digest_period="2026-11-30", limit=5000),
            ),
            ("get_items", store.get_items([i.id for i in items[:30]])),
            ("active subscriptions", store.list_subscriptions(active_only=True)),
            ("agreement_activity", store.agreement_activity()),
            ("agreement_activity one", store.agreement_activity("railways-cooperation-mou")),
            ("agreement_activity since", store.agreement_activity(since=NOW - timedelta(days=30))),
            (
                "agreement_activity one since",
                store.agreement_activity("railways-cooperation-mou", since=NOW - timedelta(days=30)),
            ),
            ("agreement_copies", store.agreement_copies(["src_1", "src_2"])),
            (
                "agreement_copies one since",
                store.agreement_copies(["src_1"], "railways-cooperation-mou", since=NOW - timedelta(days=30)),
            ),
            ("agreement events", store.list_agreement_events(agreement_id="railways-cooperation-mou")),
            ("all agreement events", store.list_agreement_events()),
            ("unpublished events", store.list_agreement_events(unpublished_before=NOW)),
            ("agreement stage", store.get_agreement_stage("railways-cooperation-mou")),
            ("resume unless unsubscribed", store.update_subscription("sub_3", {"active": True}, unless_reason="x")),
            ("reclassified item over its revision", store.replace_item_if(items[5], items[5].revision, "")),
        ]
        for name, call in service_calls:
            mark = len(recorder.commands)
            await call
            shapes += [(f"service {name}", n) for n in range(mark, len(recorder.commands))]

        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://c")
        async with client:
            combos = [(name,) for name in FILTERS] + list(itertools.combinations(sorted(FILTERS), 2))
            for combo in combos:
                if "q" in combo and "q2" in combo:
                    continue
                for sort in ("time", "score"):
                    params: dict[str, Any] = {"sort": sort, "limit": 5}
                    for name in combo:
                        params |= FILTERS[name]
                    for page in ("first", "next"):
                        label = f"{sort} {'+'.join(combo)} {page}"
                        mark = len(recorder.commands)
                        got = await client.get("/api/v1/events", params=params)
                        assert got.status_code == 200, (label, got.text)
                        shapes += [(label, n) for n in range(mark, len(recorder.commands))]
                        cursor = got.json()["next_cursor"]
                        if not cursor:
                            break
                        params["cursor"] = cursor
            for path in (
                "/api/v1/events/itm_00007",
                "/api/v1/sectors",
                "/api/v1/sectors?country=PK&weeks=52",
                "/api/v1/sources",
                "/api/v1/sources/src_3",
                "/api/v1/subscriptions",
                "/api/v1/subscriptions/sub_3",
                "/api/v1/deliveries",
                "/api/v1/deliveries?subscription_id=sub_3",
                "/api/v1/deliveries?status=queued",
                "/api/v1/deliveries?item_id=itm_00009",
                "/api/v1/deliveries?subscription_id=sub_3&status=pending",
                "/api/v1/deliveries?subscription_id=sub_9&item_id=itm_00009",
                "/api/v1/deliveries?item_id=itm_00009&status=pending",
                "/api/v1/events.rss?sector=energy",
            ):
                mark = len(recorder.commands)
                got = await client.get(path, headers={"Authorization": "Bearer admin-key"})
                assert got.status_code == 200, (path, got.text)
                shapes += [(path, n) for n in range(mark, len(recorder.commands))]
        monitoring._LISTENERS.command_listeners.remove(recorder)  # registered globally; undo
        explainer = store.db  # type: ignore[attr-defined]
        problems: list[str] = []
        checked = 0
        for label, n in shapes:
            cmd = recorder.commands[n]
            explained = await explainer.command({"explain": cmd, "verbosity": "queryPlanner"})
            plans = list(winning_plans(explained))
            assert plans, (label, cmd, explained)
            for plan in plans:
                checked += 1
                names = {str(node.get("stage")) for node in nodes(plan)}
                keys = {k for node in nodes(plan) if node.get("stage") == "IXSCAN" for k in node["keyPattern"]}
                if "COLLSCAN" in names:
                    problems.append(f"{label}: COLLSCAN for {cmd}")
                sort, _, rest = label.partition(" ")
                filters = set(rest.split(" ")[0].split("+"))
                if label in ORDERED_BY_INDEX and "SORT" in names:
                    problems.append(f"{label}: in-memory SORT for {cmd}")
                if cmd.get("find") != "events":
                    continue  # the other reads of an events request (duplicates) or of the runtime's loops
                if sort in ("time", "score") and expects_index_order(sort, filters) and "SORT" in names:
                    problems.append(f"{label}: in-memory SORT for {cmd}")
                # A filter that leads an index must be read through one (not merely filtered). In
                # score order with several sectors the planner may prefer the score index (one
                # ordered scan) to merging the sectors' ranges: both read in order, both are fine.
                leading = {FIELD[f] for f in filters if f in FIELD}
                if sort == "score":
                    leading &= {"sectors"} if "sector" in filters and "sectors" not in filters else set()
                if leading and not leading & keys:
                    problems.append(f"{label}: no index on {sorted(leading)} used (read {sorted(keys)}) for {cmd}")
        assert not problems, "\n".join(problems)
        assert checked > 200
    finally:
        if recorder in monitoring._LISTENERS.command_listeners:
            monitoring._LISTENERS.command_listeners.remove(recorder)
        await runtime.stop()
