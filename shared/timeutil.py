"""Time helpers: every timestamp in Corridor is timezone-aware UTC with millisecond precision.

Millisecond precision because BSON dates carry milliseconds: a value that round-trips through
MongoDB must compare equal to the one we wrote (cursor pagination depends on it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def to_utc_ms(value: datetime) -> datetime:
    """Return ``value`` as aware UTC truncated to milliseconds (naive values are taken as UTC).

    Raises :class:`ValueError` for a time UTC cannot hold (year 1 with a positive offset, year
    9999 with a negative one). It is the validator of every stored or published moment
    (shared.models.Moment): pydantic turns a ValueError into a ValidationError of the field, but
    lets the OverflowError of ``astimezone`` through as it is, and a consumer takes that for a bug
    and exits, then reads the same message again on restart.
    """
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        value = value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"{value.isoformat()} is out of range once converted to UTC") from exc
    return value.replace(microsecond=(value.microsecond // 1000) * 1000)


def utcnow() -> datetime:
    """The current time as aware UTC with millisecond precision."""
    return to_utc_ms(datetime.now(UTC))
