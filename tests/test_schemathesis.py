"""Property-based API testing over the OpenAPI contract: whatever schemathesis generates from the
spec, valid (positive) or not (negative), no route answers 5xx (user input never causes a server
error). Runs against a real `corridor run all`; schemathesis is driven directly (its pytest plugin
does not support pytest 9)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import schemathesis
from helpers import CorridorProcess
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

KEY = "schemathesis-key"
EXAMPLES_PER_OPERATION = 25
# The class of input that once answered 500 (issue 13, item 8): text a database or a JSON
# encoder cannot take, numbers JSON cannot carry, moments that overflow, huge and odd strings.
HOSTILE_STRINGS = [
    "\udc80",
    "ünïcödé-ťøkéñ",
    "x" * 5000,
    "\x00",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "../../etc/passwd",
    "' OR 1=1 --",
    "%",
]
HOSTILE_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e309", "-1", "99999999999999999999"]


def test_no_route_answers_5xx_to_generated_input(tmp_path: Path) -> None:
    corridor = CorridorProcess(
        "all",
        {"CORRIDOR_API_KEY": KEY, "CORRIDOR_SQLITE_PATH": str(tmp_path / "s.sqlite3"), "CORRIDOR_POLL_TICK_S": "60"},
        tmp_path / "corridor.log",
    ).start()
    statuses: Counter[int] = Counter()
    no_negative = 0
    try:
        schema = schemathesis.openapi.from_url(f"{corridor.base}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 20
        cases = [(op, mode) for op in operations for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
        for operation, mode in cases:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def run(case: schemathesis.Case) -> None:
                response = case.call(headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
                statuses[response.status_code] += 1
                case.validate_response(response, checks=[not_a_server_error])

            try:
                run()
            except Unsatisfiable:
                # An operation without parameters or body has no invalid input to generate.
                assert mode == GenerationMode.NEGATIVE
                no_negative += 1
    finally:
        corridor.stop()
    print(
        f"\nschemathesis: {sum(statuses.values())} requests over {len(operations)} operations "
        f"({no_negative} without possible invalid input): {dict(statuses)}"
    )
    assert not any(code >= 500 for code in statuses)


def _quoted(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


def hostile_requests(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """For every operation of the spec: each query and path parameter, and each top-level body
    field, given each hostile value in turn (the other fields left out or minimal)."""
    requests = []
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            params = [p for p in operation.get("parameters", []) if p["in"] in ("query", "path")]
            path_defaults = {p["name"]: "x" for p in params if p["in"] == "path"}
            body_schema = (
                operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            )
            if "$ref" in body_schema:
                body_schema = spec["components"]["schemas"][body_schema["$ref"].rsplit("/", 1)[1]]
            fields = list(body_schema.get("properties", {}))
            for value in HOSTILE_STRINGS + HOSTILE_NUMBERS:
                for param in params:
                    where = dict(path_defaults)
                    query = {}
                    if param["in"] == "path":
                        where[param["name"]] = value
                    else:
                        query[param["name"]] = value
                    # Bytes a client can send (a lone surrogate as its UTF-8-like bytes), percent-encoded.
                    url = path.format(**{k: _quoted(v) for k, v in where.items()})
                    if query:
                        url += "?" + "&".join(f"{k}={_quoted(v)}" for k, v in query.items())
                    requests.append((method.upper(), url, {}))
                for field in fields:
                    url = path.format(**path_defaults)
                    raw = value if value in HOSTILE_NUMBERS else json.dumps(value)
                    body = "{" + json.dumps(field) + ": " + raw + "}"
                    requests.append((method.upper(), url, {"content": body.encode("utf-8", "surrogatepass")}))
    return requests


def test_hostile_values_in_every_parameter_get_4xx(tmp_path: Path) -> None:
    """Beyond what schemathesis generates: each parameter and body field of every operation
    given each value of the class that once caused 500s."""
    corridor = CorridorProcess(
        "all",
        {"CORRIDOR_API_KEY": KEY, "CORRIDOR_SQLITE_PATH": str(tmp_path / "s.sqlite3"), "CORRIDOR_POLL_TICK_S": "60"},
        tmp_path / "corridor.log",
    ).start()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
    try:
        with httpx.Client(base_url=corridor.base, headers=headers, timeout=30) as client:
            spec = client.get("/openapi.json").json()
            requests = hostile_requests(spec)
            assert len(requests) > 500
            for method, url, kwargs in requests:
                answer = client.request(method, url, **kwargs)
                statuses[answer.status_code] += 1
                if answer.status_code >= 500:
                    failures.append(f"{method} {url} {kwargs}: {answer.status_code} {answer.text[:200]}")
    finally:
        corridor.stop()
    print(f"\nhostile values: {sum(statuses.values())} requests: {dict(statuses)}")
    assert not failures, "\n".join(failures[:20])
