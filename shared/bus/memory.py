"""In-process bus for the embedded mode and unit tests.

Each topic is an append-only log with offsets, like a one-partition Kafka topic; each consumer
group keeps a committed offset and starts from the earliest retained message. Prefixes every
group committed are trimmed.

Durability. ``MemoryBus()`` (``journal_path=None``, unit tests) keeps nothing across restarts.
With a journal (the embedded mode: ``var/corridor-bus.sqlite3`` next to the store, see
shared.bus.journal) it behaves like a one-broker Kafka with manual commits:

- what survives a crash: every message whose ``publish`` returned (it is in the journal before
  ``publish`` returns, and consumers see it only then) and every group's last committed offset;
- at least once: a message is delivered again, after a restart, until its group commits past
  it; a group resumes at its committed offset, in publish order, and a group that joined but
  never committed resumes at the earliest retained message. What a group committed is never
  delivered to it again;
- a crash loses only work in flight: a ``publish`` that had not returned (its caller had not
  gone on, e.g. ingest marks items seen only after) and records handled but not yet committed
  (handled again; handlers are idempotent). Against an OS crash or a power loss the journal is
  as durable as the store (WAL, synchronous=NORMAL);
- one process per journal: a second one is refused (BusUnavailable) while the first runs.

Journal writes are batched (group commit): one writer task takes every publish, commit and join
waiting and writes them in one transaction, so concurrent publishers share a write. A commit is
one statement for all its topics and, in the same transaction, trims the prefix every group
committed, so the file holds only retained messages (its size is bounded by the bound below).

Bounded: a topic holds at most ``max_retained`` messages (publishes waiting for the journal
included) past the committed offset of its slowest group, and ``publish`` waits for room
(backpressure). Only groups that joined in this process hold publishers back: a topic nobody
consumes (the dead-letter topic in the embedded mode), or whose only groups are ones the journal
remembers but no consumer joined (a renamed group), drops its oldest messages beyond the bound
instead of blocking the producer (counted in ``dropped``; the second case is logged). So every
consumer must join before anything publishes (services.runtime starts them first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from shared.bus.base import Handler, LoopLimits, dead_letter_for
from shared.bus.journal import Batch, BusJournal
from shared.bus.loop import ConsumeLoop, OnRevoked
from shared.bus.steps import Partition, Record
from shared.envelope import TOPIC_DEADLETTER, Envelope
from shared.errors import BusUnavailable

log = logging.getLogger(__name__)

# Journal operations written in one transaction at most (a bound on one write's time and size).
MAX_WRITE_BATCH = 1000


@dataclass
class _Log:
    base: int = 0  # offset of messages[0]
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    committed: dict[str, int] = field(default_factory=dict)  # group → next offset to read
    live: set[str] = field(default_factory=set)  # groups a consumer of this process joined
    pending: int = 0  # publishes waiting for the journal, counted against the bound
    warned: bool = False  # dropped messages of a group nobody joined (logged once)

    @property
    def end(self) -> int:
        return self.base + len(self.messages)

    def has_room(self, max_retained: int) -> bool:
        """Whether one more message fits behind the slowest group that joined in this process."""
        held = [self.committed[g] for g in self.live if g in self.committed]
        return not held or self.end + self.pending - min(held) < max_retained


@dataclass
class _Publish:
    topic: str
    key: str
    data: bytes


@dataclass
class _Commit:
    group: str
    offsets: dict[str, int]  # topic → next offset to read (kept only when higher)


@dataclass
class _Join:
    group: str
    topics: list[str]  # a group new to a topic starts at its earliest retained message


_Op = _Publish | _Commit | _Join


@dataclass
class _Change:
    """What one batch of operations does to one topic."""

    first: int  # offset of rows[0]
    base: int  # the topic's first retained offset after the batch
    rows: list[tuple[str, bytes]] = field(default_factory=list)
    committed: dict[str, int] = field(default_factory=dict)
    dropped: int = 0  # messages removed that a group had not committed (or nobody consumes)


class MemoryBus:
    """The :class:`~shared.bus.base.Bus` contract in one process, optionally journaled to
    ``journal_path`` (see the module doc)."""

    def __init__(
        self,
        *,
        max_retained: int = 10_000,
        batch_size: int = 100,
        deadletter_topic: str = TOPIC_DEADLETTER,
        journal_path: Path | str | None = None,
    ) -> None:
        self._logs: dict[str, _Log] = {}
        self._max = max_retained
        self._batch = batch_size
        self._deadletter = deadletter_topic
        self.journal_path = None if journal_path is None else Path(journal_path)
        self._journal: BusJournal | None = None
        self._queue: asyncio.Queue[tuple[_Op, asyncio.Future[None]] | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        # One condition for the whole bus: notified on every publish and every commit.
        self._changed = asyncio.Condition()
        self.dropped = 0

    def _log(self, topic: str) -> _Log:
        return self._logs.setdefault(topic, _Log())

    async def start(self) -> None:
        """With a journal: open it (refused with BusUnavailable while another process holds it),
        load every topic's retained messages and groups' offsets, start the writer."""
        if self.journal_path is None or self._journal is not None:
            return
        journal = BusJournal(self.journal_path)
        try:
            topics = await journal.open()
        except BaseException:
            await journal.close()
            raise
        self._journal = journal
        self._closed = False
        # The journal is the truth: nothing was published or joined before start (both need it).
        self._logs = {
            topic: _Log(base=state.base, messages=state.messages, committed=state.committed)
            for topic, state in topics.items()
        }
        behind = {
            f"{topic}/{group}": log_.end - max(offset, log_.base)
            for topic, log_ in self._logs.items()
            for group, offset in log_.committed.items()
            if log_.end > offset
        }
        if behind:
            log.info("bus journal %s: delivering again what groups had not committed: %s", self.journal_path, behind)
        self._writer = asyncio.create_task(self._write_loop(), name="bus journal writer")

    async def close(self) -> None:
        """Write what is waiting, then close the journal. Publishes after close are refused."""
        self._closed = True
        if self._writer is not None:
            self._queue.put_nowait(None)
            await self._writer
            self._writer = None
        if self._journal is not None:
            await self._journal.close()
            self._journal = None

    async def ping(self) -> bool:
        if self.journal_path is None:
            return True
        return self._writer is not None and not self._writer.done()

    async def publish(self, topic: str, key: str, envelope: Envelope) -> None:
        await self.publish_raw(topic, key, envelope.encode())

    async def publish_raw(self, topic: str, key: str, data: bytes) -> None:
        """Append bytes as they are (tests use it to publish malformed messages). Returns once the
        message is in the journal (when there is one) and visible to consumers."""
        log_ = self._log(topic)
        async with self._changed:
            await self._changed.wait_for(lambda: log_.has_room(self._max))
            if self.journal_path is None:
                self._apply(self._plan([_Publish(topic, key, data)]))
                self._changed.notify_all()
                return
            # Counted against the bound from here: the writer releases it, written or not.
            done = self._enqueue(_Publish(topic, key, data))
            log_.pending += 1
        await done

    async def _join(self, group: str, topics: list[str]) -> None:
        for topic in topics:
            self._log(topic).live.add(group)
        await self._change(_Join(group, topics))

    async def _commit(self, group: str, offsets: dict[str, int]) -> None:
        await self._change(_Commit(group, offsets))

    async def _change(self, op: _Commit | _Join) -> None:
        if self.journal_path is None:
            async with self._changed:
                self._apply(self._plan([op]))
                self._changed.notify_all()
            return
        await self._enqueue(op)

    def _enqueue(self, op: _Op) -> asyncio.Future[None]:
        """Hand ``op`` to the writer: the future is done once ``op`` is in the journal and applied."""
        if self._writer is None or self._closed:
            raise BusUnavailable("the in-process bus is not started or already closed")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, done))
        return done

    async def _write_loop(self) -> None:
        """Take what is waiting (up to MAX_WRITE_BATCH), write it in one transaction, apply it;
        until close (the None in the queue), after writing everything queued before it."""
        closing = False
        while not closing:
            batch: list[tuple[_Op, asyncio.Future[None]]] = []
            item = await self._queue.get()
            while item is not None:
                batch.append(item)
                if len(batch) >= MAX_WRITE_BATCH or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            closing = item is None
            if batch:
                await self._flush(batch)

    async def _flush(self, batch: list[tuple[_Op, asyncio.Future[None]]]) -> None:
        assert self._journal is not None
        ops = [op for op, _ in batch]
        failure: Exception | None = None
        changes: dict[str, _Change] = {}
        try:
            changes = self._plan(ops)
            await self._journal.write(self._journal_batch(changes))
        except Exception as exc:
            # An outage (BusUnavailable: disk full, I/O error) is retried by the callers; anything
            # else is a bug and reaches them too (they crash loudly). Nothing was applied.
            failure = exc
        async with self._changed:
            for op in ops:
                if isinstance(op, _Publish):
                    self._log(op.topic).pending -= 1
            if failure is None:
                self._apply(changes)
            self._changed.notify_all()
        for _, done in batch:
            if done.done():
                continue  # its caller was cancelled; the write stands (at least once)
            if failure is None:
                done.set_result(None)
            else:
                done.set_exception(failure)

    def _plan(self, ops: list[_Op]) -> dict[str, _Change]:
        """What ``ops`` do, applied in order, to each topic: rows appended, offsets committed,
        the new first retained offset. Pure: the logs change only in :meth:`_apply`."""
        changes: dict[str, _Change] = {}

        def change(topic: str) -> _Change:
            log_ = self._log(topic)
            return changes.setdefault(topic, _Change(first=log_.end, base=log_.base))

        for op in ops:
            if isinstance(op, _Publish):
                change(op.topic).rows.append((op.key, op.data))
            elif isinstance(op, _Commit):
                for topic, offset in op.offsets.items():
                    c = change(topic)
                    current = c.committed.get(op.group, self._log(topic).committed.get(op.group))
                    c.committed[op.group] = offset if current is None else max(current, offset)
            else:
                for topic in op.topics:
                    c = change(topic)
                    if op.group not in c.committed and op.group not in self._log(topic).committed:
                        c.committed[op.group] = c.base
        for topic, c in changes.items():
            log_ = self._log(topic)
            end = c.first + len(c.rows)
            groups = log_.committed | c.committed
            trimmed = min(max(log_.base, min(groups.values(), default=log_.base)), end)
            # Beyond the bound only groups that did not join in this process (or none) hold the
            # oldest messages: publishers did not wait for them, so they are dropped.
            c.base = max(trimmed, end - self._max)
            c.dropped = c.base - trimmed
        return changes

    def _journal_batch(self, changes: dict[str, _Change]) -> Batch:
        batch = Batch()
        for topic, c in changes.items():
            batch.rows.extend((topic, c.first + i, key, data) for i, (key, data) in enumerate(c.rows))
            batch.offsets.extend((topic, group, offset) for group, offset in c.committed.items())
            if c.base > self._log(topic).base:
                batch.trims.append((topic, c.base))
        return batch

    def _apply(self, changes: dict[str, _Change]) -> None:
        for topic, c in changes.items():
            log_ = self._log(topic)
            log_.messages.extend(c.rows)
            log_.committed.update(c.committed)
            del log_.messages[: c.base - log_.base]
            log_.base = c.base
            self.dropped += c.dropped
            if c.dropped and log_.committed and not log_.warned:
                log_.warned = True
                idle = sorted(set(log_.committed) - log_.live)
                log.warning(
                    "bus topic %s: %d messages past the bound of %d dropped for groups no consumer joined: %s",
                    topic,
                    c.dropped,
                    self._max,
                    idle,
                )

    async def consume(
        self,
        topics: Sequence[str],
        group: str,
        handler: Handler,
        stop: asyncio.Event,
        *,
        limits: LoopLimits | None = None,
    ) -> None:
        backend = _MemoryConsumer(self, topics, group)

        async def dead_letter(record: Record, reason: str) -> None:
            dead = dead_letter_for(record.topic, record.key, record.value, reason, offset=record.offset)
            await self.publish(self._deadletter, record.key or "", dead)

        loop = ConsumeLoop(
            backend,
            handler,
            dead_letter=dead_letter,
            stop=stop,
            limits=limits or LoopLimits(batch=self._batch),
            name=f"consumer {group}",
        )
        await loop.run()


class _MemoryConsumer:
    """The :class:`~shared.bus.loop.ConsumerBackend` of one group on a :class:`MemoryBus`: each
    topic is one partition; the group's committed offset is where a new consumer starts."""

    def __init__(self, bus: MemoryBus, topics: Sequence[str], group: str) -> None:
        self._bus = bus
        self._group = group
        self._topics = list(topics)
        self._logs = [(topic, bus._log(topic)) for topic in topics]
        self._position: dict[str, int] = {}
        self._paused = False

    async def start(self, on_revoked: OnRevoked) -> None:
        await self._bus._join(self._group, self._topics)
        for topic, log_ in self._logs:
            self._position[topic] = log_.committed[self._group]

    def _take(self, max_records: int) -> list[Record]:
        if self._paused:
            return []
        records: list[Record] = []
        for topic, log_ in self._logs:
            position = max(self._position[topic], log_.base)
            for key, data in log_.messages[position - log_.base : position - log_.base + max_records - len(records)]:
                records.append(Record(topic, 0, position, key, data))
                position += 1
            self._position[topic] = position
        return records

    async def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        if records := self._take(max_records):
            return records

        def pending() -> bool:
            return not self._paused and any(log_.end > self._position[topic] for topic, log_ in self._logs)

        async with self._bus._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._bus._changed.wait_for(pending), timeout_s)
        return self._take(max_records)

    async def commit(self, offsets: dict[Partition, int]) -> None:
        await self._bus._commit(self._group, {topic: offset for (topic, _), offset in offsets.items()})

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    async def close(self) -> None:
        return None
