"""Per-host politeness: at most N fetches at once to one host, and a minimum gap between them."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

MAX_HOSTS = 10_000  # bound the table; an evicted idle host simply gets a fresh entry


class _Host:
    def __init__(self, slots: int) -> None:
        self.slots = asyncio.Semaphore(slots)
        self.gap_lock = asyncio.Lock()
        self.next_start = 0.0
        self.users = 0
        self.reserved = 0


class HostLimiter:
    """``async with limiter.slot(host, gap_s):`` waits for a free slot and for the host's gap."""

    def __init__(self, per_host: int) -> None:
        self._per_host = per_host
        self._hosts: OrderedDict[str, _Host] = OrderedDict()
        self.waiting = 0

    def _get(self, host: str) -> _Host:
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = _Host(self._per_host)
            while len(self._hosts) > MAX_HOSTS:
                oldest, idle = next(iter(self._hosts.items()))
                if idle.users or idle.reserved:
                    break
                del self._hosts[oldest]
        self._hosts.move_to_end(host)
        return entry

    def reserve(self, host: str) -> bool:
        """Reserve a place in ``host``'s next :meth:`slot` if one is free now (True), so a poll
        starts only when it will not wait: a slow host's polls never sit in the poller's slots
        waiting for their turn while other hosts' sources are due."""
        entry = self._get(host)
        if entry.users + entry.reserved >= self._per_host:
            return False
        entry.reserved += 1
        return True

    @asynccontextmanager
    async def slot(self, host: str, gap_s: float = 0.0) -> AsyncIterator[None]:
        entry = self._get(host)
        entry.reserved = max(0, entry.reserved - 1)  # a reservation, if any, turns into this slot
        entry.users += 1
        self.waiting += 1
        acquired = False
        try:
            await entry.slots.acquire()
            acquired = True
            self.waiting -= 1
            try:
                if gap_s:
                    async with entry.gap_lock:
                        delay = entry.next_start - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        entry.next_start = time.monotonic() + gap_s
                yield
            finally:
                entry.slots.release()
        finally:
            if not acquired:
                self.waiting -= 1
            entry.users -= 1
