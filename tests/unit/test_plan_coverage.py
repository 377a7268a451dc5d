"""The query-plan test (tests/contract/test_query_plans.py) explains every filter of
/api/v1/events on the Mongo-wire server; it lists them by hand, so a filter added to the API and
not to that list would never be explained (the audit of 2026-12-05 added one and the plan test
still passed). This test fails until the list names every filter the API takes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from services.app import create_app
from services.runtime import ALL_ROLES, Runtime
from shared.settings import load_settings

PLANS = Path(__file__).resolve().parents[1] / "contract" / "test_query_plans.py"
NOT_FILTERS = {"sort", "limit", "cursor", "key"}  # order, paging and the read key: no filter


def test_the_plan_test_explains_every_events_filter(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("query_plans_for_coverage", PLANS)
    assert spec is not None and spec.loader is not None
    plans = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plans)
    app = create_app(Runtime(load_settings(sqlite_path=tmp_path / "c.sqlite3"), ALL_ROLES))
    operation = app.openapi()["paths"]["/api/v1/events"]["get"]
    params = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
    explained = {name for filters in plans.FILTERS.values() for name in filters}
    assert params - NOT_FILTERS <= explained, f"not explained by the plan test: {params - NOT_FILTERS - explained}"
    # Each equality filter names the indexed field it reads through.
    assert set(plans.FIELD) >= {f for f in plans.FILTERS if f not in {"since", "until", "min_score"}}
