"""The entry: one item as a source format gives it, before normalisation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

MAX_ENTRIES = 500  # entries kept from one document, whatever its kind (the newest, see newest_entries)
_UNDATED = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Entry:
    """One entry as a source format gives it, before normalisation."""

    guid: str | None
    link: str | None
    title: str
    summary: str  # HTML or text
    author: str | None = None
    published_at: datetime | None = None
    publisher: str | None = None  # a URL of the publisher the format names for it (an aggregator's entry)


def newest_entries(entries: list[Entry], limit: int = MAX_ENTRIES) -> list[Entry]:
    """At most ``limit`` entries, in document order: the newest by date, then undated ones in
    document order (so a document without dates keeps its first ``limit``, as a list page does).

    Bounds what one poll normalises, dedupes and publishes: a 10 MB feed of 45,000 entries would
    otherwise hold the poller for longer than the source's lease. By date rather than position
    because some feeds append (oldest first), and cutting those at the start would keep only
    stories already seen.
    """
    if len(entries) <= limit:
        return entries
    ranked = sorted(
        range(len(entries)),
        key=lambda i: (entries[i].published_at is not None, entries[i].published_at or _UNDATED, -i),
        reverse=True,
    )
    return [entries[i] for i in sorted(ranked[:limit])]
