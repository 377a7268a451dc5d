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
        assert svc["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
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
