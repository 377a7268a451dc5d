"""The processing steps of the consume loop (shared.bus.loop), each a small object with one job.

- :class:`RunTask` runs the handler on one record under the failure policy: poison is
  dead-lettered, an outage (:class:`~shared.errors.Unavailable`) is retried with back-off for as
  long as it lasts (or until the loop halts or the record's partition is revoked), anything else
  is a bug and propagates.
- :class:`KeyedRunner` is the bounded concurrent step: records of one key (per partition) run
  one after another in offset order, different keys run concurrently up to a bound; it reports
  how many records it holds so the loop can pause polling (backpressure) instead of blocking.
- :class:`OffsetTracker` is the commit policy: a partition's committable offset is its lowest
  unfinished offset — the contiguous finished prefix — never past a record still in work.

The model is getsentry/arroyo's RunTask / RunTaskInThreads / CommitOffsets chain, reduced to
what an asyncio service needs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from shared.bus.base import Handler
from shared.envelope import Envelope
from shared.errors import PoisonMessage, Unavailable
from shared.outage import Backoff, OutageLog

log = logging.getLogger(__name__)

Partition = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True, slots=True)
class Record:
    """One message as the loop sees it, whatever the backend."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes

    @property
    def tp(self) -> Partition:
        return (self.topic, self.partition)


DeadLetterSink = Callable[[Record, str], Awaitable[None]]


class Abandoned(Exception):
    """A record's work stopped before it finished (the loop is halting): it stays uncommitted."""


class RunTask:
    """Decode, run the handler, apply the failure policy. ``__call__`` returns once the record is
    done (handled or dead-lettered), raises :class:`Abandoned` if ``halt`` or ``leaving`` (its
    partition was revoked) is set while it waits out an outage, and lets any other exception (a
    bug) propagate."""

    def __init__(self, handler: Handler, dead_letter: DeadLetterSink, *, halt: asyncio.Event, outage: OutageLog):
        self._handler = handler
        self._dead_letter = dead_letter
        self._halt = halt
        self._outage = outage

    async def __call__(self, record: Record, leaving: asyncio.Event | None = None) -> None:
        backoff = Backoff()
        # A revoke must not wait out a back-off sleep (up to 30 s): the rebalance holds every
        # member of the group until this one has drained, and the new owner retries the record.
        wake = (self._halt,) if leaving is None else (self._halt, leaving)
        while True:
            try:
                try:
                    envelope = Envelope.decode(record.value)
                    await self._handler(envelope)
                except PoisonMessage as exc:
                    log.warning(
                        "dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc.reason
                    )
                    await self._dead_letter(record, exc.reason)
            except Unavailable as exc:
                self._outage.down(str(exc))
                if await sleep_unless_set(backoff.next_s(), *wake):
                    raise Abandoned from exc
                continue
            self._outage.up()
            return


async def sleep_unless_set(delay_s: float, *events: asyncio.Event) -> bool:
    """Sleep ``delay_s`` unless one of ``events`` is set first; True when one is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=delay_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    return any(event.is_set() for event in events)


class KeyedRunner:
    """Runs records in order per (partition, key), concurrently across keys, at most
    ``concurrency`` at once. ``submit`` never blocks: the caller watches ``buffered`` and stops
    fetching when it is too high. The first bug (an exception other than :class:`Abandoned`) is
    kept in ``failure`` and stops every worker after its current record. ``run`` gets each record
    with its partition's ``leaving`` event, set when ``drain`` is given that partition."""

    def __init__(
        self,
        run: Callable[[Record, asyncio.Event], Awaitable[None]],
        *,
        concurrency: int,
        halt: asyncio.Event,
        on_done: Callable[[Record], None],
    ) -> None:
        self._run = run
        self._slots = asyncio.Semaphore(concurrency)
        self._halt = halt
        self._on_done = on_done
        self._queues: dict[tuple[Partition, str | None], deque[Record]] = {}
        self._workers: dict[tuple[Partition, str | None], asyncio.Task[None]] = {}
        self._revoked: set[Partition] = set()
        self._leaving: dict[Partition, asyncio.Event] = {}
        self.buffered = 0
        self.failure: BaseException | None = None

    def submit(self, record: Record) -> None:
        lane = (record.tp, record.key)
        self._queues.setdefault(lane, deque()).append(record)
        self.buffered += 1
        if record.tp in self._revoked:  # assigned to this member again
            self._revoked.discard(record.tp)
            self._leaving.pop(record.tp, None)
        if lane not in self._workers:
            self._workers[lane] = asyncio.create_task(self._work(lane), name=f"consume {record.tp} {record.key}")

    def _stopped(self, tp: Partition) -> bool:
        return self._halt.is_set() or self.failure is not None or tp in self._revoked

    async def _work(self, lane: tuple[Partition, str | None]) -> None:
        queue = self._queues[lane]
        try:
            while queue and not self._stopped(lane[0]):
                async with self._slots:
                    if self._stopped(lane[0]):
                        break
                    record = queue[0]
                    try:
                        await self._run(record, self._leaving.setdefault(lane[0], asyncio.Event()))
                    except Abandoned:
                        break
                    except Exception as exc:
                        if self.failure is None:
                            self.failure = exc
                            self._halt.set()
                        break
                    queue.popleft()
                    self.buffered -= 1
                    self._on_done(record)
        finally:
            del self._workers[lane]
            if not queue:
                del self._queues[lane]

    async def drain(self, deadline_s: float, partitions: Collection[Partition] | None = None) -> None:
        """Let the records in work finish (those of ``partitions``, or all), up to ``deadline_s``;
        cancel what is still running then, and forget the records not started. Callers halt
        first (set ``halt``) or pass the revoked ``partitions``."""
        if partitions is not None:
            self._revoked.update(partitions)
            for tp in partitions:
                self._leaving.setdefault(tp, asyncio.Event()).set()
        lanes = [lane for lane in self._workers if partitions is None or lane[0] in partitions]
        tasks = [self._workers[lane] for lane in lanes]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=deadline_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for lane in [lane for lane in self._queues if partitions is None or lane[0] in partitions]:
            if lane not in self._workers:
                self.buffered -= len(self._queues.pop(lane))


class OffsetTracker:
    """Per partition: the offsets received and not yet finished, and what was last committed.
    ``committable()`` gives, for each partition whose position moved, the offset to commit."""

    def __init__(self) -> None:
        self._open: dict[Partition, set[int]] = {}
        self._next: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}

    def received(self, record: Record) -> None:
        self._open.setdefault(record.tp, set()).add(record.offset)
        self._next[record.tp] = record.offset + 1

    def finished(self, record: Record) -> None:
        if (open_ := self._open.get(record.tp)) is not None:
            open_.discard(record.offset)

    def committable(self, partitions: Collection[Partition] | None = None) -> dict[Partition, int]:
        result: dict[Partition, int] = {}
        for tp, next_ in self._next.items():
            if partitions is not None and tp not in partitions:
                continue
            open_ = self._open[tp]
            position = min(open_) if open_ else next_
            if self._committed.get(tp) != position:
                result[tp] = position
        return result

    def committed(self, offsets: dict[Partition, int]) -> None:
        self._committed.update(offsets)

    def forget(self, partitions: Collection[Partition]) -> None:
        for tp in partitions:
            self._open.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
