"""The SSRF guard blocks every non-public range unless allowlisted, on every redirect hop."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from shared.errors import BlockedAddress
from shared.http import build_client
from shared.netguard import AddressPolicy, is_public


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ],
)
def test_non_public_addresses_are_blocked(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))
    assert not AddressPolicy().permits(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_allowlist_opens_only_its_networks() -> None:
    policy = AddressPolicy(["127.0.0.0/8"])
    assert policy.permits(ipaddress.ip_address("127.0.0.1"))
    assert not policy.permits(ipaddress.ip_address("10.0.0.1"))


async def test_client_refuses_blocked_hosts_and_redirects_to_them() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/latest/meta-data"})

    client = build_client(
        policy=AddressPolicy(), timeout_s=5, max_redirects=3, user_agent="t", transport=httpx.MockTransport(handler)
    )
    async with client:
        with pytest.raises(BlockedAddress):
            await client.get("http://127.0.0.1/feed")
        assert calls == []
        with pytest.raises(BlockedAddress) as info:
            await client.get("http://8.8.8.8/feed")  # public, but it redirects to the metadata address
        assert calls == ["http://8.8.8.8/feed"]
        assert info.value.address == "169.254.169.254"
