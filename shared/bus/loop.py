"""The one consume loop, shared by every bus adapter (shared.bus.kafka, shared.bus.memory).

An adapter supplies a thin :class:`ConsumerBackend` — poll, commit, pause, resume, and a call
back when partitions are taken away — and the loop does the rest with the steps of
shared.bus.steps:

    poll ─► OffsetTracker.received ─► KeyedRunner (per-key order, bounded) ─► RunTask(handler)
                                            │ done
                                            ▼
                              OffsetTracker.finished ─► commit (contiguous prefix, every second)

Backpressure: when the runner holds ``max_buffered`` records every partition is paused and the
loop keeps polling (which keeps the consumer in its group, well inside max.poll.interval), and
resumes once the backlog halves. Nothing in the loop waits on one slow record.

Failure policy (shared.errors): poison → dead-letter and commit; an outage → that record is
retried with back-off while the others go on, and nothing past it is committed; a bug → the
loop halts, lets the records in work finish (bounded), commits the finished prefix and raises.

Stop: set ``stop``; the loop stops fetching, lets the records in work finish within
``drain_deadline_s``, commits, closes the backend and returns. A periodic commit still waiting
when ``stop`` is set is given up (the final commit carries its offsets), and every commit is
bounded by the backend, so a stop during a broker outage takes at most the drain deadline plus
one commit bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Protocol

from shared.bus.base import Handler, LoopLimits
from shared.bus.steps import DeadLetterSink, KeyedRunner, OffsetTracker, Partition, Record, RunTask
from shared.errors import Unavailable
from shared.outage import Backoff, OutageLog, sleep_or_stop

log = logging.getLogger(__name__)

OnRevoked = Callable[[Collection[Partition]], Awaitable[None]]


class ConsumerBackend(Protocol):
    """What the loop needs from a client of one consumer group."""

    async def start(self, on_revoked: OnRevoked) -> None:
        """Join the group; ``on_revoked`` is awaited before partitions move to another member."""

    async def poll(self, timeout_s: float, max_records: int) -> list[Record]:
        """Up to ``max_records`` records of unpaused partitions, waiting at most ``timeout_s``."""

    async def commit(self, offsets: dict[Partition, int]) -> None:
        """Commit: for each partition, the offset of the next record to read. Returns or raises
        within a bound, whatever the broker does: :class:`~shared.errors.Unavailable` when the
        broker cannot take it now or did not answer in time. The loop waits on it while polling,
        on a revoke and at stop, so an unbounded commit stops the loop."""

    def pause(self) -> None:
        """Stop returning records of the assigned partitions (positions are kept)."""

    def resume(self) -> None:
        """Return records again."""

    async def close(self) -> None:
        """Leave the group and close the client."""


class ConsumeLoop:
    """Runs ``handler`` on every record ``backend`` returns, until ``stop`` (see the module doc)."""

    def __init__(
        self,
        backend: ConsumerBackend,
        handler: Handler,
        *,
        dead_letter: DeadLetterSink,
        stop: asyncio.Event,
        limits: LoopLimits,
        name: str,
    ) -> None:
        self._backend = backend
        self._stop = stop
        self._limits = limits
        self._name = name
        self._halt = asyncio.Event()  # stop, or a bug in a handler
        self._outage = OutageLog(name)
        self._commit_outage = OutageLog(f"{name} commit")
        self._offsets = OffsetTracker()
        task = RunTask(handler, dead_letter, halt=self._halt, outage=self._outage)
        self._runner = KeyedRunner(
            task, concurrency=limits.concurrency, halt=self._halt, on_done=self._offsets.finished
        )
        self._paused = False
        self.paused_count = 0  # how many times backpressure paused the partitions (tests, metrics)

    async def run(self) -> None:
        if not await self._join():
            return
        last_commit = time.monotonic()
        try:
            while not self._stop.is_set() and not self._halt.is_set():
                self._apply_backpressure()
                room = self._limits.max_buffered - self._runner.buffered
                records = await self._backend.poll(self._limits.poll_timeout_s, max(1, min(self._limits.batch, room)))
                for record in records:
                    self._offsets.received(record)
                    self._runner.submit(record)
                if time.monotonic() - last_commit >= self._limits.commit_interval_s:
                    last_commit = time.monotonic()
                    await self._periodic_commit()
        finally:
            self._halt.set()
            await self._runner.drain(self._limits.drain_deadline_s)
            try:
                await self._commit(final=True)
            finally:
                # Also when the final commit is cancelled (the runtime's stop deadline): leave
                # the group rather than leave the member to time out.
                await self._backend.close()
        if self._runner.failure is not None:
            log.error("%s: a handler failed; stopping after committing the finished prefix", self._name)
            raise self._runner.failure

    async def _join(self) -> bool:
        """Start the backend, retrying while the broker is unreachable; False if stopped first."""
        backoff = Backoff()
        while True:
            try:
                await self._backend.start(self._on_revoked)
            except Unavailable as exc:
                self._outage.down(str(exc))
                with contextlib.suppress(Exception):
                    await self._backend.close()
                if await sleep_or_stop(backoff.next_s(), self._stop):
                    return False
                continue
            self._outage.up()
            return True

    def _apply_backpressure(self) -> None:
        buffered, limit = self._runner.buffered, self._limits.max_buffered
        if not self._paused and buffered >= limit:
            self._backend.pause()
            self._paused = True
            self.paused_count += 1
        elif self._paused and buffered <= limit // 2:
            self._backend.resume()
            self._paused = False

    async def _commit(self, partitions: Collection[Partition] | None = None, *, final: bool = False) -> None:
        offsets = self._offsets.committable(partitions)
        if not offsets:
            return
        try:
            await self._backend.commit(offsets)
        except Unavailable as exc:
            # Kept: the next commit carries these offsets too. Losing a commit only redoes work.
            self._commit_outage.down(str(exc))
            if final:
                log.warning("%s: final commit failed (the uncommitted records will be redone): %s", self._name, exc)
            return
        self._commit_outage.up()
        self._offsets.committed(offsets)

    async def _periodic_commit(self) -> None:
        """``_commit``, given up when ``stop`` or ``halt`` is set first: the final commit carries
        the same offsets, and a commit waiting out a broker outage would otherwise spend the time
        a stop has (the runtime cancels a consumer that has not stopped in 30 s) before the drain
        even began."""
        commit = asyncio.ensure_future(self._commit())
        waits = [commit, asyncio.ensure_future(self._stop.wait()), asyncio.ensure_future(self._halt.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        if not commit.cancelled():
            commit.result()  # a bug in a commit stays loud

    async def _on_revoked(self, partitions: Collection[Partition]) -> None:
        """Before partitions move to another member: finish their records in work (bounded),
        commit them, forget the rest (the new owner reads them from the committed offset)."""
        revoked = set(partitions)
        if not revoked:
            return
        await self._runner.drain(self._limits.drain_deadline_s, revoked)
        await self._commit(revoked)
        self._offsets.forget(revoked)
