"""DNS TXT ownership proofs against a real DNS server on loopback (dnslib, tests/support/dnsserver.py)
through the resolver the operator uses (sender/transport/dnsproof.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dnsserver import LoopbackDNS

from hookline.sender.transport.dnsproof import TxtResolver, challenge_record, check_dns, parse_nameserver

TOKEN = "0123456789abcdef0123456789abcdef"
HOST = "api.shop.example"
RECORD = "_hookline-challenge.api.shop.example"


@pytest.fixture(scope="module")
def loopback_dns() -> Iterator[LoopbackDNS]:
    server = LoopbackDNS().start()
    yield server
    server.stop()


@pytest.fixture
def dns_server(loopback_dns: LoopbackDNS) -> LoopbackDNS:
    loopback_dns.reset()
    return loopback_dns


def resolver(server: LoopbackDNS, timeout: float = 2.0) -> TxtResolver:
    return TxtResolver([server.nameserver], timeout=timeout)


async def test_a_txt_record_holding_the_token_verifies(dns_server):
    dns_server.zone[RECORD] = ["google-site-verification=abc", f"  {TOKEN} "]
    result = await check_dns(resolver(dns_server), HOST, TOKEN)
    assert (result.reason, result.verified, result.method, result.record) == (
        "RecordMatched", True, "DNS", RECORD,
    )  # fmt: skip
    assert dns_server.queries == [(RECORD, "TXT")]


async def test_a_wrong_record_says_what_was_found(dns_server):
    dns_server.zone[RECORD] = ["ffffffffffffffffffffffffffffffff", "v=spf1 -all"]
    result = await check_dns(resolver(dns_server), HOST, TOKEN)
    assert (result.reason, result.verified) == ("RecordMismatch", False)
    assert result.records_found == ("ffffffffffffffffffffffffffffffff", "v=spf1 -all")
    assert RECORD in result.message and TOKEN in result.message


async def test_a_name_without_txt_and_nxdomain_are_not_found(dns_server):
    dns_server.zone[RECORD] = []  # the name exists, without TXT
    no_txt = await check_dns(resolver(dns_server), HOST, TOKEN)
    assert no_txt.reason == "RecordNotFound" and "has no TXT record" in no_txt.message
    nxdomain = await check_dns(resolver(dns_server), "other.shop.example", TOKEN)
    assert nxdomain.reason == "RecordNotFound" and "NXDOMAIN" in nxdomain.message
    assert nxdomain.record == challenge_record("other.shop.example")


async def test_a_server_that_does_not_answer_is_unreachable_within_the_timeout(dns_server):
    dns_server.silent.add(RECORD)
    result = await check_dns(resolver(dns_server, timeout=0.5), HOST, TOKEN)
    assert (result.reason, result.verified) == ("Unreachable", False)
    assert "within 0.5 s" in result.message


async def test_an_ip_literal_host_cannot_use_dns(dns_server):
    result = await check_dns(resolver(dns_server), "127.0.0.1", TOKEN)
    assert result.reason == "RecordNotFound" and "IP address" in result.message
    assert dns_server.queries == []


def test_nameserver_addresses_are_checked():
    assert parse_nameserver("10.0.0.53") == ("10.0.0.53", 53)
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("[::1]:5353") == ("::1", 5353)
    assert parse_nameserver("fd00::53") == ("fd00::53", 53)
    with pytest.raises(ValueError, match="not an IP address"):
        parse_nameserver("dns.example")
    with pytest.raises(ValueError, match="port must be"):
        parse_nameserver("127.0.0.1:0")


async def test_a_large_answer_truncated_over_udp_is_read_over_tcp():
    server = LoopbackDNS(udp_limit=512).start()
    try:
        server.zone[RECORD] = [f"other-verification-{i}-" + "x" * 180 for i in range(12)] + [TOKEN]
        result = await check_dns(resolver(server), HOST, TOKEN)
        assert result.reason == "RecordMatched"
        assert server.transports == ["udp", "tcp"]  # truncated, then asked again over TCP
        server.zone[RECORD] = server.zone[RECORD][:-1]
        mismatch = await check_dns(resolver(server), HOST, TOKEN)
        assert mismatch.reason == "RecordMismatch" and len(mismatch.records_found) == 10  # at most 10 shown
    finally:
        server.stop()
