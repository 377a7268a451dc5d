"""SQLite adapter of the store contract, for the embedded mode (one process, no servers).

Each record is stored as its JSON document plus the columns we filter and sort on (``_COLUMNS``).
Timestamps are fixed-width ISO strings (``%Y-%m-%dT%H:%M:%S.%fZ``) so text order is time order.
One connection and one lock: SQLite has a single writer anyway, and the lock makes every
read-modify-write (claims, partial updates) atomic with respect to other coroutines. Reads take
the lock too (unless their own task holds it): on one connection a read sees the connection's
uncommitted writes, so a read between a batch's DELETE and INSERT would miss rows that never
left.

Events: ``events`` holds the document and the scalar filters, each with an index that ends in
the sort keys. ``event_terms`` holds one row per sector (``s:energy``), country (``c:PK``) and
country–sector pair (``x:PK:energy``, for timelines) of each event, with its sort keys, so a
sector or country filter is an ordered range of one index; with several sectors each one's
range is read up to the page size and the ranges are merged. ``event_words`` is an FTS5 index of
the event's normalised words (:func:`shared.text.search_tokens`, one token each: the ``ascii``
tokenizer splits only at the spaces between them), keyed by the event's ``rid``. A search for
a rare word reads its matches and sorts them; for a common one (more than WORD_SCAN matches) the
page is read in order and each row is checked against the matches.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Collection, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast, overload

import aiosqlite
from pydantic import BaseModel

from shared.errors import Conflict
from shared.models import (
    AgreementEvent,
    ClassifiedItem,
    Delivery,
    DeliveryStatus,
    DuplicateRef,
    Source,
    Stage,
    Subscription,
)
from shared.store.base import (
    DEFAULT_RETENTION_S,
    DUE_COUNT_CAP,
    MAX_PAGE,
    MAX_SCAN,
    AgreementActivity,
    EventQuery,
    SectorCount,
    translate_errors,
)
from shared.text import search_tokens

M = TypeVar("M", bound=BaseModel)
PURGE_EVERY_S = 3600.0  # how often expired seen marks and dedupe keys are deleted
BATCH = 500  # ids per IN (...) list
_COPY_SOURCE = "json_extract(d.doc, '$.source_id')"  # a copy's source: the duplicates_source index's expression
WORD_SCAN = 2000  # a search with more matches reads in order instead of sorting the matches

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
  id TEXT PRIMARY KEY, url TEXT NOT NULL UNIQUE, active INTEGER NOT NULL,
  next_check_at TEXT NOT NULL, lease_until TEXT, created_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sources_due ON sources (next_check_at);
CREATE TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY, hash TEXT NOT NULL, seen_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS seen_expiry ON seen (seen_at);
CREATE TABLE IF NOT EXISTS dedupe_keys (key TEXT PRIMARY KEY, item_id TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS dedupe_keys_expiry ON dedupe_keys (at);
CREATE TABLE IF NOT EXISTS duplicates (
  id TEXT PRIMARY KEY, item_id TEXT NOT NULL, seen_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS duplicates_item ON duplicates (item_id, seen_at);
CREATE INDEX IF NOT EXISTS duplicates_source ON duplicates (json_extract(doc, '$.source_id'), seen_at);
CREATE TABLE IF NOT EXISTS events (
  rid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, sort_at TEXT NOT NULL, top_score REAL NOT NULL,
  source_id TEXT NOT NULL, language TEXT, bilateral INTEGER NOT NULL, stage TEXT, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_recent ON events (sort_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS events_best ON events (top_score DESC, id DESC);
CREATE INDEX IF NOT EXISTS events_source ON events (source_id, sort_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS events_language ON events (language, sort_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS events_bilateral ON events (bilateral, sort_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS event_terms (
  term TEXT NOT NULL, sort_at TEXT NOT NULL, top_score REAL NOT NULL, id TEXT NOT NULL,
  PRIMARY KEY (term, sort_at, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_terms_best ON event_terms (term, top_score DESC, id DESC);
CREATE INDEX IF NOT EXISTS event_terms_id ON event_terms (id);
CREATE VIRTUAL TABLE IF NOT EXISTS event_words USING fts5(words, detail=none, tokenize="ascii tokenchars '_'");
CREATE TABLE IF NOT EXISTS agreement_stages (agreement_id TEXT PRIMARY KEY, stage TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS agreement_events (
  id TEXT PRIMARY KEY, agreement_id TEXT NOT NULL, at TEXT NOT NULL, published_at TEXT, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS agreement_events_by ON agreement_events (agreement_id, at DESC);
CREATE INDEX IF NOT EXISTS agreement_events_recent ON agreement_events (at DESC, id DESC);
CREATE TABLE IF NOT EXISTS subscriptions (
  id TEXT PRIMARY KEY, active INTEGER NOT NULL, created_at TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
  id TEXT PRIMARY KEY, subscription_id TEXT NOT NULL, status TEXT NOT NULL,
  next_attempt_at TEXT NOT NULL, lease_until TEXT, created_at TEXT NOT NULL, item_id TEXT NOT NULL,
  digest_period TEXT, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_sub ON deliveries (subscription_id, created_at DESC);
CREATE INDEX IF NOT EXISTS deliveries_item ON deliveries (item_id, created_at DESC);
"""
# Tables of the earlier layout (events as ``items`` + ``item_index`` + ``item_tokens``; deliveries
# without their item id column), moved by :meth:`SQLiteStore.migrate`.
_LEGACY_EVENTS = "items"


@overload
def _ts(value: datetime) -> str: ...
@overload
def _ts(value: None) -> None: ...
def _ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    utc = value.astimezone(UTC)
    # %Y does not pad years before 1000 on glibc ("500-01-01" would sort after "2025-…").
    return f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S.%f}Z"


# The columns of each record table before ``doc``: what its queries filter and sort on.
_COLUMNS = {
    "sources": ("id", "url", "active", "next_check_at", "lease_until", "created_at"),
    "subscriptions": ("id", "active", "created_at"),
    "deliveries": (
        "id",
        "subscription_id",
        "status",
        "next_attempt_at",
        "lease_until",
        "created_at",
        "item_id",
        "digest_period",
    ),
}


def _row(table: str, record: BaseModel) -> tuple[Any, ...]:
    values = (getattr(record, column) for column in _COLUMNS[table])
    cells = (_ts(v) if isinstance(v, datetime) else int(v) if isinstance(v, bool) else v for v in values)
    return (*cells, record.model_dump_json())


def _moment(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _terms(item: ClassifiedItem) -> list[str]:
    sectors, countries = list(dict.fromkeys(item.sectors)), sorted(set(item.countries))
    return [
        *(f"s:{s}" for s in sectors),
        *(f"c:{c}" for c in countries),
        *(f"x:{c}:{s}" for c in countries for s in sectors),
        *(f"a:{a.id}" for a in item.agreements),
    ]


def _words(item: ClassifiedItem) -> str:
    return " ".join(search_tokens(f"{item.title} {item.summary}"))


def _match(tokens: Iterable[str]) -> str:
    """An FTS5 query: every token, each quoted (tokens are \\w+ words; quotes only for safety)."""
    return " ".join('"' + t.replace('"', '""') + '"' for t in tokens)


def is_unavailable(exc: BaseException) -> bool:
    """Locked, busy, full or unreadable database: the file cannot answer now. A file that is
    not a database or is corrupt raises the base DatabaseError itself (its subclasses, such as
    IntegrityError, are the caller's errors, not the file's): a traceback before."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


@translate_errors(is_unavailable)
class SQLiteStore:
    """The :class:`~shared.store.base.Store` contract on a local SQLite file."""

    def __init__(self, path: Path | str, *, retention_s: float = DEFAULT_RETENTION_S) -> None:
        self._path = str(path)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._holder: asyncio.Task[Any] | None = None  # the task inside ``_locked``
        self._retention = timedelta(seconds=retention_s)
        self._purged_at = float("-inf")

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("SQLiteStore used before start()")
        return self._db

    async def start(self) -> None:
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        connection = aiosqlite.connect(self._path)
        try:
            self._db = await connection
        except BaseException:
            # A failed connect makes aiosqlite queue the stop of its worker thread without awaiting
            # it; the thread would later post that result into an event loop that may be closed by
            # then (an unhandled thread exception). Wait for the thread, bounded, before raising.
            await asyncio.to_thread(connection._thread.join, 5.0)
            raise
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA busy_timeout=5000")
        # WAL + NORMAL: commits survive a process crash (what the embedded mode needs); only an OS
        # crash or power loss can drop the last transactions, never corrupt the file.
        await self._db.execute("PRAGMA synchronous=NORMAL")
        async with self._db.execute("PRAGMA table_info(deliveries)") as cur:
            columns = {r[1] for r in await cur.fetchall()}
        if columns and "item_id" not in columns:
            # The earlier layout read these from the JSON document on every query.
            await self._db.executescript(
                "ALTER TABLE deliveries ADD COLUMN item_id TEXT NOT NULL DEFAULT '';"
                "ALTER TABLE deliveries ADD COLUMN digest_period TEXT;"
                "UPDATE deliveries SET item_id = json_extract(doc, '$.item_id'),"
                " digest_period = json_extract(doc, '$.digest_period');"
            )
        await self._db.executescript(_SCHEMA)
        await self._db.commit()

    async def migrate(self) -> dict[str, int]:
        tables = {r[0] for r in await self._rows("SELECT name FROM sqlite_master WHERE type='table'")}
        moved = 0
        if _LEGACY_EVENTS in tables:
            while page := await self._many(ClassifiedItem, "SELECT doc FROM items ORDER BY id LIMIT ?", (BATCH,)):
                present = await self.get_items(i.id for i in page)  # the current layout's copy wins
                await self.upsert_items([i for i in page if i.id not in present])
                async with self._locked():
                    marks = ",".join("?" * len(page))
                    await self.db.execute(f"DELETE FROM items WHERE id IN ({marks})", [i.id for i in page])
                    await self.db.commit()
                moved += len(page)
            async with self._locked():
                await self.db.executescript(
                    "DROP TABLE items; DROP TABLE IF EXISTS item_index; DROP TABLE IF EXISTS item_tokens;"
                )
        return {"events": moved} if moved else {}

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

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        """Hold the writer's lock; reads of the same task inside it do not wait for it again.
        A statement that fails inside (busy past busy_timeout, a full disk, a refused insert)
        leaves the transaction Python's sqlite3 opened for it: it is rolled back here, or the
        connection keeps an old snapshot and the file's write lock (SQLite's advice after BUSY
        and FULL). The rollback is queued behind the failed work and does nothing when no
        transaction is open."""
        async with self._lock:
            self._holder = asyncio.current_task()
            try:
                yield
            except BaseException:
                if self._db is not None:
                    await self._db.rollback()
                raise
            finally:
                self._holder = None

    async def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[Any]:
        # One hand-off to aiosqlite's thread per query (execute, fetch and close would be three).
        # A read waits for a writer's transaction to end: only committed rows are ever seen.
        if self._holder is not None and self._holder is asyncio.current_task():
            return list(await self.db.execute_fetchall(sql, tuple(args)))
        async with self._lock:
            try:
                return list(await self.db.execute_fetchall(sql, tuple(args)))
            except asyncio.CancelledError:
                # Its caller left (a request's query timeout), but aiosqlite's thread would run
                # the statement to the end while every other call queues behind it. Under the
                # lock the statement running is this one: stop it.
                await self.db.interrupt()
                raise

    async def _one(self, model: type[M], sql: str, args: Iterable[Any] = ()) -> M | None:
        rows = await self._rows(sql, args)
        return model.model_validate_json(rows[0][0]) if rows else None

    async def _many(self, model: type[M], sql: str, args: Iterable[Any] = ()) -> list[M]:
        return [model.model_validate_json(r[0]) for r in await self._rows(sql, args)]

    # records stored as a document plus their _COLUMNS
    async def _write(self, table: str, record: BaseModel, verb: str = "REPLACE") -> bool:
        """Write one record (caller holds the lock and commits); False when ``verb`` ignored it."""
        marks = ",".join("?" * (len(_COLUMNS[table]) + 1))
        cur = await self.db.execute(f"{verb} INTO {table} VALUES ({marks})", _row(table, record))
        return cur.rowcount > 0

    async def _begin(self) -> None:
        """Begin an immediate transaction (the file's write lock, taken now, so what the caller
        reads next cannot change before it writes); the caller holds the lock. A transaction
        left open before (a cancelled caller's queued statement) is rolled back first."""
        # Unconditional: `in_transaction` is read on this thread, while statements still queued
        # on aiosqlite's thread (a cancelled caller's) may open one after the check.
        await self.db.rollback()
        await self.db.execute("BEGIN IMMEDIATE")  # on failure, _locked rolls back

    async def _insert(self, table: str, record: BaseModel, conflict: Conflict) -> None:
        async with self._locked():
            try:
                await self._write(table, record, "INSERT")
            except sqlite3.IntegrityError as exc:
                # The INSERT opened a transaction: left open, it held the file's write lock and
                # the next BEGIN IMMEDIATE failed ("within a transaction").
                await self.db.rollback()
                raise conflict from exc
            await self.db.commit()

    async def _patch(
        self, table: str, model: type[M], record_id: str, fields: dict[str, Any], unless: dict[str, Any] | None = None
    ) -> bool:
        """Set ``fields`` of one record; False when there is none or it holds every value of
        ``unless``. Read and written in one immediate transaction: another process on the file
        (``corridor reclassify`` beside ``corridor run``) cannot write between the two."""
        async with self._locked():
            try:
                await self._begin()
                current = await self._one(model, f"SELECT doc FROM {table} WHERE id=?", (record_id,))
                if current is None or (unless and all(getattr(current, k) == v for k, v in unless.items())):
                    await self.db.rollback()
                    return False
                await self._write(table, model.model_validate({**current.model_dump(), **fields}))
            except BaseException:
                await self.db.rollback()
                raise
            await self.db.commit()
            return True

    async def _claim(self, table: str, model: type[M], where: str, args: tuple[Any, ...], until: datetime) -> M | None:
        """Lease the first record matching ``where`` (the lock makes read-then-write atomic)."""
        async with self._locked():
            record = await self._one(model, f"SELECT doc FROM {table} WHERE {where} LIMIT 1", args)
            if record is None:
                return None
            record = record.model_copy(update={"lease_until": until})
            await self._write(table, record)
            await self.db.commit()
            return record

    async def _delete(self, table: str, record_id: str) -> bool:
        async with self._locked():
            cur = await self.db.execute(f"DELETE FROM {table} WHERE id=?", (record_id,))
            await self.db.commit()
            return cur.rowcount > 0

    # sources
    async def insert_source(self, source: Source) -> None:
        await self._insert("sources", source, Conflict("source", source.url))

    async def get_source(self, source_id: str) -> Source | None:
        return await self._one(Source, "SELECT doc FROM sources WHERE id=?", (source_id,))

    async def list_sources(self) -> list[Source]:
        return await self._many(Source, "SELECT doc FROM sources ORDER BY created_at, id")

    async def claim_due_source(self, now: datetime, lease_until: datetime) -> Source | None:
        where = "active=1 AND next_check_at<=? AND (lease_until IS NULL OR lease_until<=?) ORDER BY next_check_at"
        return await self._claim("sources", Source, where, (_ts(now), _ts(now)), lease_until)

    async def count_due_sources(self, now: datetime) -> int:
        due = "SELECT 1 FROM sources WHERE active=1 AND next_check_at<=? AND (lease_until IS NULL OR lease_until<=?)"
        rows = await self._rows(f"SELECT COUNT(*) FROM ({due} LIMIT {DUE_COUNT_CAP})", (_ts(now), _ts(now)))
        return int(rows[0][0])

    async def update_source(self, source_id: str, fields: dict[str, Any]) -> None:
        await self._patch("sources", Source, source_id, fields)

    async def delete_source(self, source_id: str) -> bool:
        return await self._delete("sources", source_id)

    # ingest dedupe
    async def _lookup(self, sql: str, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            found.update({r[0]: r[1] for r in await self._rows(sql.format(marks=",".join("?" * len(part))), part)})
        return found

    async def seen_hashes(self, ids: Iterable[str]) -> dict[str, str]:
        return await self._lookup("SELECT id, hash FROM seen WHERE id IN ({marks})", list(set(ids)))

    async def mark_seen(self, hashes: dict[str, str], now: datetime) -> None:
        async with self._locked():
            await self.db.executemany("REPLACE INTO seen VALUES (?,?,?)", [(i, h, _ts(now)) for i, h in hashes.items()])
            await self._purge_expired(now)
            await self.db.commit()

    async def _purge_expired(self, now: datetime) -> None:
        """What a TTL index does on MongoDB, at most every PURGE_EVERY_S (caller holds the lock)."""
        if time.monotonic() - self._purged_at < PURGE_EVERY_S:
            return
        self._purged_at = time.monotonic()
        cutoff = _ts(now - self._retention)
        await self.db.execute("DELETE FROM seen WHERE seen_at < ?", (cutoff,))
        await self.db.execute("DELETE FROM dedupe_keys WHERE at < ?", (cutoff,))

    async def claim_keys(self, keys: dict[str, str], now: datetime) -> dict[str, str]:
        if not keys:
            return {}
        async with self._locked():
            await self.db.executemany(
                "INSERT OR IGNORE INTO dedupe_keys VALUES (?,?,?)", [(k, v, _ts(now)) for k, v in keys.items()]
            )
            await self.db.commit()
        return await self._lookup("SELECT key, item_id FROM dedupe_keys WHERE key IN ({marks})", list(keys))

    async def take_over_keys(
        self, keys: dict[str, tuple[str, str]], claimed_before: datetime, now: datetime
    ) -> set[str]:
        if not keys:
            return set()
        async with self._locked():
            await self.db.executemany(
                "UPDATE dedupe_keys SET item_id = ?, at = ? WHERE key = ? AND item_id = ? AND at < ?",
                [(new, _ts(now), k, old, _ts(claimed_before)) for k, (old, new) in keys.items()],
            )
            await self.db.commit()
        owners = await self._lookup("SELECT key, item_id FROM dedupe_keys WHERE key IN ({marks})", list(keys))
        return {k for k, (_, new) in keys.items() if owners.get(k) == new}

    async def add_duplicates(self, refs: list[DuplicateRef]) -> None:
        async with self._locked():
            await self.db.executemany(
                "REPLACE INTO duplicates VALUES (?,?,?,?)",
                [(r.id, r.item_id, _ts(r.seen_at), r.model_dump_json()) for r in refs],
            )
            await self.db.commit()

    async def list_duplicates(self, item_id: str) -> list[DuplicateRef]:
        return (await self.duplicates_of([item_id])).get(item_id, [])

    async def duplicates_of(self, item_ids: Iterable[str]) -> dict[str, list[DuplicateRef]]:
        ids = list(dict.fromkeys(item_ids))
        found: dict[str, list[DuplicateRef]] = {}
        for i in range(0, len(ids), BATCH):
            part = ids[i : i + BATCH]
            refs = await self._many(
                DuplicateRef,
                f"SELECT doc FROM duplicates WHERE item_id IN ({','.join('?' * len(part))}) ORDER BY seen_at, id",
                part,
            )
            for ref in refs:
                copies = found.setdefault(ref.item_id, [])
                if len(copies) < MAX_PAGE:
                    copies.append(ref)
        return found

    # items (events)
    async def upsert_item(self, item: ClassifiedItem) -> None:
        await self.upsert_items([item])

    async def upsert_items(self, items: list[ClassifiedItem]) -> None:
        latest = list({i.id: i for i in items}.values())  # the last of repeated ids wins
        async with self._locked():
            await self._begin()  # rids are assigned here: one writer at a time
            await self._store_items(latest)

    async def replace_item_if(self, item: ClassifiedItem, revision: int, content_hash: str) -> bool:
        async with self._locked():
            # The check and the write in one immediate transaction: no other process on the file
            # (the live classifier beside `corridor reclassify`) writes between them.
            try:
                await self._begin()
                current = await self._one(ClassifiedItem, "SELECT doc FROM events WHERE id=?", (item.id,))
            except BaseException:
                await self.db.rollback()
                raise
            if current is None or (current.revision, current.content_hash) != (revision, content_hash):
                await self.db.rollback()
                return False
            await self._store_items([item])
            return True

    async def _store_items(self, latest: list[ClassifiedItem]) -> None:
        """Write ``latest`` (distinct ids) and their search rows, then commit; the caller holds
        the lock and has begun the immediate transaction (rolled back here on failure)."""
        try:
            found = await self._lookup("SELECT id, rid FROM events WHERE id IN ({marks})", [i.id for i in latest])
            rids = {item_id: int(rid) for item_id, rid in found.items()}
            [(top,)] = await self._rows("SELECT coalesce(max(rid), 0) FROM events")
            for item in latest:
                if item.id not in rids:
                    top += 1
                    rids[item.id] = top
            known = [(rids[i.id],) for i in latest]
            ids = [(i.id,) for i in latest]
            await self.db.executemany("DELETE FROM event_words WHERE rowid = ?", known)
            await self.db.executemany("DELETE FROM event_terms WHERE id = ?", ids)
            await self.db.executemany(
                "REPLACE INTO events VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (
                        rids[i.id],
                        i.id,
                        _ts(i.sort_at),
                        i.top_score,
                        i.source_id,
                        i.language,
                        int(i.bilateral),
                        i.stage,
                        i.model_dump_json(),
                    )
                    for i in latest
                ],
            )
            await self.db.executemany(
                "INSERT INTO event_terms VALUES (?,?,?,?)",
                [(t, _ts(i.sort_at), i.top_score, i.id) for i in latest for t in _terms(i)],
            )
            await self.db.executemany(
                "INSERT INTO event_words (rowid, words) VALUES (?,?)", [(rids[i.id], _words(i)) for i in latest]
            )
        except BaseException:
            await self.db.rollback()
            raise
        await self.db.commit()

    async def get_item(self, item_id: str) -> ClassifiedItem | None:
        return await self._one(ClassifiedItem, "SELECT doc FROM events WHERE id=?", (item_id,))

    async def get_items(self, item_ids: Iterable[str]) -> dict[str, ClassifiedItem]:
        ids = list(dict.fromkeys(item_ids))
        found: dict[str, ClassifiedItem] = {}
        for n in range(0, len(ids), BATCH):
            part = ids[n : n + BATCH]
            sql = f"SELECT doc FROM events WHERE id IN ({','.join('?' * len(part))})"
            found.update({i.id: i for i in await self._many(ClassifiedItem, sql, part)})
        return found

    async def list_items(self, query: EventQuery) -> list[ClassifiedItem]:
        limit = max(1, min(query.limit, MAX_PAGE))
        key = "sort_at" if query.sort == "time" else "top_score"
        agreement = [f"a:{query.agreement}"] if query.agreement else []
        sectors = [f"s:{s}" for s in query.any_sectors]
        groups = [g for g in (agreement, sectors, [f"c:{query.country}"] if query.country else []) if g]
        match = _match(query.q_tokens) if query.q_tokens else None
        # What hands out the page: a rare word's matches (sorted), else a term's ordered range
        # (sectors, else country), else an index of ``events``; every other filter is checked on
        # each row read. "+" keeps SQLite from driving the query with a long match list.
        rare = match is not None and await self._matches(match) <= WORD_SCAN
        drive = groups[0] if groups and not rare else []
        t = "t" if drive else "e"  # the table the sort keys are read from
        where: list[str] = []
        args: list[Any] = []
        for column, op, value in (
            ("e.bilateral", "=", None if query.bilateral is None else int(query.bilateral)),
            ("e.source_id", "=", query.source_id),
            ("e.language", "=", query.language),
            (f"{t}.sort_at", ">=", _ts(query.since)),
            (f"{t}.sort_at", "<", _ts(query.until)),
            (f"{t}.top_score", ">=", query.min_score),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        for group in groups[1:] if drive else groups:
            marks = ",".join("?" * len(group))
            where.append(f"EXISTS (SELECT 1 FROM event_terms x WHERE x.id = e.id AND x.term IN ({marks}))")
            args += group
        if match is not None:
            where.append(f"{'' if rare else '+'}e.rid IN (SELECT rowid FROM event_words WHERE event_words MATCH ?)")
            args.append(match)
        if query.after:
            after, last_id = query.after
            bound = _ts(after) if isinstance(after, datetime) else after
            where.append(f"({t}.{key} < ? OR ({t}.{key} = ? AND {t}.id < ?))")
            args += [bound, bound, last_id]
        order = f"ORDER BY {t}.{key} DESC, {t}.id DESC LIMIT {limit}"
        conditions = "".join(" AND " + w for w in where)
        if drive:
            ranges = [
                f"SELECT * FROM (SELECT t.id, t.{key} AS k FROM event_terms t JOIN events e ON e.id = t.id "
                f"WHERE t.term = ?{conditions} {order})"
                for _ in drive
            ]
            sql = f"SELECT id, k FROM ({' UNION '.join(ranges)}) ORDER BY k DESC, id DESC LIMIT {limit}"
            args = [a for term in drive for a in (term, *args)]
        else:
            sql = f"SELECT e.id, e.{key} AS k FROM events e WHERE 1{conditions} {order}"
        page = f"SELECT e.doc FROM ({sql}) p JOIN events e ON e.id = p.id ORDER BY p.k DESC, p.id DESC"
        return await self._many(ClassifiedItem, page, args)

    async def _matches(self, match: str) -> int:
        """How many events a search matches, counted up to WORD_SCAN + 1."""
        sql = "SELECT count(*) FROM (SELECT rowid FROM event_words WHERE event_words MATCH ? LIMIT ?)"
        [(count,)] = await self._rows(sql, (match, WORD_SCAN + 1))
        return int(count)

    async def sector_counts(self, *, country: str | None = None, since: datetime | None = None) -> list[SectorCount]:
        # One range of the terms index: s:<sector> (all items) or x:<country>:<sector>.
        prefix = f"x:{country}:" if country else "s:"
        sql = (
            "SELECT substr(term, ?), date(substr(sort_at, 1, 10), '-6 days', 'weekday 1') AS week, count(*) "
            "FROM event_terms WHERE term > ? AND term < ? AND sort_at >= ? GROUP BY 1, 2 ORDER BY 2, 1"
        )
        args = (len(prefix) + 1, prefix, prefix + "\uffff", _ts(since) if since else "")
        return [SectorCount(r[0], r[1], int(r[2])) for r in await self._rows(sql, args)]

    # agreements
    @staticmethod
    def _linked(agreement_id: str | None, since: datetime | None) -> tuple[str, list[str]]:
        """The condition on ``event_terms t`` for items linked to ``agreement_id`` (one range of
        the terms index, or the whole a: prefix) listed from ``since``, and its arguments."""
        where, args = ("t.term = ?", [f"a:{agreement_id}"]) if agreement_id else ("t.term > 'a:' AND t.term < 'a;'", [])
        if since is not None:
            where, args = f"{where} AND t.sort_at >= ?", [*args, _ts(since)]
        return where, args

    async def agreement_activity(
        self, agreement_id: str | None = None, *, since: datetime | None = None
    ) -> list[AgreementActivity]:
        where, args = self._linked(agreement_id, since)
        sql = (
            "SELECT substr(t.term, 3), e.stage, e.source_id, count(*), min(t.sort_at), max(t.sort_at), "
            "json_extract(e.doc, '$.publisher') "
            f"FROM event_terms t JOIN events e ON e.id = t.id WHERE {where} GROUP BY 1, 2, 3, 7"
        )
        return [
            AgreementActivity(r[0], r[1], r[2], int(r[3]), _moment(r[4]), _moment(r[5]), r[6])
            for r in await self._rows(sql, args)
        ]

    async def agreement_copies(
        self, source_ids: Collection[str], agreement_id: str | None = None, *, since: datetime | None = None
    ) -> list[AgreementActivity]:
        ids = sorted(set(source_ids))
        if not ids:
            return []
        # Those sources' copies (the duplicates_source index on the same expression), each
        # joined to its item's agreement terms and event.
        where, args = self._linked(agreement_id, since)
        if since is not None:  # the copies since then too: a range of the index after the source
            where, args = f"{where} AND d.seen_at >= ?", [*args, _ts(since)]
        sql = (
            f"SELECT substr(t.term, 3), e.stage, {_COPY_SOURCE}, count(*), min(d.seen_at), max(d.seen_at) "
            # CROSS JOIN keeps the copies first: without statistics the planner would walk all of
            # one agreement's items instead (measured: 26 ms against 0.2 ms on 7,466 items).
            "FROM duplicates d CROSS JOIN event_terms t ON t.id = d.item_id JOIN events e ON e.id = d.item_id "
            f"WHERE {_COPY_SOURCE} IN ({','.join('?' * len(ids))}) AND {where} GROUP BY 1, 2, 3"
        )
        return [
            AgreementActivity(r[0], r[1], r[2], int(r[3]), _moment(r[4]), _moment(r[5]))
            for r in await self._rows(sql, [*ids, *args])
        ]

    async def get_agreement_stage(self, agreement_id: str) -> Stage | None:
        rows = await self._rows("SELECT stage FROM agreement_stages WHERE agreement_id=?", (agreement_id,))
        return cast(Stage, rows[0][0]) if rows else None

    async def swap_agreement_stage(self, agreement_id: str, expected: Stage | None, new: Stage) -> bool:
        async with self._locked():
            if expected is None:
                cur = await self.db.execute("INSERT OR IGNORE INTO agreement_stages VALUES (?,?)", (agreement_id, new))
            else:
                update = "UPDATE agreement_stages SET stage=? WHERE agreement_id=? AND stage=?"
                cur = await self.db.execute(update, (new, agreement_id, expected))
            await self.db.commit()
            return cur.rowcount > 0

    async def insert_agreement_event(self, event: AgreementEvent) -> bool:
        async with self._locked():
            cur = await self.db.execute(
                "INSERT OR IGNORE INTO agreement_events VALUES (?,?,?,?,?)",
                (event.id, event.agreement_id, _ts(event.at), _ts(event.published_at), event.model_dump_json()),
            )
            await self.db.commit()
            return cur.rowcount > 0

    async def get_agreement_event(self, event_id: str) -> AgreementEvent | None:
        return await self._one(AgreementEvent, "SELECT doc FROM agreement_events WHERE id=?", (event_id,))

    async def list_agreement_events(
        self, *, agreement_id: str | None = None, unpublished_before: datetime | None = None, limit: int = 50
    ) -> list[AgreementEvent]:
        where, args, order = "1", [], "at DESC, id DESC"
        if agreement_id:
            where, args = "agreement_id=?", [agreement_id]
        if unpublished_before is not None:
            where, args, order = "published_at IS NULL AND at < ?", [_ts(unpublished_before)], "at"
        sql = f"SELECT doc FROM agreement_events WHERE {where} ORDER BY {order} LIMIT ?"
        return await self._many(AgreementEvent, sql, [*args, max(1, min(limit, MAX_SCAN))])

    async def mark_agreement_event_published(self, event_id: str, at: datetime) -> None:
        async with self._locked():
            current = await self.get_agreement_event(event_id)
            if current is not None:
                updated = current.model_copy(update={"published_at": at})
                await self.db.execute(
                    "UPDATE agreement_events SET published_at=?, doc=? WHERE id=?",
                    (_ts(at), updated.model_dump_json(), event_id),
                )
                await self.db.commit()

    # subscriptions
    async def insert_subscription(self, subscription: Subscription) -> None:
        await self._insert("subscriptions", subscription, Conflict("subscription", subscription.id))

    async def get_subscription(self, subscription_id: str) -> Subscription | None:
        return await self._one(Subscription, "SELECT doc FROM subscriptions WHERE id=?", (subscription_id,))

    async def list_subscriptions(self, *, active_only: bool = False) -> list[Subscription]:
        where = "active=1" if active_only else "1"
        return await self._many(Subscription, f"SELECT doc FROM subscriptions WHERE {where} ORDER BY created_at, id")

    async def delete_subscription(self, subscription_id: str) -> bool:
        return await self._delete("subscriptions", subscription_id)

    async def update_subscription(
        self, subscription_id: str, fields: dict[str, Any], *, unless_reason: str | None = None
    ) -> bool:
        unless = {"disabled_reason": unless_reason} if unless_reason is not None else None
        return await self._patch("subscriptions", Subscription, subscription_id, fields, unless)

    # deliveries
    async def insert_delivery(self, delivery: Delivery) -> bool:
        return bool(await self.insert_deliveries([delivery]))

    async def insert_deliveries(self, deliveries: list[Delivery]) -> set[str]:
        async with self._locked():
            # Two statements for the batch (one per delivery would cost a thread hand-off each).
            known = await self._lookup(
                "SELECT id, id FROM deliveries WHERE id IN ({marks})", [d.id for d in deliveries]
            )
            marks = ",".join("?" * (len(_COLUMNS["deliveries"]) + 1))
            rows = [_row("deliveries", d) for d in deliveries]
            await self.db.executemany(f"INSERT OR IGNORE INTO deliveries VALUES ({marks})", rows)
            await self.db.commit()
            return {d.id for d in deliveries} - set(known)

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        return await self._one(Delivery, "SELECT doc FROM deliveries WHERE id=?", (delivery_id,))

    async def claim_delivery(self, delivery_id: str, now: datetime, lease_until: datetime) -> Delivery | None:
        where = "id=? AND status='pending' AND (lease_until IS NULL OR lease_until<=?)"
        return await self._claim("deliveries", Delivery, where, (delivery_id, _ts(now)), lease_until)

    async def claim_due_delivery(
        self, now: datetime, lease_until: datetime, *, exclude_subscriptions: Collection[str] = ()
    ) -> Delivery | None:
        where = "status='pending' AND next_attempt_at<=? AND (lease_until IS NULL OR lease_until<=?)"
        args: list[Any] = [_ts(now), _ts(now)]
        if exclude_subscriptions:
            where += f" AND subscription_id NOT IN ({','.join('?' * len(exclude_subscriptions))})"
            args += sorted(exclude_subscriptions)
        where += " ORDER BY next_attempt_at"
        return await self._claim("deliveries", Delivery, where, tuple(args), lease_until)

    async def update_delivery(self, delivery_id: str, fields: dict[str, Any]) -> None:
        await self._patch("deliveries", Delivery, delivery_id, fields)

    async def finish_delivery(self, delivery_id: str, lease_until: datetime, fields: dict[str, Any]) -> bool:
        # Compared to the millisecond, as on MongoDB: a record re-validated since its claim keeps
        # its lease in milliseconds, the claim returned it with microseconds.
        where = "id=? AND substr(lease_until, 1, 23)=?"
        async with self._locked():
            current = await self._one(
                Delivery, f"SELECT doc FROM deliveries WHERE {where}", (delivery_id, _ts(lease_until)[:23])
            )
            if current is None:
                return False
            await self._write("deliveries", Delivery.model_validate({**current.model_dump(), **fields}))
            await self.db.commit()
            return True

    async def list_deliveries(
        self,
        *,
        subscription_id: str | None = None,
        status: DeliveryStatus | None = None,
        item_id: str | None = None,
        digest_period: str | None = None,
        limit: int = 50,
        before: tuple[datetime, str] | None = None,
    ) -> list[Delivery]:
        wanted = {
            "subscription_id": subscription_id,
            "status": status,
            "item_id": item_id,
            "digest_period": digest_period,
        }
        where = " AND ".join(f"{column}=?" for column, value in wanted.items() if value) or "1"
        args: list[Any] = [value for value in wanted.values() if value]
        if before is not None:
            at = _ts(before[0])
            where += " AND created_at <= ? AND (created_at < ? OR id < ?)"
            args += [at, at, before[1]]
        args.append(max(1, min(limit, MAX_SCAN)))
        return await self._many(
            Delivery, f"SELECT doc FROM deliveries WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ?", args
        )
