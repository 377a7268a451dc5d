"""The agreement tracker end to end in one process: items linked to an agreement move its stage
once two sources report it; subscribers asking for agreement events get one signed webhook per
event; stalls are announced once per quiet period; the board, an agreement's timeline and
corroboration, its events feed and the iCalendar feeds answer."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import httpx
from helpers import WebhookReceiver
from icalendar import Calendar
from standardwebhooks.webhooks import Webhook

from services.app import create_app
from services.runtime import ALL_ROLES, Runtime
from shared.bus.memory import MemoryBus
from shared.envelope import TOPIC_RAW, Envelope
from shared.models import RawItem, Source
from shared.settings import load_settings

ADMIN = {"Authorization": "Bearer admin-key"}
RAILWAYS = "railways-cooperation-mou"
NOW = datetime.now(UTC).replace(microsecond=0)


def raw(n: int, source: str, title: str, text: str, days_ago: float = 1) -> RawItem:
    at = NOW - timedelta(days=days_ago)
    return RawItem(
        id=f"itm_{n}",
        source_id=source,
        source_url=f"https://{source}.example/rss",
        url=f"https://{source}.example/{n}",
        title=title,
        summary=text,
        published_at=at,
        fetched_at=at,
        language="en",
    )


async def wait_for(check: object, what: str, timeout_s: float = 15) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_an_agreement_moves_is_announced_once_and_stalls_are_announced(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    settings = load_settings(
        sqlite_path=tmp_path / "a.sqlite3",
        api_key="admin-key",
        allow_private_networks="127.0.0.0/8",
        delivery_lease_s=1,
        delivery_sweep_s=0.2,
        stall_check_s=3600,
    )
    runtime = Runtime(settings, ALL_ROLES)
    await runtime.start()
    try:
        for source, country in (("dawn", "PK"), ("kazinform", "KZ")):
            await runtime.store.insert_source(
                Source(
                    id=source,
                    url=f"https://{source}.example/rss",
                    name=source.title(),
                    interval_s=3600,
                    country=country,
                    next_check_at=NOW + timedelta(days=1),
                )
            )
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(runtime)), base_url="http://c")
        async with client:
            created = await client.post(
                "/api/v1/subscriptions",
                headers=ADMIN,
                json={
                    "webhook_url": receiver.url,
                    "kinds": ["agreement.stage_changed", "agreement.setback"],
                    "agreements": [RAILWAYS],
                },
            )
            assert created.status_code == 201, created.text
            secret = created.json()["secret"]
            refused = await client.post(
                "/api/v1/subscriptions", headers=ADMIN, json={"webhook_url": receiver.url, "agreements": ["nope"]}
            )
            assert refused.status_code == 422 and "unknown agreements" in refused.text

            bus = runtime.bus
            assert isinstance(bus, MemoryBus)
            topic = settings.topic(TOPIC_RAW)
            study = (
                "Pakistan and Kazakhstan railways: feasibility study for the railway line",
                "Pakistan Railways and KTZ began the feasibility study of the Trans-Afghan railway link between "
                "Pakistan and Kazakhstan, officials of both countries said.",
            )
            # One source reporting "planning" is not enough; a second, independent one is.
            await bus.publish(topic, "itm_1", Envelope.wrap("item.raw", raw(1, "dawn", *study, days_ago=3)))
            await wait_for(lambda: runtime.store.get_item("itm_1"), "the first item")
            board = (await client.get("/api/v1/agreements")).json()
            railways = next(a for a in board if a["id"] == RAILWAYS)
            assert railways["stage"] == "signed" and railways["items"] == 1
            await bus.publish(topic, "itm_2", Envelope.wrap("item.raw", raw(2, "kazinform", *study, days_ago=2)))

            def stage_changes() -> list[object]:
                return [r for r in receiver.snapshot() if r.json()["kind"] == "agreement.stage_changed"]

            async def announced() -> bool:
                return bool(stage_changes())

            await wait_for(announced, "the stage change webhook")
            [change] = stage_changes()
            Webhook(secret).verify(change.body, change.headers)  # type: ignore[attr-defined]
            body = change.json()  # type: ignore[attr-defined]
            assert body["type"] == "corridor.agreement" and body["event"]["before"] == "signed"
            assert body["event"]["after"] == "planning" and body["event"]["agreement_id"] == RAILWAYS
            assert body["link"].endswith(f"/api/v1/agreements/{RAILWAYS}")
            assert any(e["kind"] == "stage" and "feasibility" in e["term"] for e in body["event"]["evidence"])

            # The same item again (redelivery) and a third report: no second announcement.
            await bus.publish(topic, "itm_2", Envelope.wrap("item.raw", raw(2, "kazinform", *study, days_ago=2)))
            # An entry naming another paper (as an aggregator's do): carried through to the timeline;
            # from Dawn's own feed, which aggregates nothing, it changes no count.
            named = raw(3, "dawn", *study, days_ago=1.5).model_copy(update={"publisher": "tribune.example"})
            await bus.publish(topic, "itm_3", Envelope.wrap("item.raw", named))
            setback = (
                "Pakistan Kazakhstan railway plan delayed",
                "The Pakistan Railways and KTZ railway link between Pakistan and Kazakhstan was postponed.",
            )
            await bus.publish(topic, "itm_4", Envelope.wrap("item.raw", raw(4, "dawn", *setback, days_ago=1)))

            async def setback_announced() -> bool:
                return any(r.json()["kind"] == "agreement.setback" for r in receiver.snapshot())

            await wait_for(setback_announced, "the setback webhook")
            await asyncio.sleep(0.5)
            assert len(stage_changes()) == 1, "one event, one webhook"

            detail = (await client.get(f"/api/v1/agreements/{RAILWAYS}")).json()
            assert detail["stage"] == "planning" and detail["setback"] is True and detail["items"] == 4
            planning = next(c for c in detail["corroboration"] if c["stage"] == "planning")
            assert planning["supported"] and planning["both_countries"] and not planning["official"], planning
            assert {s["name"] for s in planning["sources"]} == {"Dawn", "Kazinform"}
            assert [t["id"] for t in detail["timeline"]] == ["itm_4", "itm_3", "itm_2", "itm_1"]
            # Each names the railways' own parties (Pakistan Railways, KTZ): not area-level news.
            assert {t["via"] for t in detail["timeline"]} == {"agreement"}
            assert [t["publisher"] for t in detail["timeline"]] == [None, "tribune.example", None, None]
            # Each item says why it is on this timeline and why it reports its stage, as its event does.
            for t in detail["timeline"]:
                event = (await client.get(f"/api/v1/events/{t['id']}")).json()
                [link] = [a for a in event["agreements"] if a["id"] == RAILWAYS]
                assert (t["score"], t["terms"]) == (link["score"], link["terms"]) and t["terms"], t
                mine = [e for e in event["evidence"] if e["kind"] == "stage" or e["label"] == RAILWAYS]
                assert t["evidence"] == [e for e in mine if e["kind"] == "agreement"] + [
                    e for e in mine if e["kind"] == "stage"
                ]
                assert any(
                    e["kind"] == "agreement" and e["term"].lower() in e["snippet"].lower() for e in t["evidence"]
                ), t
            stages = {t["id"]: [e for e in t["evidence"] if e["kind"] == "stage"] for t in detail["timeline"]}
            assert stages["itm_4"][0]["label"] == "setback" and stages["itm_4"][0]["term"] == "delayed"
            assert stages["itm_1"][0]["label"] == "planning" and "feasibility" in stages["itm_1"][0]["term"]
            kinds = {e["kind"] for e in detail["events"]}
            assert {"agreement.stage_changed", "agreement.setback"} <= kinds
            assert detail["commits_to"] and detail["registry_sources"]
            setbacks = (await client.get("/api/v1/agreements", params={"stage": "setback"})).json()
            assert [a["id"] for a in setbacks] == [RAILWAYS]

            rss = feedparser.parse((await client.get("/api/v1/events.rss", params={"agreement": RAILWAYS})).content)
            assert len(rss.entries) == 4
            # A mistyped id is refused, not answered with an empty list ("nothing happened").
            for path in ("/api/v1/events", "/api/v1/events.rss"):
                refused = await client.get(path, params={"agreement": "railway-mou-typo"})
                assert refused.status_code == 422 and "unknown agreement" in refused.text, refused.text
            ics = Calendar.from_ical((await client.get(f"/api/v1/agreements/{RAILWAYS}.ics")).content)
            summaries = [str(c["SUMMARY"]) for c in ics.walk("VEVENT")]
            assert any("signed → planning" in s for s in summaries) and any(s.endswith(": signed") for s in summaries)
            everything = Calendar.from_ical((await client.get("/api/v1/agreements.ics")).content)
            assert len(everything.walk("VEVENT")) >= len(runtime.registry.agreements) + 2
            assert (await client.get("/api/v1/agreements/nope")).status_code == 404

            # Stalls: at start every agreement was quiet since its signing (no items yet), and the
            # first check announced each once; checking again announces nothing.
            stalls = [e for e in await runtime.store.list_agreement_events(limit=500) if e.kind == "agreement.stalled"]
            assert len(stalls) == len(runtime.registry.agreements)
            assert all(e.published_at is not None for e in stalls)
            assert await runtime.watch.check_stalls() == 0
            stalled = (await client.get("/api/v1/agreements", params={"stalled": True})).json()
            assert RAILWAYS not in {a["id"] for a in stalled}, "it moved: no longer stalled"
            assert len(stalled) == len(runtime.registry.agreements) - 1
    finally:
        await runtime.stop()


async def test_agreement_alerts_go_by_email_to_digests_and_to_kafka_filtered_by_area(
    tmp_path: Path, smtp: object
) -> None:
    """Same channels as item alerts (issue 11): an immediate email, a daily digest's queued
    delivery and a kafka-channel alert for the railway stall, and nothing for a subscription
    to another area (only webhooks were tested before: the audit of 2026-12-05)."""
    from helpers import SmtpSink

    from shared.envelope import TOPIC_ALERTS
    from shared.models import Subscription
    from shared.store.sqlite import SQLiteStore

    assert isinstance(smtp, SmtpSink)
    db = tmp_path / "mail.sqlite3"
    store = SQLiteStore(db)
    await store.start()
    stalls: list[object] = ["agreement.stalled"]
    for sub in (
        Subscription(id="sub_mail", channel="email", email="analyst@example.org", kinds=stalls, areas=["railways"]),
        Subscription(
            id="sub_digest",
            channel="email",
            email="digest@example.org",
            kinds=stalls,
            areas=["railways"],
            cadence="daily",
        ),
        Subscription(id="sub_kafka", channel="kafka", kinds=stalls, agreements=[RAILWAYS]),
        Subscription(id="sub_other", channel="email", email="other@example.org", kinds=stalls, areas=["aviation"]),
    ):
        await store.insert_subscription(sub)  # type: ignore[arg-type]
    await store.close()
    settings = load_settings(
        sqlite_path=db, smtp_port=smtp.port, delivery_sweep_s=0.2, delivery_lease_s=1, stall_check_s=3600
    )
    runtime = Runtime(settings, ALL_ROLES)
    await runtime.start()  # the first check announces every agreement's stall (quiet since signing)
    try:

        async def emailed() -> bool:
            return any(m["To"] == "analyst@example.org" for m in smtp.messages)

        await wait_for(emailed, "the stall email")

        aviation = {a.id for a in runtime.registry.agreements if a.area == "aviation"}

        async def all_handled() -> bool:
            deliveries = await runtime.store.list_deliveries(limit=500)
            per = {
                s: [d for d in deliveries if d.subscription_id == s] for s in ("sub_mail", "sub_digest", "sub_kafka")
            }
            other = [d for d in deliveries if d.subscription_id == "sub_other"]
            return all(len(v) == 1 for v in per.values()) and len(other) == len(aviation)

        await wait_for(all_handled, "one delivery each, and the aviation stalls for the aviation subscription")
        [mail] = [m for m in smtp.messages if m["To"] == "analyst@example.org"]
        assert "stalled" in mail["Subject"] and "railway" in mail["Subject"].lower(), mail["Subject"]
        assert mail["List-Unsubscribe"], "an alert email carries its unsubscribe link"
        deliveries = await runtime.store.list_deliveries(limit=500)
        by_subscription = {d.subscription_id: d for d in deliveries}
        events = await runtime.store.list_agreement_events(limit=500)  # stored before their deliveries
        stall_of = {e.id: e.agreement_id for e in events if e.kind == "agreement.stalled"}
        # Each delivery names its event in its item id; the aviation subscription got the
        # aviation agreements' stalls and no other (every agreement stalled at the first check).
        other = [d.item_id for d in deliveries if d.subscription_id == "sub_other"]
        got = {stall_of[e] for e in stall_of if any(e in item_id for item_id in other)}
        assert aviation and got == aviation, (got, aviation)
        assert any(stall_of[e] == RAILWAYS for e in stall_of if e in by_subscription["sub_mail"].item_id)
        digest = by_subscription["sub_digest"]
        assert digest.status == "queued" and digest.digest_period, digest
        bus = runtime.bus
        assert isinstance(bus, MemoryBus)
        alerts = [Envelope.decode(d) for _, d in bus._logs[settings.topic(TOPIC_ALERTS)].messages]
        kafka = [a for a in alerts if a.payload.get("subscription_id") == "sub_kafka"]
        assert len(kafka) == 1 and RAILWAYS in json.dumps(kafka[0].payload), kafka
    finally:
        await runtime.stop()
