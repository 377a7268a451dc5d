"""SSRF guard: refuse outbound connections to addresses users must not reach through us.

Only globally routable unicast addresses pass, unless inside an allowlisted network. Refused:
loopback, private (RFC 1918, ULA), link-local, site-local, CGNAT 100.64/10, multicast, reserved,
unspecified, documentation and benchmarking ranges, 192.0.0.0/24, and IPv4 embedded in IPv6 —
mapped (::ffff:0:0/96), IPv4-compatible (::/96), 6to4 (2002::/16) and NAT64 (64:ff9b::/96) are
judged by the IPv4 address they carry; Teredo and the local-use NAT64 prefix are refused outright.

Where the check runs: every request's host is checked before it is sent (so every redirect hop),
and the connection itself goes to an address that was checked — :class:`GuardedBackend` resolves
the name once, checks every address, and connects to those addresses, so a DNS answer that
changes between check and connect (rebinding) cannot reach a refused address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx

from shared.errors import BlockedAddress, FetchError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

_REFUSED = [
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "192.0.0.0/24",  # IETF protocol assignments
        "192.88.99.0/24",  # 6to4 relay anycast
        "198.18.0.0/15",  # benchmarking
        "64:ff9b:1::/48",  # local-use NAT64
        "2001::/32",  # Teredo
        "fec0::/10",  # site-local (deprecated, still routed inside some networks)
    )
]
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, 6to4, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """True when ``address`` is a globally routable unicast address (see the module docstring)."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            return is_public(inner)
    if any(address in net for net in _REFUSED if net.version == address.version):
        return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
    )


MAX_URL_CHARS = 2048
# A DNS name (letters, digits, hyphens; punycode for international names) or an IP literal.
_HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.?|[0-9a-f:.]+")


class InvalidURL(ValueError):
    """A user-supplied URL Corridor will not fetch or post to; the message says why."""


async def checked_url(policy: AddressPolicy, url: str) -> str:
    """A user-supplied feed or webhook URL in the form Corridor will use, checked now.

    The host is folded to what a resolver sees (NFKC: full-width digits and dots become ASCII,
    then lower case; internationalised names become punycode); the URL must be absolute http(s)
    and parse as httpx will parse it at fetch time. Raises :class:`InvalidURL`, or
    :class:`~shared.errors.BlockedAddress` when the host is or resolves to a refused address;
    a name that does not resolve now passes (it may later; the fetch records the DNS error).
    """
    text = url.strip()
    try:
        # urlsplit refuses an unclosed "[" (IPv6) and .port one outside 0-65535 with a plain
        # ValueError: a user's typo, not a bug.
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"not a valid URL: {exc}") from exc
    if len(text) > MAX_URL_CHARS or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidURL(f"must be an absolute http or https URL of at most {MAX_URL_CHARS} characters")
    if port == 0:
        raise InvalidURL("port 0 cannot be connected to")
    if parts.username is not None or parts.password is not None:
        # Dropped in silence before: the fetch then failed with 401 and nobody knew why. Not
        # stored either: the URL is shown in the API and (query masked) in logs.
        raise InvalidURL("credentials in the URL (user:password@) are not supported")
    host = unicodedata.normalize("NFKC", parts.hostname).lower()
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    try:
        parsed = httpx.URL(urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, parts.fragment)))
    except httpx.InvalidURL as exc:
        raise InvalidURL(f"invalid host {parts.hostname!r}: {exc}") from exc
    if not _HOST.fullmatch(parsed.raw_host.decode("ascii", "replace")):
        raise InvalidURL(f"invalid host {parts.hostname!r}")
    try:
        await policy.check_host(parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80))
    except BlockedAddress:
        raise
    except FetchError:
        pass
    return str(parsed)


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError("dns", f"cannot resolve {host}: {exc.strerror}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class AddressPolicy:
    """Decides whether an address may be contacted; ``allow`` lists CIDRs exempt from the block.
    ``resolver`` turns a name into addresses (tests give their own; nothing else resolves)."""

    def __init__(self, allow: Sequence[str] = (), *, resolver: Resolver | None = None) -> None:
        self.allow: list[IPNetwork] = [ipaddress.ip_network(c, strict=False) for c in allow]
        self._resolver = resolver

    def permits(self, address: IPAddress) -> bool:
        if is_public(address):
            return True
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and (inner := embedded_ipv4(address)) is not None:
            candidates.append(inner)
        return any(a in net for a in candidates for net in self.allow if net.version == a.version)

    async def addresses(self, host: str, port: int) -> list[IPAddress]:
        """The addresses ``host`` stands for, every one permitted; else :class:`BlockedAddress`."""
        try:
            found: Iterable[str] = [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            found = await (self._resolver or system_resolver)(host, port)
        addresses = [ipaddress.ip_address(a.split("%")[0]) for a in found]
        if not addresses:
            raise FetchError("dns", f"cannot resolve {host}: no addresses")
        for address in addresses:
            if not self.permits(address):
                raise BlockedAddress(host, str(address))
        return addresses

    async def check_host(self, host: str, port: int) -> None:
        """Raise :class:`BlockedAddress` if ``host`` is or resolves to a refused address."""
        await self.addresses(host, port)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """The network backend of guarded clients: resolves each host once through the policy and
    connects only to the addresses it checked (first that answers)."""

    def __init__(self, policy: AddressPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._policy = policy
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: Exception | None = None
        for address in await self._policy.addresses(host, port):
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # addresses() never returns an empty list
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool on a :class:`GuardedBackend`. httpx has no
    parameter for the backend, so the pool it built is replaced by the same pool on ours (httpx
    and httpcore are pinned in requirements.lock; tests/unit/test_netguard.py checks the wiring)."""

    def __init__(self, policy: AddressPolicy, *, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, retries=0, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy),
        )


class GuardedTransport(httpx.AsyncBaseTransport):
    """Checks every request's destination (each redirect hop) before ``inner`` sends it. With
    ``names_checked_at_connect`` (``inner`` is a :class:`PinnedTransport`) a host name is left to
    the backend, which resolves it once and connects to what it checked; literal addresses and
    every name for any other ``inner`` (tests' mock transports) are checked here."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, policy: AddressPolicy, *, names_checked_at_connect: bool = False
    ) -> None:
        self._inner = inner
        self._policy = policy
        self._names_at_connect = names_checked_at_connect

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise FetchError("protocol", f"unsupported URL scheme: {url.scheme}")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            ipaddress.ip_address(url.host)
            literal = True
        except ValueError:
            literal = False
        if literal or not self._names_at_connect:
            await self._policy.check_host(url.host, port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
