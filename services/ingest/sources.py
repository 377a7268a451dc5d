"""Managing sources: the operations behind /api/v1/sources and `corridor sources`."""

from __future__ import annotations

from typing import Any

from services.ingest.gdelt import gdelt_url
from shared.errors import BlockedAddress
from shared.models import Country, HtmlSelectors, Source, SourceKind, stable_id
from shared.netguard import AddressPolicy, InvalidURL, checked_url
from shared.store import Store
from shared.timeutil import utcnow


class InvalidSource(ValueError):
    """The source cannot be added; the message says why (shown to the caller as 422)."""


async def check_url(policy: AddressPolicy, url: str) -> str:
    """Validate an operator-supplied URL (:func:`shared.netguard.checked_url`); the URL to store."""
    try:
        return await checked_url(policy, url)
    except (InvalidURL, BlockedAddress) as exc:
        raise InvalidSource(f"url {exc}" if isinstance(exc, InvalidURL) else str(exc)) from exc


async def add_source(
    store: Store,
    policy: AddressPolicy,
    *,
    url: str,
    name: str | None,
    interval_s: float,
    kind: SourceKind = "feed",
    language: str | None = None,
    selectors: HtmlSelectors | None = None,
    country: Country | None = None,
    official: bool = False,
    aggregator: bool = False,
) -> Source:
    """Validate and store a new source, due for polling at once.

    Raises :class:`InvalidSource` for a bad URL, a refused address or an HTML source without
    selectors, and :class:`~shared.errors.Conflict` when the URL is already a source.
    """
    url = await check_url(policy, url)
    if kind == "html" and selectors is None:
        raise InvalidSource("an html source needs selectors (at least {'item': CSS selector})")
    if kind == "gdelt":
        url = gdelt_url(url)
    source = Source(
        id=stable_id("src", url),
        url=url,
        name=name,
        kind=kind,
        language=language,
        selectors=selectors,
        country=country,
        official=official,
        aggregator=aggregator,
        interval_s=interval_s,
        next_check_at=utcnow(),
    )
    await store.insert_source(source)
    return source


def _selectors(value: object) -> HtmlSelectors | None:
    return value if value is None or isinstance(value, HtmlSelectors) else HtmlSelectors.model_validate(value)


async def update_source(store: Store, source_id: str, changes: dict[str, Any]) -> Source | None:
    """Apply operator changes (name, interval, active, language, selectors); None if no such source.

    Resuming a source makes it due at once, so a paused source does not wait a full interval.
    Changing what is fetched or how it is read (``url``, ``selectors``) forgets the stored ETag
    and Last-Modified: otherwise the server answers 304 to the unchanged page and the new
    selectors are not applied until the page itself changes.
    """
    source = await store.get_source(source_id)
    if source is None:
        return None
    fields = dict(changes)
    if fields.get("active") and not source.active:
        fields["next_check_at"] = utcnow()
    if ("url" in fields and fields["url"] != source.url) or (
        "selectors" in fields and _selectors(fields["selectors"]) != source.selectors
    ):
        fields["etag"] = fields["last_modified"] = None
    if fields:
        await store.update_source(source_id, fields)
    return await store.get_source(source_id)


async def poll_now(store: Store, source_id: str) -> Source | None:
    """Make the source due now (the poller is woken by the caller); None if no such source."""
    return await update_source(store, source_id, {"next_check_at": utcnow()})
