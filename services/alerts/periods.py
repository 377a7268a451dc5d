"""Digest periods: which period an alert belongs to, and when that period closes.

Hourly digests cover one local clock hour; daily digests cover the 24 hours before the
subscriber's local ``digest_time``. Keys are local (``2026-11-26T14`` / ``2026-11-26``) so they
read naturally in the email; ends are UTC instants.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shared.models import Subscription


def period_of(subscription: Subscription, at: datetime) -> tuple[str, datetime]:
    """(period key, period end in UTC) of a digest subscription for an alert matched at ``at``."""
    zone = ZoneInfo(subscription.timezone)
    local = at.astimezone(zone)
    if subscription.cadence == "hourly":
        start = local.replace(minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%dT%H"), (start + timedelta(hours=1)).astimezone(UTC)
    hour, minute = (int(p) for p in subscription.digest_time.split(":"))
    send_today = datetime.combine(local.date(), time(hour, minute), tzinfo=zone)
    end = (
        send_today
        if local < send_today
        else datetime.combine(local.date() + timedelta(days=1), time(hour, minute), tzinfo=zone)
    )
    return end.strftime("%Y-%m-%d"), end.astimezone(UTC)
