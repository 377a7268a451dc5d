"""When to poll a source next: a pure function of its interval, its errors and the server's hints.

next check = max(interval, feed TTL, Cache-Control max-age, Expires, Retry-After), with ±10 %
jitter, clamped to the maximum interval. After errors: interval × 2^(errors-1), clamped — never
dropped, so a source that comes back is noticed.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime

JITTER = 0.1


def _http_date(value: str, now: datetime) -> float | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return (when - now).total_seconds()


def retry_after_s(headers: Mapping[str, str], now: datetime) -> float | None:
    """Retry-After as seconds (delta or HTTP date); None if absent or unreadable."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    return _http_date(value, now)


def cache_hint_s(headers: Mapping[str, str], now: datetime) -> float | None:
    """How long the server says the response stays fresh: max-age, else Expires, else None."""
    for directive in (headers.get("cache-control") or "").split(","):
        name, _, value = directive.strip().partition("=")
        if name.lower() in ("max-age", "s-maxage") and value.strip().isdigit():
            return float(value.strip())
    expires = headers.get("expires")
    return _http_date(expires, now) if expires else None


def next_delay_s(
    *,
    interval_s: float,
    max_interval_s: float,
    errors: int = 0,
    hints: tuple[float | None, ...] = (),
    jitter: bool = True,
) -> float:
    """Seconds until the next poll."""
    delay = interval_s * 2 ** min(errors - 1, 20) if errors else interval_s
    for hint in hints:
        if hint is not None and hint > delay:
            delay = hint
    delay = min(delay, max_interval_s)
    return delay * random.uniform(1 - JITTER, 1 + JITTER) if jitter else delay
