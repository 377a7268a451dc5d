"""The embedded mode (in-process bus, SQLite store) across restarts, and its shutdown.

Ingest marks items seen right after publishing them, so the bus, not the store, must keep what
the classifier has not handled yet: items published before a SIGTERM or a crash are all
classified and stored after the restart (the journal, shared.bus.journal). Also: alert
deliveries started during shutdown are not orphaned, and a signal stops the runtime's loops
before uvicorn's HTTP drain."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from helpers import REPO, FeedServer, Route, WebhookReceiver

from services import runtime as runtime_module
from services.alerts.deliverer import Deliverer
from services.app import create_app
from services.cli import GracefulServer
from services.runtime import ALL_ROLES, Runtime, bus_journal_path
from shared.bus.memory import MemoryBus
from shared.envelope import TOPIC_RAW, Envelope
from shared.errors import BusUnavailable
from shared.http import build_client
from shared.metrics import Metrics
from shared.models import AlertPayload, ClassifiedItem, Delivery, Subscription
from shared.netguard import AddressPolicy
from shared.settings import Settings, load_settings
from shared.store.sqlite import SQLiteStore

ITEMS = 300
HANDLED_BEFORE_STOP = 20


def feed(n_items: int) -> bytes:
    entries = "".join(
        f"<item><guid>g{n}</guid><title>Corridor dispatch {n}: freight note {n * 7919 % 10007}</title>"
        f"<link>http://127.0.0.1/items/{n}</link><description>Dispatch {n} about Pakistan and Kazakhstan "
        f"rail transit, number {n}.</description></item>"
        for n in range(n_items)
    )
    return f"<rss version='2.0'><channel><title>t</title>{entries}</channel></rss>".encode()


@pytest.fixture
def feed_url() -> Iterator[str]:
    with FeedServer() as server:
        server.routes["/feed.xml"] = Route(body=feed(ITEMS))
        yield server.url("/feed.xml")


def embedded(tmp_path: Path, feed_url: str) -> Settings:
    # One poll: the source is next due in an hour, so a restart does not poll it again (and would
    # find every entry seen anyway: only the bus can bring the unhandled items back).
    return load_settings(
        sqlite_path=tmp_path / "corridor.sqlite3",
        feeds=[feed_url],
        allow_private_networks=["127.0.0.0/8"],
        poll_interval_s=3600,
        poll_tick_s=0.05,
        judge_enabled=False,
    )


def count(db: Path, sql: str) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute(sql).fetchone()[0])


def stored(settings: Settings) -> int:
    return count(settings.sqlite_path, "SELECT count(*) FROM events")


def seen(settings: Settings) -> int:
    return count(settings.sqlite_path, "SELECT count(*) FROM seen")


async def wait_for(check: object, what: str, timeout_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def all_stored_after_restart(settings: Settings) -> None:
    """A new process on the same files: every published item ends up classified and stored, and
    the journal keeps nothing every group committed."""
    runtime = Runtime(settings, ALL_ROLES)
    await runtime.start()
    try:
        assert isinstance(runtime.bus, MemoryBus) and runtime.bus.journal_path == bus_journal_path(settings)
        await wait_for(lambda: stored(settings) == ITEMS, f"{ITEMS} items stored after the restart")
        await asyncio.sleep(1.5)  # a commit interval: the consumers commit what they handled
    finally:
        await runtime.stop()
    journal = bus_journal_path(settings)
    assert journal is not None
    raw = settings.topic(TOPIC_RAW)
    assert count(journal, f"SELECT count(*) FROM messages WHERE topic = '{raw}'") == 0, "committed, so trimmed"


async def test_items_published_before_a_sigterm_are_all_stored_after_the_restart(tmp_path: Path, feed_url: str) -> None:
    settings = embedded(tmp_path, feed_url)
    runtime = Runtime(settings, ALL_ROLES)
    assert runtime.classifier is not None
    handle = runtime.classifier.handle

    async def slow(envelope: Envelope) -> None:
        await asyncio.sleep(0.1)  # ~4 s for the 300 items, 8 at a time: the stop comes first
        await handle(envelope)

    runtime.classifier.handle = slow  # type: ignore[method-assign]
    await runtime.start()
    try:
        await wait_for(lambda: seen(settings) == ITEMS, "the poll to publish every item and mark it seen")
        await wait_for(lambda: stored(settings) >= HANDLED_BEFORE_STOP, "the first items stored")
    finally:
        await runtime.stop()  # what SIGTERM does: records buffered but not handled stay uncommitted
    before = stored(settings)
    assert before < ITEMS, "the stop came too late to leave items unhandled"

    await all_stored_after_restart(settings)


CRASHING_CHILD = """
import asyncio, os, signal, sqlite3, sys
from pathlib import Path

from services.runtime import ALL_ROLES, Runtime
from shared.settings import load_settings

db, feed_url, handled_max = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])

def count(sql):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()

async def main():
    settings = load_settings(
        sqlite_path=db, feeds=[feed_url], allow_private_networks=["127.0.0.0/8"],
        poll_interval_s=3600, poll_tick_s=0.05, judge_enabled=False,
    )
    runtime = Runtime(settings, ALL_ROLES)
    handle, handled, never = runtime.classifier.handle, 0, asyncio.Event()

    async def stuck_after_some(envelope):
        nonlocal handled
        if handled >= handled_max:
            await never.wait()  # the classifier is busy (or hung) when the process dies
        handled += 1
        await handle(envelope)

    runtime.classifier.handle = stuck_after_some
    await runtime.start()
    while count("SELECT count(*) FROM seen") < {items} or count("SELECT count(*) FROM events") < handled_max:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.5)  # the consumers commit what they handled (every second)
    print("stored before the crash:", count("SELECT count(*) FROM events"), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no stop, no close, no final commit

asyncio.run(main())
"""


async def test_items_published_before_a_crash_are_all_stored_after_the_restart(tmp_path: Path, feed_url: str) -> None:
    settings = embedded(tmp_path, feed_url)
    script = tmp_path / "crashing_child.py"
    script.write_text(textwrap.dedent(CRASHING_CHILD.replace("{items}", str(ITEMS))))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CORRIDOR_", "KAFKA_", "MONGODB_"))}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(settings.sqlite_path),
        feed_url,
        str(HANDLED_BEFORE_STOP),
        env=env | {"PYTHONPATH": str(REPO)},
        cwd=str(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(child.communicate(), 120)
    assert child.returncode == -signal.SIGKILL, out.decode()[-3000:]
    assert stored(settings) == HANDLED_BEFORE_STOP, out.decode()[-3000:]
    assert seen(settings) == ITEMS, "every item was published and marked seen before the crash"

    await all_stored_after_restart(settings)


async def test_an_alert_consumed_after_the_sweep_drained_is_not_started_unwatched(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """Stopping, the sweep drains the delivery pool and returns; the alert consumer may still
    hand it alerts while it drains its own records. They must not start attempts nobody waits
    for (the runtime then closes the webhook client and the store under them): they wait in the
    store, and the next sweep sends them."""
    now = datetime.now(UTC)
    store = SQLiteStore(tmp_path / "s.sqlite3")
    await store.start()
    settings = load_settings(allow_private_networks=["127.0.0.0/8"], delivery_sweep_s=0.05)
    subscription = Subscription(id="sub_w", channel="webhook", webhook_url=receiver.url, secret="whsec_" + "A" * 32)
    item = ClassifiedItem(
        id="itm_1", source_id="s", source_url="http://s", title="Rail", fetched_at=now, classifier_version="t"
    )
    delivery_id = Delivery.make_id("sub_w", "itm_1", "webhook")
    try:
        await store.insert_subscription(subscription)
        await store.upsert_item(item)
        await store.insert_delivery(
            Delivery(
                id=delivery_id,
                subscription_id="sub_w",
                item_id="itm_1",
                channel="webhook",
                created_at=now,
                next_attempt_at=now,
            )
        )
        client = build_client(
            policy=AddressPolicy(["127.0.0.0/8"]), timeout_s=2, max_redirects=0, user_agent="t", max_connections=4
        )
        async with client:
            deliverer = Deliverer(store=store, bus=MemoryBus(), client=client, settings=settings, metrics=Metrics())
            stop = asyncio.Event()
            stop.set()
            await deliverer.sweep(stop)  # stopping: drains an empty pool and returns
            alert = AlertPayload(delivery_id=delivery_id, subscription_id="sub_w", channel="webhook", item=item)
            await deliverer.handle(Envelope.wrap("alert", alert))
            assert len(deliverer._pool) == 0, "no attempt started after the drain"
            await asyncio.sleep(0.2)
            assert receiver.snapshot() == []
            pending = await store.get_delivery(delivery_id)
            assert pending is not None and pending.status == "pending" and pending.attempts == 0

            again = asyncio.Event()
            sweeping = asyncio.create_task(deliverer.sweep(again))  # the next process's sweep
            try:
                await wait_for(lambda: len(receiver.snapshot()) == 1, "the alert sent by the next sweep", 10)
            finally:
                again.set()
                await sweeping
    finally:
        await store.close()


async def test_a_signal_stops_the_runtime_before_the_http_drain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn tells the app to stop only after its HTTP drain: the signal itself stops the loops,
    and the loops' stop deadline counts from the signal, so the drains overlap."""
    monkeypatch.setattr(runtime_module, "STOP_DEADLINE_S", 1.0)
    runtime = Runtime(load_settings(sqlite_path=tmp_path / "c.sqlite3"), ())
    server = GracefulServer(uvicorn.Config(create_app(runtime)), on_signal=runtime.request_stop)
    runtime.request_stop()  # before start: nothing to stop, no error
    await runtime.start()
    runtime._spawn("stuck loop", asyncio.Event().wait())  # a loop that never stops by itself
    try:
        assert not runtime._stop.is_set()
        server.handle_exit(signal.SIGTERM, None)  # what the signal handler runs
        await asyncio.sleep(0)
        assert server.should_exit and runtime._stop.is_set(), "the loops stop now, not after the HTTP drain"
        await asyncio.sleep(0.7)  # uvicorn's HTTP drain
    finally:
        started = asyncio.get_running_loop().time()
        await runtime.stop()
    assert asyncio.get_running_loop().time() - started < 0.6, "the stuck loop is cancelled 1 s after the signal"


async def test_a_signal_while_the_start_waits_for_the_bus_ends_it_without_an_error(tmp_path: Path) -> None:
    """Now that a signal reaches the runtime at once, it also ends a start still waiting for its
    store or bus: no error (the process exits 0, as after any SIGTERM), nothing started, and
    ``stop()`` closes what was opened."""
    runtime = Runtime(load_settings(sqlite_path=tmp_path / "c.sqlite3"), {"classifier"})

    async def never_ready() -> None:
        raise BusUnavailable("bus journal is in use by another process")

    runtime.bus.start = never_ready  # type: ignore[method-assign]
    starting = asyncio.create_task(runtime.start())
    await asyncio.sleep(0.3)
    runtime.request_stop()
    await asyncio.wait_for(starting, 5)
    assert runtime._tasks == [] and await runtime.store.ping()
    await runtime.stop()
    assert not await runtime.store.ping()


def test_the_journal_lives_next_to_the_sqlite_store_only(tmp_path: Path) -> None:
    assert bus_journal_path(load_settings(sqlite_path=tmp_path / "corridor.sqlite3")) == (
        tmp_path / "corridor-bus.sqlite3"
    )
    assert bus_journal_path(load_settings(sqlite_path=":memory:")) is None
    settings = load_settings(sqlite_path=tmp_path / "corridor.sqlite3")
    classifier = Runtime(settings, {"classifier"}).bus
    assert isinstance(classifier, MemoryBus) and classifier.journal_path == tmp_path / "corridor-bus.sqlite3"
    init = Runtime(settings, ()).bus  # `corridor init`, next to a serving process: no journal, no lock
    assert isinstance(init, MemoryBus) and init.journal_path is None
    assert bus_journal_path(load_settings(mongodb_uri="mongodb://127.0.0.1:1/")) is None
