"""Time helpers: every timestamp in Corridor is timezone-aware UTC with millisecond precision.

Millisecond precision because BSON dates carry milliseconds: a value that round-trips through
MongoDB must compare equal to the one we wrote (cursor pagination depends on it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def to_utc_ms(value: datetime) -> datetime:
    """Return ``value`` as aware UTC truncated to milliseconds (naive values are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.replace(microsecond=(value.microsecond // 1000) * 1000)


def utcnow() -> datetime:
    """The current time as aware UTC with millisecond precision."""
    return to_utc_ms(datetime.now(UTC))
