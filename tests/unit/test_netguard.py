"""The SSRF guard blocks every non-public range unless allowlisted, on every redirect hop."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from helpers import FeedServer, Route

from shared.errors import BlockedAddress
from shared.http import build_client
from shared.netguard import AddressPolicy, InvalidURL, checked_url, is_public


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
        # special-use ranges and IPv4 carried inside IPv6 (issue 13, item 4)
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b:1::1",  # local-use NAT64
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "::127.0.0.1",  # IPv4-compatible
        "fec0::1",  # site-local
        "192.0.0.8",
        "192.0.0.170",
        "192.88.99.1",
        "198.18.0.1",
        "2001:db8::1",
    ],
)
def test_non_public_addresses_are_blocked(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))
    assert not AddressPolicy().permits(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2002:808:808::1", "64:ff9b::808:808"]
)
def test_public_addresses_pass(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_allowlist_opens_only_its_networks() -> None:
    policy = AddressPolicy(["127.0.0.0/8"])
    assert policy.permits(ipaddress.ip_address("127.0.0.1"))
    assert policy.permits(ipaddress.ip_address("::ffff:127.0.0.1")), "the IPv4 it carries is allowed"
    assert not policy.permits(ipaddress.ip_address("10.0.0.1"))
    assert not policy.permits(ipaddress.ip_address("2002:a9fe:a9fe::"))


def test_the_refusal_says_how_to_allow_a_network_but_not_where_the_name_points() -> None:
    # The message becomes a source's last_error, which read keys see: naming the address let a
    # feed that redirects the poller to internal names learn their private addresses.
    refused = BlockedAddress("db.internal", "10.1.2.3")
    assert "CORRIDOR_ALLOW_PRIVATE_NETWORKS" in str(refused) and "db.internal" in str(refused)
    assert "10.1.2.3" not in str(refused) and refused.address == "10.1.2.3"


async def test_connections_go_to_the_address_that_was_checked() -> None:
    """DNS rebinding: the name is resolved once, for the check, and the connection goes to that
    address; a later answer pointing elsewhere is checked again, never used unchecked."""
    answers = [["127.0.0.1"], ["10.0.0.1"]]
    asked: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked), len(answers)) - 1]

    policy = AddressPolicy(["127.0.0.0/8"], resolver=resolver)
    with FeedServer() as server:
        server.routes["/x"] = Route(body=b"ok")
        url = server.url("/x").replace("127.0.0.1", "rebind.test")  # a name only our resolver knows
        async with build_client(policy=policy, timeout_s=5, max_redirects=0, user_agent="t") as client:
            assert (await client.get(url)).text == "ok"
            assert asked == ["rebind.test"], "resolved once, at connect, and connected to that answer"
        async with build_client(policy=policy, timeout_s=5, max_redirects=0, user_agent="t") as client:
            with pytest.raises(BlockedAddress) as info:
                await client.get(url)
            assert info.value.address == "10.0.0.1"


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


@pytest.mark.parametrize(
    "url", ["http://example.com:99999/", "http://[::1/x", "https://[fe80::1%25eth0/feed", "http://example.com:-1/"]
)
async def test_a_url_that_does_not_parse_is_invalid_not_a_crash(url: str) -> None:
    # urlsplit raises a plain ValueError for these; the API answered 500 before.
    with pytest.raises(InvalidURL, match=r"not a valid URL|absolute http"):
        await checked_url(AddressPolicy(), url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://8.8.8.8:0/hook", "port 0"),  # accepted before, and never connectable
        ("http://user:secret@8.8.8.8/feed", "credentials in the URL"),  # were dropped in silence
        ("http://user@8.8.8.8/feed", "credentials in the URL"),
    ],
)
async def test_urls_that_could_never_work_as_given_are_refused(url: str, why: str) -> None:
    with pytest.raises(InvalidURL, match=why) as refused:
        await checked_url(AddressPolicy(), url)
    assert "secret" not in str(refused.value)
