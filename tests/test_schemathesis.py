"""Property-based API testing over the OpenAPI contract: whatever schemathesis generates from the
spec, valid (positive) or not (negative), no route answers 5xx (user input never causes a server
error). Runs against a real `corridor run all`; schemathesis is driven directly (its pytest plugin
does not support pytest 9)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import schemathesis
from helpers import CorridorProcess
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

KEY = "schemathesis-key"
EXAMPLES_PER_OPERATION = 25


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
