"""The cloud metadata list (issue 19, item 7): every known metadata or credential endpoint is refused,
even inside an allow-listed network, unless named exactly. Only the classifier is called: no traffic
goes to any of these addresses."""

from __future__ import annotations

import ipaddress

import pytest

from hookline.sender.transport.egress import METADATA_ENDPOINTS, EgressPolicy, metadata_endpoint
from hookline.sender.transport.errors import BlockedDestination

ENDPOINTS = [
    ("169.254.169.254", "instance metadata"),
    ("fd00:ec2::254", "AWS instance metadata (IPv6)"),
    ("169.254.170.2", "ECS"),
    ("169.254.170.23", "EKS Pod Identity"),
    ("fd00:ec2::23", "EKS Pod Identity"),
    ("fd20:ce::254", "GCP"),
    ("168.63.129.16", "Azure WireServer"),
    ("100.100.100.200", "Alibaba"),
    ("192.0.0.192", "Oracle"),
    ("169.254.0.23", "Tencent"),
]


@pytest.mark.parametrize(("address", "what"), ENDPOINTS)
def test_each_endpoint_is_named_and_refused_even_in_an_allowed_network(address: str, what: str) -> None:
    ip = ipaddress.ip_address(address)
    assert what in (metadata_endpoint(ip) or "")
    everything = ["0.0.0.0/0", "::/0"]
    problem = EgressPolicy(everything, allow_http=True).address_problem(address)
    assert problem is not None and "cloud metadata endpoint" in problem and what in problem
    exact = f"{address}/{ip.max_prefixlen}"
    assert exact in problem  # the message says how to allow it on purpose
    assert EgressPolicy([exact]).address_problem(address) is None


def test_the_list_is_the_table() -> None:
    assert {ipaddress.ip_address(a) for a, _ in ENDPOINTS} == set(METADATA_ENDPOINTS)


def test_azure_wireserver_is_refused_although_it_is_a_public_address() -> None:
    policy = EgressPolicy()
    assert "Azure WireServer" in (policy.address_problem("168.63.129.16") or "")
    assert policy.address_problem("168.63.129.17") is None  # its public neighbour is an ordinary address
    # IPv6 forms of it are the same endpoint
    for form in ("::ffff:168.63.129.16", "64:ff9b::a83f:8110", "2002:a83f:8110::1"):
        assert "Azure WireServer" in (policy.address_problem(form) or ""), form


@pytest.mark.parametrize(
    "url", ["https://168.63.129.16/machine", "http://[fd20:ce::254]/computeMetadata/v1/"]
)
def test_ip_literal_urls_of_endpoints_are_refused_before_any_request(url: str) -> None:
    with pytest.raises(BlockedDestination, match="metadata"):
        EgressPolicy(["0.0.0.0/0", "::/0"], allow_http=True).check_url(url)
