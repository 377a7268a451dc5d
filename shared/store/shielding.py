"""Keeping callers' cancellations away from the MongoDB driver.

PyMongo's async client must never be cancelled from outside while it waits inside its own
locks. On Python 3.11 it waits for a server (and for a pooled connection) with
``asyncio.wait_for(condition.wait(), heartbeat)`` inside ``async with lock``. When that
``wait_for`` times out and a caller's cancellation lands while it is still cancelling its
inner wait, ``wait_for`` returns before the inner wait has taken the lock back: the ``async
with`` then releases a lock it does not hold (``RuntimeError: Lock is not acquired``), and the
inner wait takes the lock a moment later and ends holding it. From then on every operation of
that client waits for the lock forever. A fault test saw exactly this: an alerts process whose
``/readyz`` probe timed out while the store was down answered "store not ready (RuntimeError:
Lock is not acquired)" and never reached the store again, though the store came back.

So each public coroutine method of the adapter runs as a task of its own, awaited through
:func:`asyncio.shield`. A cancelled caller is cancelled at once, as before; the driver call
runs on to its own end, which the client's timeouts bound (server selection, socket, and
``pymongo.timeout`` where a method needs a shorter one), and its outcome is collected so that
nothing is logged as never retrieved. :meth:`ShieldedCalls.drain` waits for the calls still
running, within a bound, before the client is closed. The price: a write or a claim whose
caller left still happens. Writes here are keyed by their record's id, so a late one writes what
the caller meant, and a claimed source or delivery waits for its lease to run out, as after a
crash.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from shared.store.base import wrap_public_coroutines

R = TypeVar("R")
C = TypeVar("C", bound=type)


class ShieldedCalls:
    """The driver calls of one adapter instance still running (a caller may have left)."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    async def run(self, work: Awaitable[R]) -> R:
        task: asyncio.Task[R] = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the caller that would have seen it may be gone

    @property
    def running(self) -> int:
        return len(self._running)

    async def drain(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for the running calls; return how many were still running."""
        if not self._running:
            return 0
        _, pending = await asyncio.wait(set(self._running), timeout=timeout_s)
        return len(pending)


def shield_calls(calls_of: Callable[[Any], ShieldedCalls]) -> Callable[[C], C]:
    """Class decorator: every public coroutine method (except ``close``, which must be able to
    stop the client) runs through ``calls_of(self)``; see the module docstring."""

    def guard(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        @functools.wraps(method)
        async def shielded(self: Any, *args: Any, **kwargs: Any) -> R:
            return await calls_of(self).run(method(self, *args, **kwargs))

        return shielded

    return lambda cls: wrap_public_coroutines(cls, guard, skip=frozenset({"close"}))


__all__ = ["ShieldedCalls", "shield_calls"]
