"""Feed dates written with the region's time-zone abbreviations ("10:00:00 PKT", "ALMT").

feedparser knows the RFC 822 zones (UT, GMT, EST, …, military letters) and reads any other name
as UTC: "Mon, 02 Nov 2026 10:00:00 PKT" became 10:00 UTC, five hours late. Pakistani and Kazakh
sites write their local abbreviations, so these are read as the offsets they name.

Kazakhstan moved its whole territory to UTC+5 on 1 March 2024 (Almaty had been UTC+6); ALMT
dates before that keep the old offset. Qyzylorda (QYZT) had moved from UTC+6 to UTC+5 on
21 December 2018.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import feedparser

# The moments clocks went back an hour (00:00 local at +06:00): Almaty 1 March 2024, Qyzylorda
# 21 December 2018.
ALMATY_CHANGE = datetime(2024, 2, 29, 18, tzinfo=UTC)
QYZYLORDA_CHANGE = datetime(2018, 12, 20, 18, tzinfo=UTC)
# Abbreviation → (offset in minutes now, (offset before, until when) or None when it never changed).
OFFSETS: dict[str, tuple[int, tuple[int, datetime] | None]] = {
    "PKT": (5 * 60, None),  # Pakistan Standard Time
    "PKST": (6 * 60, None),  # Pakistan's summer time (2008, 2009)
    "ALMT": (5 * 60, (6 * 60, ALMATY_CHANGE)),  # Almaty
    "QYZT": (5 * 60, (6 * 60, QYZYLORDA_CHANGE)),  # Qyzylorda
    "AQTT": (5 * 60, None),  # Aqtobe
    "ORAT": (5 * 60, None),  # Oral
}
_ZONED = re.compile(r"^(?P<stamp>.*\d{1,2}:\d{2}(?::\d{2})?)\s+(?P<zone>[A-Z]{3,4})$")


def parse_regional_date(value: str) -> time.struct_time | None:
    """A feedparser date handler: the UTC time of an RFC 822 date ending in one of
    :data:`OFFSETS`' abbreviations, or None (the next handler tries) for anything else."""
    match = _ZONED.match(value.strip())
    if match is None or match["zone"] not in OFFSETS:
        return None
    now, earlier = OFFSETS[match["zone"]]
    try:
        naive = parsedate_to_datetime(match["stamp"] + " +0000")
    except (TypeError, ValueError, IndexError):
        return None
    utc = naive - timedelta(minutes=now)
    if earlier is not None and naive - timedelta(minutes=earlier[0]) < earlier[1]:
        utc = naive - timedelta(minutes=earlier[0])
    return utc.timetuple()


_registered = False


def register() -> None:
    """Add the handler to feedparser (tried before its own), once per process."""
    global _registered
    if not _registered:
        feedparser.registerDateHandler(parse_regional_date)
        _registered = True
