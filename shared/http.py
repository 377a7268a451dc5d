"""The one factory for outbound HTTP clients, and a body reader with a size cap.

Every client Corridor uses to reach feeds or webhooks comes from :func:`build_client`: per-phase
timeouts, bounded connection pools, redirects followed only up to a limit and each hop re-checked
by the SSRF guard, connections only to addresses the guard checked, only http and https.
"""

from __future__ import annotations

import ssl
import zlib
from collections.abc import Iterator

import httpx

from shared.errors import FetchError, TooLarge
from shared.netguard import AddressPolicy, GuardedTransport, PinnedTransport


def build_client(
    *,
    policy: AddressPolicy,
    timeout_s: float,
    max_redirects: int,
    user_agent: str,
    max_connections: int = 50,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An AsyncClient whose every request (and redirect hop) passes ``policy``.

    ``transport`` replaces the network transport (tests pass httpx.MockTransport); the guard
    still wraps it.
    """
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections // 2)
    guarded = (
        GuardedTransport(transport, policy)
        if transport is not None
        else GuardedTransport(PinnedTransport(policy, limits=limits), policy, names_checked_at_connect=True)
    )
    return httpx.AsyncClient(
        transport=guarded,
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0), pool=timeout_s),
        follow_redirects=max_redirects > 0,
        max_redirects=max_redirects,
        # Only what read_capped decodes in bounded steps (httpx would add br/zstd if installed).
        headers={"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"},
        trust_env=False,
    )


class _Decoder:
    """Incremental Content-Encoding decoder whose every step yields at most ``room`` bytes, so a
    small compressed body that expands enormously (a gzip bomb) is stopped at the cap without
    ever holding more than the cap in memory."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding.strip().lower()
        if self.encoding not in ("gzip", "x-gzip", "deflate"):
            raise FetchError("protocol", f"unsupported Content-Encoding {encoding!r}")
        gzip = self.encoding != "deflate"
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)
        self._raw_deflate_ok = not gzip  # some servers send deflate without its zlib header

    def decode(self, data: bytes, room: int) -> Iterator[bytes]:
        while data:
            try:
                out = self._zlib.decompress(data, room + 1)
            except zlib.error as exc:
                if not self._raw_deflate_ok:
                    raise FetchError("protocol", f"corrupt {self.encoding} body: {exc}") from exc
                self._raw_deflate_ok = False
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                continue
            self._raw_deflate_ok = False
            room -= len(out)
            yield out
            data = self._zlib.unconsumed_tail


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """Read a streamed response body, decoded, raising :class:`TooLarge` past ``limit`` bytes.

    Never buffers more than ``limit`` plus one chunk, whatever Content-Length claims and however
    much a compressed body expands: gzip and deflate are decoded here, step by bounded step (the
    raw stream is read, so httpx's own decoder, which expands a whole chunk at once, is not used).
    """
    declared = response.headers.get("content-length")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if declared and declared.isdigit() and int(declared) > limit:
        raise TooLarge(limit)
    if response.is_stream_consumed:  # a transport that loaded the body itself (tests' mocks)
        if len(response.content) > limit:
            raise TooLarge(limit)
        return response.content
    decoder = None if encoding in ("", "identity") else _Decoder(encoding)
    chunks: list[bytes] = []
    size = 0
    async for raw in response.aiter_raw():
        for chunk in decoder.decode(raw, limit - size) if decoder else (raw,):
            size += len(chunk)
            if size > limit:
                raise TooLarge(limit)
            chunks.append(chunk)
    return b"".join(chunks)


def classify_http_error(exc: httpx.HTTPError) -> FetchError:
    """Map an httpx exception to a :class:`FetchError` kind (by type, never by message)."""
    if isinstance(exc, httpx.TimeoutException):
        return FetchError("timeout", f"timed out: {type(exc).__name__}")
    if isinstance(exc, httpx.ConnectError):
        cause: BaseException | None = exc
        while cause is not None:  # the TLS failure is in the exception chain, not the type
            if isinstance(cause, ssl.SSLError):
                return FetchError("tls", f"TLS failed: {cause}")
            cause = cause.__cause__ or cause.__context__
        return FetchError("connect", f"cannot connect: {exc}")
    if isinstance(exc, httpx.TooManyRedirects):
        return FetchError("protocol", "too many redirects")
    if isinstance(exc, httpx.UnsupportedProtocol):
        return FetchError("protocol", f"unsupported URL scheme: {exc}")
    return FetchError("protocol", f"{type(exc).__name__}: {exc}")
