"""Processes and servers the fault suite drives: the Kafka cluster, the MongoDB-wire server, the
six Corridor processes, webhook receivers, and the checks every round ends with."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from helpers import CorridorProcess, FeedServer, Route, WebhookReceiver, wait_until
from standardwebhooks.webhooks import Webhook

from services.alerts.matcher import SUBSCRIPTION_CACHE_S

API_KEY = "faults-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ROLES = ("alerts", "classifier", "ingest")
REPLICAS = 2
TOPIC_CONFIG_SOURCE = 1  # DescribeConfigs: DYNAMIC_TOPIC_CONFIG (set on the topic when created)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cluster:
    """deploy/kafka-cluster.sh: three KRaft nodes on 127.0.0.1."""

    def __init__(self, script: Path, port: int) -> None:
        self.script = script
        self.port = port
        self.bootstrap = ",".join(f"127.0.0.1:{port + n}" for n in range(3))

    def run(self, *args: str) -> None:
        env = {**os.environ, "KAFKA_CLUSTER_PORT": str(self.port)}
        subprocess.run([str(self.script), *args], env=env, check=True, capture_output=True, text=True, timeout=180)

    def node_of_port(self, port: int) -> int:
        return port - self.port + 1

    def leader(self, topic: str, partition: int) -> int:
        """The node id (1..3) that leads ``topic``/``partition`` now."""

        async def ask() -> int:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
            await admin.start()
            try:
                (described,) = await admin.describe_topics([topic])
                for p in described["partitions"]:
                    if p["partition"] == partition:
                        return int(p["leader"])
                raise AssertionError(f"{topic} has no partition {partition}")
            finally:
                await admin.close()

        return asyncio.run(ask())

    def topic_shape(self, topic: str) -> tuple[set[int], str, bool]:
        """(replica counts of its partitions, its min.insync.replicas, whether that was set on the
        topic itself rather than inherited from the broker)."""

        async def ask() -> tuple[set[int], str, bool]:
            from aiokafka.admin import AIOKafkaAdminClient
            from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
            await admin.start()
            try:
                (described,) = await admin.describe_topics([topic])
                replicas = {len(p["replicas"]) for p in described["partitions"]}
                (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
                entries = response.to_object()["resources"][0]["config_entries"]
                (isr,) = [e for e in entries if e["config_names"] == "min.insync.replicas"]
                return replicas, str(isr["config_value"]), isr["config_source"] == TOPIC_CONFIG_SOURCE
            finally:
                await admin.close()

        return asyncio.run(ask())

    def lag(self, group_prefix: str) -> dict[str, int]:
        """Per consumer group under ``group_prefix``: records on its topics not yet committed."""

        async def ask() -> dict[str, int]:
            from aiokafka import AIOKafkaConsumer, TopicPartition
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
            await admin.start()
            await consumer.start()
            try:
                groups = [g[0] if isinstance(g, tuple) else g for g in await admin.list_consumer_groups()]
                lag: dict[str, int] = {}
                for group in sorted(g for g in groups if g.startswith(group_prefix + ".")):
                    committed = await admin.list_consumer_group_offsets(group)
                    # Partitions from the cluster (describe_topics), not the client's cached metadata:
                    # a partition nobody committed on yet still counts with its whole length.
                    described = await admin.describe_topics(sorted({tp.topic for tp in committed}))
                    parts = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
                    ends = await consumer.end_offsets(parts)
                    lag[group] = sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in parts)
                return lag
            finally:
                await consumer.stop()
                await admin.close()

        return asyncio.run(ask())


class FaultStore:
    """The suite's own secantusd-rs (deploy/secantus.sh on its own port and data dir)."""

    def __init__(self, script: Path, port: int, data_dir: Path) -> None:
        self.script = script
        self.port = port
        self.data_dir = data_dir
        self.uri = f"mongodb://127.0.0.1:{port}/"

    def _run(self, command: str) -> None:
        env = {**os.environ, "SECANTUS_PORT": str(self.port), "SECANTUS_DATA_DIR": str(self.data_dir)}
        subprocess.run([str(self.script), command], env=env, check=True, capture_output=True, text=True, timeout=900)

    def start(self) -> None:
        self._run("start")

    def stop(self) -> None:
        self._run("stop")

    def kill(self) -> None:
        pid = int((self.data_dir / "secantus.pid").read_text())
        subprocess.run(["kill", "-9", str(pid)], check=True)
        wait_until(lambda: subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0, 10, "store")


@dataclass
class Subscriber:
    """A subscription and the real webhook receiver behind it."""

    name: str
    receiver: WebhookReceiver
    id: str = ""
    secret: str = ""
    expected: set[str] = field(default_factory=set)  # item URLs it must receive
    _verified: int = 0

    def by_item(self) -> dict[str, set[str]]:
        """Item URL -> the webhook-ids it arrived under. Every request's signature is verified once,
        soon after it arrives (the Standard Webhooks timestamp tolerance is five minutes)."""
        out: dict[str, set[str]] = defaultdict(set)
        received = self.receiver.snapshot()
        for r in received[self._verified :]:
            Webhook(self.secret).verify(r.body, r.headers)
        self._verified = len(received)
        for r in received:
            out[r.json()["item"]["url"]].add(r.webhook_id)
        return out


@dataclass
class Outcome:
    """One fault category's figures for the README table."""

    kind: str
    rounds: int = 0
    faults: int = 0
    expected: int = 0
    delivered: int = 0
    duplicate_ids: int = 0
    resends: int = 0
    slowest_recovery_s: float = 0.0
    notes: list[str] = field(default_factory=list)


class Stack:
    """Two replicas of each role on the cluster and the suite's store, plus feeds and receivers."""

    def __init__(self, cluster: Cluster, store: FaultStore, smtp_port: int, unique: str, artifacts: Path) -> None:
        self.cluster = cluster
        self.store = store
        self.artifacts = artifacts
        self.group_prefix = f"faults-{unique}"
        self.env = {
            "CORRIDOR_API_KEY": API_KEY,
            "CORRIDOR_ALLOW_PRIVATE_NETWORKS": "127.0.0.0/8",
            "CORRIDOR_SMTP_PORT": str(smtp_port),
            "CORRIDOR_POLL_TICK_S": "0.2",
            "CORRIDOR_POLL_LEASE_S": "5",
            "CORRIDOR_FETCH_TIMEOUT_S": "2",
            "CORRIDOR_FETCH_DEADLINE_S": "2.5",
            "CORRIDOR_DELIVERY_SWEEP_S": "0.5",
            "CORRIDOR_DELIVERY_LEASE_S": "3",
            "CORRIDOR_WEBHOOK_TIMEOUT_S": "1",
            "CORRIDOR_DELIVERY_RETRY_SCHEDULE_S": "1,1,2,2,3,5,5,5,5,5,5,5",
            "KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap,
            "MONGODB_URI": store.uri,
            "CORRIDOR_MONGODB_DATABASE": f"faults_{unique}",
            "CORRIDOR_TOPIC_PREFIX": f"faults-{unique}.",
            "CORRIDOR_GROUP_PREFIX": self.group_prefix,
            "CORRIDOR_TOPIC_REPLICATION_FACTOR": "3",
            "CORRIDOR_TOPIC_MIN_INSYNC_REPLICAS": "2",
            "CORRIDOR_TOPIC_PARTITIONS": "3",
        }
        self.topic_prefix = f"faults-{unique}."
        self.procs: dict[str, list[CorridorProcess]] = {role: [] for role in ROLES}
        self.started: list[CorridorProcess] = []
        self.feeds = FeedServer().__enter__()
        self.subscribers: list[Subscriber] = []
        self.published: set[str] = set()
        self._round = 0
        self._subscribed_at = float("-inf")

    # --- processes ---------------------------------------------------------------------------
    def _launch(self, role: str, index: int) -> CorridorProcess:
        log = self.artifacts / f"{role}-{index}.log"
        proc = CorridorProcess(role, self.env, log).start(timeout_s=90)
        self.started.append(proc)
        return proc

    def start(self) -> None:
        for role in ROLES:  # alerts first: its consumers exist before anything is published
            self.procs[role] = [self._launch(role, i) for i in range(REPLICAS)]

    def all(self) -> list[CorridorProcess]:
        return [p for role in ROLES for p in self.procs[role]]

    def alive(self) -> bool:
        return all(p.proc is not None and p.proc.poll() is None for p in self.all())

    def api(self, role: str) -> str:
        for p in self.procs[role]:
            if p.proc is not None and p.proc.poll() is None:
                return p.base
        raise AssertionError(f"no {role} process is running")

    def kill_and_replace(self, rng: random.Random) -> str:
        """SIGKILL one random service process, then start its replacement (what a supervisor does)."""
        role = rng.choice(ROLES)
        index = rng.randrange(REPLICAS)
        self.procs[role][index].kill()
        self.procs[role][index] = self._launch(role, index)
        return f"{role}-{index}"

    def stop_all(self) -> list[int | None]:
        codes = [p.stop() for p in self.all()]
        for p in self.started:
            p.stop()
        self.feeds.__exit__(None, None, None)
        for s in self.subscribers:
            s.receiver.__exit__(None, None, None)
        return codes

    # --- subscribers and items ---------------------------------------------------------------
    def subscribe(self, name: str, **receiver: Any) -> Subscriber:
        sub = Subscriber(name, WebhookReceiver(**receiver).__enter__())
        answer = httpx.post(
            f"{self.api('alerts')}/api/v1/subscriptions",
            headers=AUTH,
            timeout=10,
            json={"webhook_url": sub.receiver.url},
        )
        assert answer.status_code == 201, answer.text
        sub.id, sub.secret = answer.json()["id"], answer.json()["secret"]
        self.subscribers.append(sub)
        self._subscribed_at = time.monotonic()
        return sub

    def publish(self, items: int) -> set[str]:
        """A new feed of ``items`` fresh, matching items, added as a source through an ingest replica."""
        # A subscription applies everywhere SUBSCRIPTION_CACHE_S after it was created (each alerts
        # replica re-reads them that often): items published sooner may meet a replica that has
        # not seen it yet, which the README documents and no subscriber may count on.
        time.sleep(max(0.0, self._subscribed_at + SUBSCRIPTION_CACHE_S + 0.5 - time.monotonic()))
        self._round += 1
        name = f"r{self._round}"
        urls = [f"http://news.example/{name}/{n}" for n in range(items)]
        body = "".join(
            f"<item><guid>{url}</guid><title>Kazakhstan Pakistan rail freight {name} train {n}</title>"
            f"<link>{url}</link><description>Rail cargo {n} of {name} moved between Almaty and Karachi "
            f"under the transit agreement; the train carried grain.</description></item>"
            for n, url in enumerate(urls)
        )
        self.feeds.routes[f"/{name}.xml"] = Route(
            body=f"<rss version='2.0'><channel><title>{name}</title>{body}</channel></rss>".encode()
        )
        answer = httpx.post(
            f"{self.api('ingest')}/api/v1/sources",
            headers=AUTH,
            timeout=10,
            json={"url": self.feeds.url(f"/{name}.xml")},
        )
        assert answer.status_code == 201, answer.text
        for sub in self.subscribers:
            sub.expected |= set(urls)
        self.published |= set(urls)
        return set(urls)

    # --- the checks every round ends with ----------------------------------------------------
    def settle(self, started: float, timeout_s: float = 120, subscribers: list[Subscriber] | None = None) -> float:
        """Wait until every subscriber has every expected alert and every consumer group's lag is 0;
        returns the seconds since ``started``."""
        subs = subscribers if subscribers is not None else self.subscribers

        def delivered() -> bool:
            return all(s.expected <= set(s.by_item()) for s in subs)

        try:
            wait_until(delivered, timeout_s, "every expected alert at its receiver", interval_s=0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {self.diagnose(subs)}") from None
        recovered = time.monotonic() - started
        groups = {f"{self.group_prefix}.{g}" for g in ("classifier", "alerts-matcher", "alerts-deliverer")}

        def caught_up() -> bool:
            lag = self.cluster.lag(self.group_prefix)
            return groups <= set(lag) and not any(lag.values())

        wait_until(caught_up, 60, f"consumer lag 0 in {sorted(groups)}", interval_s=1)
        return recovered

    def diagnose(self, subs: list[Subscriber]) -> str:
        """What is missing where, and the deliveries' states as the store has them."""
        out = []
        for s in subs:
            missing = s.expected - set(s.by_item())
            if not missing:
                continue
            try:
                answer = httpx.get(
                    f"{self.api('alerts')}/api/v1/deliveries",
                    params={"subscription_id": s.id, "limit": 200},
                    headers=AUTH,
                    timeout=10,
                )
                rows = answer.json()
                if answer.status_code != 200 or not isinstance(rows, list):
                    raise ValueError(f"HTTP {answer.status_code}: {answer.text[:200]}")
                states = dict(Counter(f"{r['status']}/{r['attempts']}" for r in rows))
            except (httpx.HTTPError, AssertionError, ValueError) as exc:
                states = {"unknown": repr(exc)}
            example = sorted(missing)[:3]
            out.append(f"{s.name}: {len(missing)} missing of {len(s.expected)} (e.g. {example}), deliveries {states}")
        return "; ".join(out)

    def counts(self) -> tuple[int, int, int]:
        """(alerts expected, distinct alerts delivered, requests received) over every subscriber."""
        expected = delivered = requests = 0
        for s in self.subscribers:
            expected += len(s.expected)
            delivered += len(s.by_item())
            requests += len(s.receiver.snapshot())
        return expected, delivered, requests

    def check(self, outcome: Outcome, before: tuple[int, int, int]) -> None:
        """Exactly one webhook-id per (subscription, item), nothing unexpected; fills ``outcome``
        with the figures since ``before`` (a :meth:`counts`)."""
        for s in self.subscribers:
            by_item = s.by_item()
            unexpected = set(by_item) - s.expected
            assert not unexpected, f"{s.name} received alerts for items it should not: {sorted(unexpected)[:5]}"
            doubled = {url: ids for url, ids in by_item.items() if len(ids) > 1}
            outcome.duplicate_ids += len(doubled)
            assert not doubled, f"{s.name}: more than one webhook-id for one item: {list(doubled.items())[:3]}"
        expected, delivered, requests = self.counts()
        outcome.expected = expected - before[0]
        outcome.delivered = delivered - before[1]
        outcome.resends = (requests - before[2]) - outcome.delivered
