"""The default catalogue of real sources for this mission (catalogue.json), and importing it.

Every entry says its kind and language; URLs could not be verified offline, which each entry's
note says. HTML list pages come with best-guess selectors and are imported paused.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from shared.datafiles import load_json_model
from shared.errors import Conflict
from shared.models import Country, HtmlSelectors, Source, SourceKind, stable_id
from shared.store import Store
from shared.timeutil import utcnow


class CatalogueEntry(BaseModel):
    """One source of the catalogue."""

    model_config = ConfigDict(extra="forbid")

    name: str
    url: str
    kind: SourceKind = "feed"
    language: str | None = None
    country: Country | None = None
    official: bool = Field(default=False, description="a government or state body's own channel")
    aggregator: bool = Field(default=False, description="lists other publishers' stories (Google News)")
    note: str | None = None
    selectors: HtmlSelectors | None = None
    active: bool = True
    interval_s: float | None = Field(default=None, ge=60)


class Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str
    sources: list[CatalogueEntry]


def load_catalogue(path: Path | None = None) -> Catalogue:
    """The shipped catalogue, or ``path``; :class:`ConfigError` when invalid."""
    return load_json_model(Catalogue, package="services.ingest", filename="catalogue.json", path=path)


async def import_catalogue(store: Store, catalogue: Catalogue, default_interval_s: float) -> int:
    """Add every catalogue source not yet known (by URL); returns how many were added. A known
    one is left as it is: its operator may have changed it since."""
    added = 0
    for entry in catalogue.sources:
        source = Source(
            id=stable_id("src", entry.url),
            url=entry.url,
            name=entry.name,
            kind=entry.kind,
            language=entry.language,
            selectors=entry.selectors,
            note=entry.note,
            country=entry.country,
            official=entry.official,
            aggregator=entry.aggregator,
            active=entry.active,
            interval_s=entry.interval_s or default_interval_s,
            next_check_at=utcnow(),
        )
        try:
            await store.insert_source(source)
            added += 1
        except Conflict:
            continue  # the operator's own since: left as it is (README: upgrading to 2026-12-05)
    return added
