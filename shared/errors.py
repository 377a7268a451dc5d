"""Exceptions shared by every Corridor service.

Hierarchy::

    CorridorError
    ├── ConfigError            impossible configuration, raised at start-up
    ├── PoisonMessage          a bus message that can never be processed → dead-letter topic
    ├── Unavailable            a dependency is down: transient, back off and retry (never crash)
    │   ├── StoreUnavailable   the store cannot be reached or timed out (also a StoreError)
    │   └── BusUnavailable     the broker cannot be reached or timed out
    ├── StoreError
    │   └── Conflict           a unique key already exists (e.g. a source URL)
    └── FetchError             an outbound HTTP request failed; ``kind`` classifies why
        ├── BlockedAddress     SSRF guard refused the destination
        └── TooLarge           the response body exceeded the cap

Retry decisions match on these types (and ``FetchError.kind``), never on message text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class CorridorError(Exception):
    """Base class of all Corridor errors."""


class ConfigError(CorridorError):
    """The configuration cannot work; raised once at start-up."""


class PoisonMessage(CorridorError):
    """A message that will never be processable; the consumer dead-letters it with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StoreError(CorridorError):
    """A store operation failed."""


class Conflict(StoreError):
    """A record with the same unique key already exists."""

    def __init__(self, what: str, key: str) -> None:
        super().__init__(f"{what} already exists: {key}")
        self.what = what
        self.key = key


class Unavailable(CorridorError):
    """A dependency (store, broker) did not answer. Transient: a consumer retries the message
    without committing, a loop backs off, the API answers 503 with Retry-After; the process stays
    up and recovers by itself when the dependency returns (shared.bus.base.consume_policy)."""


class StoreUnavailable(StoreError, Unavailable):
    """The store did not answer (connection refused or lost, server selection or operation timed
    out, database locked). Raised only by the store adapters, which translate their drivers'
    errors into it."""


class BusUnavailable(Unavailable):
    """The broker did not answer (connection refused or lost, request timed out). Raised only by
    the bus adapters, which translate their client's errors into it."""


class FetchError(CorridorError):
    """An outbound HTTP request failed.

    ``kind`` is one of: ``blocked``, ``dns``, ``connect``, ``tls``, ``timeout``, ``http_status``,
    ``too_large``, ``protocol``, ``invalid_url``, ``not_a_feed``, ``parse_error``, ``internal``
    (an unexpected failure, shown on the source). ``retry_after_s`` carries the server's
    Retry-After when it sent one.
    """

    def __init__(
        self, kind: str, message: str, *, status_code: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status_code = status_code
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, message={str(self)!r}, status={self.status_code})"


class BlockedAddress(FetchError):
    """The SSRF guard refused the destination address.

    The message names the host, never the address it resolved to: it becomes a source's
    ``last_error``, which read keys see, and a feed that redirects the poller to internal names
    would otherwise learn their private addresses one poll at a time. ``address`` is kept for logs.
    """

    def __init__(self, host: str, address: str) -> None:
        super().__init__(
            "blocked",
            f"destination {host} is not a public address; to allow a private network on purpose, list it "
            "in CORRIDOR_ALLOW_PRIVATE_NETWORKS (e.g. 127.0.0.0/8)",
        )
        self.host = host
        self.address = address


class TooLarge(FetchError):
    """The response body exceeded ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__("too_large", f"response body exceeds {limit} bytes")
        self.limit = limit


def problems(exc: ValidationError, whole: str) -> str:
    """A pydantic validation error in one line: each problem as ``field: message`` (``whole``
    names the input itself when the problem has no field), joined by "; "."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or whole}: {e['msg']}" for e in exc.errors())
