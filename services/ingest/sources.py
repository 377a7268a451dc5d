"""Adding and listing sources: the operations behind /api/v1/sources and `corridor sources`."""

from __future__ import annotations

from urllib.parse import urlsplit

from shared.errors import BlockedAddress, FetchError
from shared.models import Source, stable_id
from shared.netguard import AddressPolicy
from shared.store import Store
from shared.timeutil import utcnow

MAX_URL_CHARS = 2048


class InvalidSource(ValueError):
    """The source cannot be added; the message says why (shown to the caller as 422)."""


async def add_source(store: Store, policy: AddressPolicy, *, url: str, name: str | None, interval_s: float) -> Source:
    """Validate and store a new source, due for polling at once.

    Raises :class:`InvalidSource` for a non-http(s) URL or one whose host resolves to a refused
    address, and :class:`~shared.errors.Conflict` when the URL is already a source.
    """
    url = url.strip()
    parts = urlsplit(url)
    if len(url) > MAX_URL_CHARS or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidSource("url must be an absolute http or https URL of at most 2048 characters")
    try:
        await policy.check_host(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except BlockedAddress as exc:
        raise InvalidSource(str(exc)) from exc
    except FetchError:
        pass  # unresolvable now may resolve later; the poller records the DNS error on the source
    source = Source(id=stable_id("src", url), url=url, name=name, interval_s=interval_s, next_check_at=utcnow())
    await store.insert_source(source)
    return source
