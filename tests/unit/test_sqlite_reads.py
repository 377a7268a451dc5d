"""The SQLite adapter's reads: a read a caller gave up on stops, and does not hold up the rest."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shared.store.sqlite import SQLiteStore

# Counts to 10^9 in SQLite's VM: minutes of work, far beyond any wait below.
ENDLESS = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000000000) SELECT count(*) FROM n"


async def test_a_read_whose_caller_left_is_interrupted(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite3")
    await store.start()
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):  # what the API's query timeout does
                await store._rows(ENDLESS)
        # Without the interrupt this waits behind the endless count in aiosqlite's one thread.
        async with asyncio.timeout(10):
            assert await store.ping()
            assert await store.list_sources() == []
    finally:
        await store.close()
