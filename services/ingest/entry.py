"""The entry: one item as a source format gives it, before normalisation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Entry:
    """One entry as a source format gives it, before normalisation."""

    guid: str | None
    link: str | None
    title: str
    summary: str  # HTML or text
    author: str | None = None
    published_at: datetime | None = None
