"""The journal of the in-process bus: what :class:`~shared.bus.memory.MemoryBus` keeps on disk so
that a restart (or a crash) of the embedded mode loses no published message.

One SQLite file, separate from the store's (``var/corridor-bus.sqlite3`` next to
``var/corridor.sqlite3``), with two tables:

- ``messages(topic, msg_offset, key, data)`` — the retained part of each topic's log, in offset
  order; rows are only ever appended at the end and deleted from the start (a prefix every
  consumer group committed, or the oldest messages of a topic past its bound);
- ``offsets(topic, grp, next_offset)`` — each consumer group's committed offset per topic.

Contracts:
- :meth:`BusJournal.write` applies one batch (appends, offset commits, trims) in one
  transaction: all of it is on disk when it returns, or none of it.
- Durability is the store's: WAL with ``synchronous=NORMAL``, so a committed batch survives a
  process crash (SIGKILL, OOM); only an OS crash or a power loss can drop the last batches, never
  corrupt the file.
- One process at a time: the file is opened in SQLite's exclusive locking mode, so a second
  process (a second ``corridor run`` on the same files) is refused with
  :class:`~shared.errors.BusUnavailable` instead of interleaving offsets. The lock goes with the
  process: a crashed holder leaves nothing to clean up.
- Every call runs on one dedicated thread (the connection is never shared between threads);
  a failure of the file (disk full, I/O error, locked) is :class:`~shared.errors.BusUnavailable`,
  anything else propagates.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from shared.errors import BusUnavailable

T = TypeVar("T")

WAL_LIMIT_BYTES = 16 * 1024 * 1024  # what the write-ahead log is cut back to after a checkpoint

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    topic TEXT NOT NULL,
    msg_offset INTEGER NOT NULL,
    key TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (topic, msg_offset)
);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL,
    grp TEXT NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, grp)
) WITHOUT ROWID;
"""


@dataclass
class TopicState:
    """One topic as the journal holds it: its retained messages from offset ``base`` on and the
    committed offset of every group that ever joined it."""

    base: int = 0
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    committed: dict[str, int] = field(default_factory=dict)


@dataclass
class Batch:
    """One transaction: rows appended, committed offsets (kept when higher), and per topic the
    offset below which rows are deleted."""

    rows: list[tuple[str, int, str, bytes]] = field(default_factory=list)  # topic, offset, key, data
    offsets: list[tuple[str, str, int]] = field(default_factory=list)  # topic, group, next offset
    trims: list[tuple[str, int]] = field(default_factory=list)  # topic, new first offset

    def __bool__(self) -> bool:
        return bool(self.rows or self.offsets or self.trims)


class BusJournal:
    """The bus's SQLite file, used from one thread. ``open``, then ``write`` batches, ``close``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        # One thread: SQLite connections are not shared between threads, and the writes are
        # sequential anyway (the bus hands over one batch at a time).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bus-journal")
        self._shut = False

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def open(self) -> dict[str, TopicState]:
        """Open (create) the file, take its lock and read every topic's state."""
        return await self._call(self._open)

    async def write(self, batch: Batch) -> None:
        """Apply ``batch`` in one transaction."""
        await self._call(self._write, batch)

    async def close(self) -> None:
        """Close the file (releases its lock) and the thread; safe to call more than once."""
        if self._shut:
            return
        await self._call(self._close)
        self._shut = True
        self._thread.shutdown(wait=True)  # idle by now: returns at once

    def _open(self) -> dict[str, TopicState]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            # Exclusive before WAL is entered: the WAL index lives in this process's memory and
            # the lock, taken by the first write below, is held until close.
            # (Each pragma's result is fetched: a pragma statement left unfinished does not apply
            # the locking mode, and a second process could then open the file too.)
            db.execute("PRAGMA locking_mode=EXCLUSIVE").fetchall()
            db.execute("PRAGMA busy_timeout=0").fetchall()
            db.execute("PRAGMA journal_mode=WAL").fetchall()
            db.execute("PRAGMA synchronous=NORMAL").fetchall()
            # The WAL is reused after each checkpoint, but keeps its largest size unless capped.
            db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}").fetchall()
            db.executescript(_SCHEMA)
            # Take the lock now, even when the schema existed and nothing was written.
            db.execute("BEGIN IMMEDIATE")
            db.execute("COMMIT")
            topics: dict[str, TopicState] = {}
            for topic, group, offset in db.execute("SELECT topic, grp, next_offset FROM offsets"):
                topics.setdefault(topic, TopicState()).committed[group] = offset
            rows = db.execute("SELECT topic, msg_offset, key, data FROM messages ORDER BY topic, msg_offset")
            for topic, offset, key, data in rows:
                state = topics.setdefault(topic, TopicState())
                if not state.messages:
                    state.base = offset
                elif offset != state.base + len(state.messages):
                    raise RuntimeError(f"bus journal {self.path}: topic {topic} has a gap before offset {offset}")
                state.messages.append((key, bytes(data)))
            for state in topics.values():
                if not state.messages:
                    # Everything was trimmed: the log goes on after the highest committed offset.
                    state.base = max(state.committed.values(), default=0)
        except sqlite3.OperationalError as exc:
            db.close()
            raise _unavailable(self.path, exc) from exc
        except BaseException:
            db.close()
            raise
        self._db = db
        return topics

    def _write(self, batch: Batch) -> None:
        if self._db is None:
            raise BusUnavailable(f"bus journal {self.path} is closed")
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                if batch.rows:
                    db.executemany("INSERT INTO messages (topic, msg_offset, key, data) VALUES (?,?,?,?)", batch.rows)
                if batch.offsets:
                    # One statement for the whole commit; an offset never goes back.
                    db.executemany(
                        "INSERT INTO offsets (topic, grp, next_offset) VALUES (?, ?, ?) ON CONFLICT (topic, grp)"
                        " DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
                        batch.offsets,
                    )
                if batch.trims:
                    db.executemany("DELETE FROM messages WHERE topic = ? AND msg_offset < ?", batch.trims)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            raise _unavailable(self.path, exc) from exc

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _unavailable(path: Path, exc: sqlite3.OperationalError) -> BusUnavailable:
    if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return BusUnavailable(f"bus journal {path} is in use by another process")
    return BusUnavailable(f"bus journal {path}: {exc}")
