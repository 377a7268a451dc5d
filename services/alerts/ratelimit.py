"""Per-recipient email rate limit: at most N messages per rolling hour to one address.

In-process and bounded (least recently used addresses are forgotten first); with several alerts
replicas each enforces its own share, which is an approximation we accept for email pacing.
"""

from __future__ import annotations

from collections import OrderedDict, deque

WINDOW_S = 3600.0
MAX_RECIPIENTS = 100_000


class RecipientLimiter:
    """``wait_s(address, now)`` is 0 when a message may go now, else the seconds to wait."""

    def __init__(self, per_hour: int) -> None:
        self._per_hour = per_hour
        self._sent: OrderedDict[str, deque[float]] = OrderedDict()

    def wait_s(self, address: str, now: float) -> float:
        times = self._sent.get(address.casefold())
        if times is None:
            return 0.0
        while times and times[0] <= now - WINDOW_S:
            times.popleft()
        return 0.0 if len(times) < self._per_hour else times[0] + WINDOW_S - now

    def record(self, address: str, now: float) -> None:
        key = address.casefold()
        times = self._sent.setdefault(key, deque())
        self._sent.move_to_end(key)
        times.append(now)
        while len(self._sent) > MAX_RECIPIENTS:
            self._sent.popitem(last=False)
