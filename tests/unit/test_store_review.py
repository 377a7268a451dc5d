"""Differences between the SQLite and MongoDB stores a review of 2026-12-04 reproduced at the
API's edge (the stores' own: tests/contract). Each test fails without its fix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from helpers import runtime_client

from services.classifier.routes import EventFilters
from services.runtime import ALL_ROLES, Runtime
from shared.settings import load_settings


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(sqlite_path=tmp_path / "c.sqlite3", api_key="api-test-key")
    async with runtime_client(Runtime(settings, ALL_ROLES)) as c:
        yield c


async def test_an_empty_source_filter_is_refused(client: httpx.AsyncClient) -> None:
    # "?source=" matched every item on MongoDB and none on SQLite.
    got = await client.get("/api/v1/events", params={"source": ""})
    assert got.status_code == 422 and got.json()["detail"][0]["loc"] == ["query", "source"]


def test_time_bounds_are_cut_to_the_stored_precision() -> None:
    # Stored moments are milliseconds; a bound of 12:00:00.1235 kept an item of 12:00:00.123 out
    # on SQLite (which compared microseconds) and in on MongoDB (BSON cut the bound).
    bound = datetime(2026, 3, 1, 12, 0, 0, 123500, tzinfo=UTC)
    filters = EventFilters(since=bound, until=bound)
    assert filters.since == filters.until == datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert filters.query(limit=5).since == datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
