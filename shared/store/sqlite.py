"""SQLite adapter of the store contract, for the embedded mode (one process, no servers).

Each record is stored as its JSON document plus the columns we filter and sort on. Timestamps
are fixed-width ISO strings (``%Y-%m-%dT%H:%M:%S.%fZ``) so text order is time order. One
connection and one lock: SQLite has a single writer anyway, and the lock makes every
read-modify-write (claims, partial updates) atomic with respect to other coroutines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, overload

import aiosqlite
from pydantic import BaseModel

from shared.errors import Conflict
from shared.models import ClassifiedItem, Delivery, DeliveryStatus, DuplicateRef, Source, Subscription
from shared.store.base import MAX_PAGE, MAX_SCAN, EventQuery, SectorCount
from shared.text import search_tokens

M = TypeVar("M", bound=BaseModel)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
  id TEXT PRIMARY KEY, url TEXT NOT NULL UNIQUE, active INTEGER NOT NULL,
  next_check_at TEXT NOT NULL, lease_until TEXT, created_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sources_due ON sources (next_check_at);
CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, hash TEXT NOT NULL, seen_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dedupe_keys (key TEXT PRIMARY KEY, item_id TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS duplicates (
  id TEXT PRIMARY KEY, item_id TEXT NOT NULL, seen_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS duplicates_item ON duplicates (item_id, seen_at);
CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, sort_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS items_recent ON items (sort_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS item_index (
  id TEXT PRIMARY KEY, top_score REAL NOT NULL, week TEXT NOT NULL, source_id TEXT NOT NULL, language TEXT,
  bilateral INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS item_index_best ON item_index (top_score DESC, id DESC);
CREATE TABLE IF NOT EXISTS item_tokens (token TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (token, id));
CREATE TABLE IF NOT EXISTS subscriptions (
  id TEXT PRIMARY KEY, active INTEGER NOT NULL, created_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
  id TEXT PRIMARY KEY, subscription_id TEXT NOT NULL, status TEXT NOT NULL,
  next_attempt_at TEXT NOT NULL, lease_until TEXT, created_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_sub ON deliveries (subscription_id, created_at DESC);
"""


@overload
def _ts(value: datetime) -> str: ...
@overload
def _ts(value: None) -> None: ...
def _ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SQLiteStore:
    """The :class:`~shared.store.base.Store` contract on a local SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self._path = str(path)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("SQLiteStore used before start()")
        return self._db

    async def start(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self._path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA busy_timeout=5000")
        # WAL + NORMAL: commits survive a process crash (what the embedded mode needs); only an OS
        # crash or power loss can drop the last transactions, never corrupt the file.
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.executescript(_SCHEMA)
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> bool:
        try:
            await self.db.execute("SELECT 1")
        except Exception:  # any failure means "not ready"
            return False
        return True

    async def _one(self, model: type[M], sql: str, args: Iterable[Any] = ()) -> M | None:
        async with self.db.execute(sql, tuple(args)) as cur:
            row = await cur.fetchone()
        return model.model_validate_json(row[0]) if row else None

    async def _many(self, model: type[M], sql: str, args: Iterable[Any] = ()) -> list[M]:
        async with self.db.execute(sql, tuple(args)) as cur:
            rows = await cur.fetchall()
        return [model.model_validate_json(r[0]) for r in rows]

    # sources
    def _source_row(self, s: Source) -> tuple[Any, ...]:
        return (
            s.id,
            s.url,
            int(s.active),
            _ts(s.next_check_at),
            _ts(s.lease_until),
            _ts(s.created_at),
            s.model_dump_json(),
        )

    async def insert_source(self, source: Source) -> None:
        async with self._lock:
            try:
                await self.db.execute("INSERT INTO sources VALUES (?,?,?,?,?,?,?)", self._source_row(source))
            except aiosqlite.IntegrityError as exc:
                raise Conflict("source", source.url) from exc
            await self.db.commit()

    async def get_source(self, source_id: str) -> Source | None:
        return await self._one(Source, "SELECT doc FROM sources WHERE id=?", (source_id,))

    async def list_sources(self) -> list[Source]:
        return await self._many(Source, "SELECT doc FROM sources ORDER BY created_at, id")

    async def _write_source(self, source: Source) -> None:
        await self.db.execute("REPLACE INTO sources VALUES (?,?,?,?,?,?,?)", self._source_row(source))
        await self.db.commit()

    async def claim_due_source(self, now: datetime, lease_until: datetime) -> Source | None:
        async with self._lock:
            source = await self._one(
                Source,
                "SELECT doc FROM sources WHERE active=1 AND next_check_at<=? AND "
                "(lease_until IS NULL OR lease_until<=?) ORDER BY next_check_at LIMIT 1",
                (_ts(now), _ts(now)),
            )
            if source is None:
                return None
            source = source.model_copy(update={"lease_until": lease_until})
            await self._write_source(source)
            return source

    async def update_source(self, source_id: str, fields: dict[str, Any]) -> None:
        async with self._lock:
            current = await self.get_source(source_id)
            if current is not None:
                await self._write_source(Source.model_validate({**current.model_dump(), **fields}))

    async def delete_source(self, source_id: str) -> bool:
        async with self._lock:
            cur = await self.db.execute("DELETE FROM sources WHERE id=?", (source_id,))
            await self.db.commit()
            return cur.rowcount > 0

    # ingest dedupe
    async def _lookup(self, sql: str, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            async with self.db.execute(sql.format(marks=",".join("?" * len(part))), part) as cur:
                found.update({r[0]: r[1] for r in await cur.fetchall()})
        return found

    async def seen_hashes(self, ids: Iterable[str]) -> dict[str, str]:
        return await self._lookup("SELECT id, hash FROM seen WHERE id IN ({marks})", list(set(ids)))

    async def mark_seen(self, hashes: dict[str, str], now: datetime) -> None:
        async with self._lock:
            await self.db.executemany("REPLACE INTO seen VALUES (?,?,?)", [(i, h, _ts(now)) for i, h in hashes.items()])
            await self.db.commit()

    async def claim_keys(self, keys: dict[str, str], now: datetime) -> dict[str, str]:
        if not keys:
            return {}
        async with self._lock:
            await self.db.executemany(
                "INSERT OR IGNORE INTO dedupe_keys VALUES (?,?,?)", [(k, v, _ts(now)) for k, v in keys.items()]
            )
            await self.db.commit()
        return await self._lookup("SELECT key, item_id FROM dedupe_keys WHERE key IN ({marks})", list(keys))

    async def add_duplicate(self, ref: DuplicateRef) -> None:
        async with self._lock:
            await self.db.execute(
                "REPLACE INTO duplicates VALUES (?,?,?,?)",
                (ref.id, ref.item_id, _ts(ref.seen_at), ref.model_dump_json()),
            )
            await self.db.commit()

    async def list_duplicates(self, item_id: str) -> list[DuplicateRef]:
        return await self._many(
            DuplicateRef, "SELECT doc FROM duplicates WHERE item_id=? ORDER BY seen_at, id LIMIT ?", (item_id, MAX_PAGE)
        )

    # items
    async def upsert_item(self, item: ClassifiedItem) -> None:
        await self.upsert_items([item])

    async def upsert_items(self, items: list[ClassifiedItem]) -> None:
        async with self._lock:
            for item in items:
                await self.db.execute(
                    "REPLACE INTO items VALUES (?,?,?)", (item.id, _ts(item.sort_at), item.model_dump_json())
                )
                await self.db.execute(
                    "REPLACE INTO item_index VALUES (?,?,?,?,?,?)",
                    (item.id, item.top_score, item.week, item.source_id, item.language, int(item.bilateral)),
                )
                await self.db.execute("DELETE FROM item_tokens WHERE id=?", (item.id,))
                await self.db.executemany(
                    "INSERT OR IGNORE INTO item_tokens VALUES (?,?)",
                    [(t, item.id) for t in search_tokens(f"{item.title} {item.summary}")],
                )
            await self.db.commit()

    async def get_item(self, item_id: str) -> ClassifiedItem | None:
        return await self._one(ClassifiedItem, "SELECT doc FROM items WHERE id=?", (item_id,))

    async def list_items(self, query: EventQuery) -> list[ClassifiedItem]:
        where: list[str] = []
        args: list[Any] = []
        sectors = query.any_sectors
        if sectors:
            marks = ",".join("?" * len(sectors))
            where.append(f"EXISTS (SELECT 1 FROM json_each(items.doc, '$.sectors') WHERE value IN ({marks}))")
            args += list(sectors)
        if query.country:
            where.append("EXISTS (SELECT 1 FROM json_each(items.doc, '$.countries') WHERE value=?)")
            args.append(query.country)
        for clause, value in (
            ("x.bilateral=?", None if query.bilateral is None else int(query.bilateral)),
            ("x.source_id=?", query.source_id),
            ("x.language=?", query.language),
            ("items.sort_at>=?", _ts(query.since)),
            ("items.sort_at<?", _ts(query.until)),
            ("x.top_score>=?", query.min_score),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        for token in query.q_tokens:
            where.append("EXISTS (SELECT 1 FROM item_tokens t WHERE t.token=? AND t.id=items.id)")
            args.append(token)
        key = "items.sort_at" if query.sort == "time" else "x.top_score"
        if query.after:
            after_value, last_id = query.after
            bound = _ts(after_value) if isinstance(after_value, datetime) else after_value
            where.append(f"({key} < ? OR ({key} = ? AND items.id < ?))")
            args += [bound, bound, last_id]
        sql = "SELECT items.doc FROM items JOIN item_index x ON x.id = items.id"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {key} DESC, items.id DESC LIMIT ?"
        args.append(max(1, min(query.limit, MAX_PAGE)))
        return await self._many(ClassifiedItem, sql, args)

    async def sector_counts(self, *, country: str | None = None, since: datetime | None = None) -> list[SectorCount]:
        where = ["1=1"]
        args: list[Any] = []
        if country:
            where.append("EXISTS (SELECT 1 FROM json_each(items.doc, '$.countries') WHERE value=?)")
            args.append(country)
        if since:
            where.append("items.sort_at>=?")
            args.append(_ts(since))
        sql = (
            "SELECT s.value, x.week, COUNT(*) FROM items JOIN item_index x ON x.id = items.id, "
            f"json_each(items.doc, '$.sectors') s WHERE {' AND '.join(where)} GROUP BY s.value, x.week "
            "ORDER BY x.week, s.value"
        )
        async with self.db.execute(sql, args) as cur:
            return [SectorCount(r[0], r[1], int(r[2])) for r in await cur.fetchall()]

    async def refresh_stats(self, max_days: int) -> int:
        return 0  # real indexes: nothing to summarise

    async def duplicates_of(self, item_ids: Iterable[str]) -> dict[str, list[DuplicateRef]]:
        ids = list(set(item_ids))
        found: dict[str, list[DuplicateRef]] = {}
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            refs = await self._many(
                DuplicateRef,
                f"SELECT doc FROM duplicates WHERE item_id IN ({','.join('?' * len(part))}) ORDER BY seen_at, id",
                part,
            )
            for ref in refs:
                found.setdefault(ref.item_id, []).append(ref)
        return found

    # subscriptions
    async def insert_subscription(self, subscription: Subscription) -> None:
        async with self._lock:
            try:
                await self.db.execute(
                    "INSERT INTO subscriptions VALUES (?,?,?,?)",
                    (
                        subscription.id,
                        int(subscription.active),
                        _ts(subscription.created_at),
                        subscription.model_dump_json(),
                    ),
                )
            except aiosqlite.IntegrityError as exc:
                raise Conflict("subscription", subscription.id) from exc
            await self.db.commit()

    async def get_subscription(self, subscription_id: str) -> Subscription | None:
        return await self._one(Subscription, "SELECT doc FROM subscriptions WHERE id=?", (subscription_id,))

    async def list_subscriptions(self, *, active_only: bool = False) -> list[Subscription]:
        sql = "SELECT doc FROM subscriptions"
        if active_only:
            sql += " WHERE active=1"
        return await self._many(Subscription, sql + " ORDER BY created_at, id")

    async def delete_subscription(self, subscription_id: str) -> bool:
        async with self._lock:
            cur = await self.db.execute("DELETE FROM subscriptions WHERE id=?", (subscription_id,))
            await self.db.commit()
            return cur.rowcount > 0

    async def update_subscription(self, subscription_id: str, fields: dict[str, Any]) -> None:
        async with self._lock:
            current = await self.get_subscription(subscription_id)
            if current is None:
                return
            updated = Subscription.model_validate({**current.model_dump(), **fields})
            await self.db.execute(
                "UPDATE subscriptions SET active=?, doc=? WHERE id=?",
                (int(updated.active), updated.model_dump_json(), subscription_id),
            )
            await self.db.commit()

    # deliveries
    def _delivery_row(self, d: Delivery) -> tuple[Any, ...]:
        return (
            d.id,
            d.subscription_id,
            d.status,
            _ts(d.next_attempt_at),
            _ts(d.lease_until),
            _ts(d.created_at),
            d.model_dump_json(),
        )

    async def insert_delivery(self, delivery: Delivery) -> bool:
        async with self._lock:
            cur = await self.db.execute(
                "INSERT OR IGNORE INTO deliveries VALUES (?,?,?,?,?,?,?)", self._delivery_row(delivery)
            )
            await self.db.commit()
            return cur.rowcount > 0

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        return await self._one(Delivery, "SELECT doc FROM deliveries WHERE id=?", (delivery_id,))

    async def _lease_delivery(self, sql: str, args: tuple[Any, ...], lease_until: datetime) -> Delivery | None:
        delivery = await self._one(Delivery, sql, args)
        if delivery is None:
            return None
        delivery = delivery.model_copy(update={"lease_until": lease_until})
        await self.db.execute("REPLACE INTO deliveries VALUES (?,?,?,?,?,?,?)", self._delivery_row(delivery))
        await self.db.commit()
        return delivery

    async def claim_delivery(self, delivery_id: str, now: datetime, lease_until: datetime) -> Delivery | None:
        async with self._lock:
            return await self._lease_delivery(
                "SELECT doc FROM deliveries WHERE id=? AND status='pending' AND "
                "(lease_until IS NULL OR lease_until<=?)",
                (delivery_id, _ts(now)),
                lease_until,
            )

    async def claim_due_delivery(self, now: datetime, lease_until: datetime) -> Delivery | None:
        async with self._lock:
            return await self._lease_delivery(
                "SELECT doc FROM deliveries WHERE status='pending' AND next_attempt_at<=? AND "
                "(lease_until IS NULL OR lease_until<=?) ORDER BY next_attempt_at LIMIT 1",
                (_ts(now), _ts(now)),
                lease_until,
            )

    async def update_delivery(self, delivery_id: str, fields: dict[str, Any]) -> None:
        async with self._lock:
            current = await self.get_delivery(delivery_id)
            if current is None:
                return
            updated = Delivery.model_validate({**current.model_dump(), **fields})
            await self.db.execute("REPLACE INTO deliveries VALUES (?,?,?,?,?,?,?)", self._delivery_row(updated))
            await self.db.commit()

    async def list_deliveries(
        self,
        *,
        subscription_id: str | None = None,
        status: DeliveryStatus | None = None,
        item_id: str | None = None,
        digest_period: str | None = None,
        limit: int = 50,
    ) -> list[Delivery]:
        where: list[str] = []
        args: list[Any] = []
        for clause, value in (
            ("subscription_id=?", subscription_id),
            ("status=?", status),
            ("json_extract(doc, '$.item_id')=?", item_id),
            ("json_extract(doc, '$.digest_period')=?", digest_period),
        ):
            if value:
                where.append(clause)
                args.append(value)
        sql = "SELECT doc FROM deliveries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        args.append(max(1, min(limit, MAX_SCAN)))
        return await self._many(Delivery, sql, args)
