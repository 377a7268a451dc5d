"""SSRF guard: refuse outbound connections to addresses users must not reach through us.

Blocked unless inside an allowlisted network: loopback, private (RFC 1918, ULA), link-local,
CGNAT 100.64/10, multicast, reserved, unspecified, and IPv4-mapped forms of those. The check
runs on every request the transport sends (so on every redirect hop) against every address
the host resolves to. Residual risk, stated: a DNS answer may change between this check and
the connection (rebinding); a pinned-address transport would close that and is future work.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence

import httpx

from shared.errors import BlockedAddress, FetchError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def is_public(address: IPAddress) -> bool:
    """True when ``address`` is a globally routable unicast address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public(address.ipv4_mapped)
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return False
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


class AddressPolicy:
    """Decides whether an address may be contacted; ``allow`` lists CIDRs exempt from the block."""

    def __init__(self, allow: Sequence[str] = ()) -> None:
        self._allow: list[IPNetwork] = [ipaddress.ip_network(c, strict=False) for c in allow]

    def permits(self, address: IPAddress) -> bool:
        return is_public(address) or any(address in net for net in self._allow)

    async def check_host(self, host: str, port: int) -> None:
        """Resolve ``host`` and raise :class:`BlockedAddress` if any of its addresses is refused."""
        try:
            literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise FetchError("dns", f"cannot resolve {host}: {exc.strerror}") from exc
            addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        for address in addresses:
            if not self.permits(address):
                raise BlockedAddress(host, str(address))


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that checks every request's destination with an :class:`AddressPolicy`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, policy: AddressPolicy) -> None:
        self._inner = inner
        self._policy = policy

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        await self._policy.check_host(url.host, port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
