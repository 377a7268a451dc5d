"""docker-compose.yml validated without an engine: the Compose Specification JSON schema (fetched by
`make compose-schema`), resolved anchors, healthchecks behind every depends_on condition, and a
proxy that routes every /api/v1 path the embedded app serves."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml
from helpers import IN_CI, REPO

SCHEMA = REPO / "deploy/.run/compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def test_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    if not SCHEMA.exists():
        message = "compose schema missing: run `make compose-schema`"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)  # the schema declares draft-07
    validator.validate(compose)
    bad = dict(compose, services={"x": {"image": "a", "depends_on": {"y": {"condition": "sometimes"}}}})
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(bad)  # the schema really checks


def test_stack_shape(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "mongo", "mailpit", "ingest", "classifier", "alerts", "proxy"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for role in ("ingest", "classifier", "alerts"):
        svc = services[role]
        assert svc["command"] == ["run", role]
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert svc["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "${COMPOSE_KAFKA_BOOTSTRAP:-kafka:9092}"
        assert svc["environment"]["MONGODB_URI"].startswith("mongodb://mongo:")
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond["condition"] == "service_healthy", (name, dep)
            assert "healthcheck" in services[dep], f"{name} waits for {dep}, which has no healthcheck"
    assert (REPO / "deploy/Dockerfile").exists()


def test_proxy_routes_every_api_path() -> None:
    from services.app import create_app
    from services.runtime import ALL_ROLES, Runtime
    from shared.settings import load_settings

    app = create_app(Runtime(load_settings(), ALL_ROLES))
    paths = set(app.openapi()["paths"])
    prefixes = {m.group(1) for p in paths if (m := re.match(r"(/api/v1/[a-z]+)", p))}
    conf = (REPO / "deploy/nginx.conf").read_text()
    routed = set(re.findall(r"location\s+(/api/v1/[a-z]+)", conf))
    assert prefixes == routed, f"the proxy must route exactly the API's paths: {prefixes ^ routed}"


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's `${VAR:-default}` / `${VAR:?error}` / `${VAR}` substitution, enough for this file."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3) or ""
        if env.get(name):
            return env[name]
        if op == ":?":
            raise AssertionError(f"{name} is required: {arg}")
        return arg

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", sub, value)


def _env_file(path: str) -> dict[str, str]:
    lines = (REPO / path).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


SECRETS = {"CORRIDOR_API_KEY": "k", "CORRIDOR_LINK_SECRET": "s"}


@pytest.mark.parametrize("env_file", [None, "deploy/cluster.env"])
def test_kafka_nodes_form_one_cluster_and_keep_their_data(compose: dict[str, Any], env_file: str | None) -> None:
    env = SECRETS | (_env_file(env_file) if env_file else {})
    profiles = set(env.get("COMPOSE_PROFILES", "").split(",")) - {""}
    services = {
        name: _interpolate(svc, env)
        for name, svc in compose["services"].items()
        if not svc.get("profiles") or profiles & set(svc["profiles"])
    }
    brokers = {name: svc for name, svc in services.items() if svc.get("image", "").startswith("apache/kafka:")}
    assert len(brokers) == (3 if env_file else 1)
    ids = set()
    for name, svc in brokers.items():
        e = svc["environment"]
        ids.add(f"{e['KAFKA_NODE_ID']}@{name}:9093")
        # The data volume is mounted where the broker writes (the image's default is /tmp/kraft-combined-logs).
        mounts = {v.split(":")[1] for v in svc["volumes"]}
        assert e["KAFKA_LOG_DIRS"] in mounts, f"{name}: the volume must hold log.dirs"
        assert e["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
    for name, svc in brokers.items():
        e = svc["environment"]
        assert set(e["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == ids, f"{name}: every node votes in one quorum"
        assert int(e["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == len(brokers)
        assert int(e["KAFKA_MIN_INSYNC_REPLICAS"]) == (2 if len(brokers) == 3 else 1)
    for role in ("ingest", "classifier", "alerts"):
        e = services[role]["environment"]
        assert set(e["KAFKA_BOOTSTRAP_SERVERS"].split(",")) == {f"{n}:9092" for n in brokers}
        assert int(e["CORRIDOR_TOPIC_REPLICATION_FACTOR"]) == len(brokers)
        assert int(e["CORRIDOR_TOPIC_MIN_INSYNC_REPLICAS"]) == (2 if len(brokers) == 3 else 1)
        needed = {d for d, c in services[role]["depends_on"].items() if c.get("required", True)}
        assert needed <= set(services), f"{role} depends on a service outside the profile"


def test_the_stack_stops_gracefully_and_comes_back(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        assert svc.get("restart") == "unless-stopped", f"{name} stays down after a crash or a daemon restart"
    for role in ("ingest", "classifier", "alerts"):
        # HTTP drain 10 s, record drain 10 s, closes: Docker's default 10 s would SIGKILL mid-drain.
        grace = services[role]["stop_grace_period"]
        assert grace.endswith("s") and int(grace[:-1]) >= 35, role
    assert services["mailpit"]["ports"] == ["127.0.0.1:8025:8025"], "alert emails are for this host only"
    conf = (REPO / "deploy/nginx.conf").read_text()
    assert "resolver 127.0.0.11" in conf and not re.search(r"^upstream ", conf, re.M), "names resolved per request"
    timeout = int(re.search(r"proxy_read_timeout (\d+)s", conf).group(1))  # type: ignore[union-attr]
    assert timeout > 30, "above CORRIDOR_QUERY_TIMEOUT_S, so the API's own 503 gets through"
