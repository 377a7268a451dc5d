"""Riding out a dependency outage: capped exponential back-off and a quiet outage log.

Every loop that talks to the store or the broker follows one rule (shared.errors.Unavailable):
on a transient failure it backs off — 0.5 s doubling to at most 30 s, with jitter so replicas do
not retry in step — and tries again, for as long as the outage lasts; the process stays up.

The log during an outage stays readable: :class:`OutageLog` writes one line when a dependency
goes down, one when it is back (with how long it was down), and in between at most one reminder
per ``remind_s`` — not a line per attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

log = logging.getLogger("corridor.outage")

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
REMIND_S = 60.0


@dataclass
class Backoff:
    """Delays for consecutive failures: ``first_s`` doubling up to ``max_s``, ±20 % jitter."""

    first_s: float = BACKOFF_FIRST_S
    max_s: float = BACKOFF_MAX_S
    failures: int = 0

    def next_s(self) -> float:
        """The delay before the next try (counts one more failure)."""
        delay: float = min(self.max_s, self.first_s * 2.0**self.failures)
        self.failures = min(self.failures + 1, 32)
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.failures = 0


async def sleep_or_stop(delay_s: float, stop: asyncio.Event) -> bool:
    """Sleep ``delay_s`` unless ``stop`` is set first; True when stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay_s)
    return stop.is_set()


@dataclass
class OutageLog:
    """State-change logging for one loop's view of its dependencies (not thread-safe; one per loop).

    ``down(reason)`` on each failed attempt, ``up()`` on each success: the first failure logs a
    warning, later ones only a reminder every ``remind_s``, and the first success after failures
    logs the recovery."""

    name: str
    remind_s: float = REMIND_S
    _since: float | None = None
    _last_line: float = 0.0
    _failures: int = 0

    @property
    def is_down(self) -> bool:
        return self._since is not None

    def down(self, reason: str) -> None:
        now = time.monotonic()
        self._failures += 1
        if self._since is None:
            self._since = self._last_line = now
            log.warning("%s: dependency unavailable, backing off and retrying: %s", self.name, reason[:300])
        elif now - self._last_line >= self.remind_s:
            self._last_line = now
            log.warning(
                "%s: still unavailable after %.0f s (%d failed attempts): %s",
                self.name,
                now - self._since,
                self._failures,
                reason[:300],
            )

    def up(self) -> None:
        if self._since is None:
            return
        log.warning(
            "%s: dependency back after %.1f s (%d failed attempts)",
            self.name,
            time.monotonic() - self._since,
            self._failures,
        )
        self._since = None
        self._failures = 0
