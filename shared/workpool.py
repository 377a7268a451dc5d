"""Claim, run in flight, drain: the loop shared by the poller (due sources) and the deliverer's
sweep (due deliveries).

:class:`WorkPool` holds the tasks in flight: at most ``limit`` at once and at most
``per_key_limit`` for one key (a subscription), so one slow key never takes every slot.
:func:`claim_loop` fills it: it claims work while there is room, then waits for a slot to free,
a wake-up, ``stop`` or the next tick.

Failure policy (the same as the consume loop's, shared.bus.loop):
- a claim that fails with :class:`~shared.errors.Unavailable` backs off (capped, interruptible
  by ``stop``) and tries again; the outage is logged once per state change;
- a task that fails with :class:`~shared.errors.Unavailable` is logged the same way; its lease
  runs out and the work is claimed again;
- any other exception from a task is a bug: the loop stops claiming, lets the other tasks
  finish (bounded) and raises it — the process crashes loudly and its supervisor restarts it.

Stop: once a drain begins the pool takes no new work (``has_room`` is False) until
:func:`claim_loop` runs again. Work that other paths start (the deliverer's alert consumer, still
draining its own records after the sweep returned) is refused rather than started unwatched
while the process closes the clients and the store it uses; it stays in the store for the next
sweep.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from shared.errors import Unavailable
from shared.outage import Backoff, OutageLog, sleep_or_stop

log = logging.getLogger(__name__)

T = TypeVar("T")

DRAIN_DEADLINE_S = 10.0


class WorkPool:
    """Tasks in flight, bounded overall and per key. ``failure`` holds the first bug."""

    def __init__(self, name: str, *, limit: int, per_key_limit: int | None = None) -> None:
        self.name = name
        self.limit = limit
        self.per_key_limit = per_key_limit or limit
        self._tasks: set[asyncio.Task[None]] = set()
        self._keys: Counter[str] = Counter()
        self._changed = asyncio.Event()
        self.outage = OutageLog(name)
        self.failure: BaseException | None = None
        self.draining = False  # set by drain(): no new work until reopen()

    def __len__(self) -> int:
        return len(self._tasks)

    def has_room(self, key: str | None = None) -> bool:
        """Whether a task (of ``key``) may start now: never after a bug or once draining."""
        if self.draining or self.failure is not None or len(self._tasks) >= self.limit:
            return False
        return key is None or self._keys[key] < self.per_key_limit

    def full_keys(self) -> set[str]:
        """Keys that may not take another task now."""
        return {key for key, n in self._keys.items() if n >= self.per_key_limit}

    def spawn(self, work: Coroutine[Any, Any, None], *, key: str | None = None, name: str | None = None) -> None:
        """Run ``work`` in the pool (callers check :meth:`has_room` first)."""
        if key is not None:
            self._keys[key] += 1
        task = asyncio.create_task(self._guard(work, key), name=name)
        self._tasks.add(task)

    async def _guard(self, work: Coroutine[Any, Any, None], key: str | None) -> None:
        try:
            await work
            self.outage.up()
        except Unavailable as exc:
            self.outage.down(str(exc))
        except Exception as exc:
            log.exception("%s: unexpected error; stopping", self.name)
            if self.failure is None:
                self.failure = exc
        finally:
            if key is not None:
                self._keys[key] -= 1
                if self._keys[key] <= 0:
                    del self._keys[key]
            current = asyncio.current_task()
            if current is not None:
                self._tasks.discard(current)
            self._changed.set()

    async def wait(self, timeout_s: float, *events: asyncio.Event) -> None:
        """Until a task finishes, one of ``events`` is set, or ``timeout_s``."""
        self._changed.clear()
        waiters = [asyncio.create_task(e.wait()) for e in (self._changed, *events)]
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def reopen(self) -> None:
        """Take work again after a drain."""
        self.draining = False

    async def drain(self, deadline_s: float = DRAIN_DEADLINE_S) -> None:
        """Refuse new work from now on (until :meth:`reopen`), let the tasks in flight finish and
        cancel those still running after ``deadline_s``."""
        self.draining = True
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=deadline_s)
        for task in pending:
            log.warning("%s: %s still running after %.0f s; cancelled", self.name, task.get_name(), deadline_s)
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def claim_loop(
    pool: WorkPool,
    *,
    claim: Callable[[], Awaitable[T | None]],
    start: Callable[[T], None],
    stop: asyncio.Event,
    tick_s: float,
    wake: asyncio.Event | None = None,
    on_tick: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Until ``stop``: run ``on_tick``, then ``claim`` and ``start`` (which spawns into ``pool``)
    while the pool has room; wait for a free slot, ``wake``, ``stop`` or ``tick_s``. Drains the
    pool before returning; raises the first bug (see the module doc)."""
    backoff = Backoff()
    outage = OutageLog(f"{pool.name} claims")
    events = [stop] if wake is None else [stop, wake]
    pool.reopen()
    try:
        while not stop.is_set() and pool.failure is None:
            if wake is not None:
                wake.clear()
            try:
                if on_tick is not None:
                    await on_tick()
                while pool.has_room():
                    job = await claim()
                    if job is None:
                        break
                    start(job)
            except Unavailable as exc:
                outage.down(str(exc))
                await sleep_or_stop(backoff.next_s(), stop)
                continue
            outage.up()
            backoff.reset()
            await pool.wait(tick_s, *events)
    finally:
        await pool.drain()
    if pool.failure is not None:
        raise pool.failure
