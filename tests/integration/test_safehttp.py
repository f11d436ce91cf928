"""The SSRF-safe client: the address policy, the resolver check, redirects, size and time caps, keep-alive.

Endpoints are real aiohttp servers on 127.0.0.1; loopback is allowed explicitly where a test needs to
reach them. Host names are resolved by the system resolver (``localhost``) or by a stub resolver passed to
the client; the check of the resolved addresses is always the real code.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from hookline import USER_AGENT
from hookline.sender.bus.natsserver import free_port
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.egress import EgressPolicy
from hookline.sender.transport.errors import (
    BlockedDestination,
    ConnectionFailed,
    InvalidURL,
    RedirectRefused,
    RequestTimeout,
)

LOOPBACK = EgressPolicy(["127.0.0.0/8"], allow_http=True)
DEFAULT_HTTP = EgressPolicy(allow_http=True)  # http allowed, no networks: loopback stays refused

BLOCKED_BY_DEFAULT = [
    ("127.0.0.1", "loopback"),
    ("127.254.0.9", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("169.254.1.1", "link-local"),
    ("169.254.169.254", "metadata"),
    ("100.100.100.200", "metadata"),
    ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("198.18.0.1", "benchmarking"),
    ("192.0.2.1", "documentation"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fd00:ec2::254", "metadata"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "metadata"),
    ("2002:7f00:1::", "loopback"),  # 6to4 wrapping 127.0.0.1
    ("64:ff9b::a00:1", "private"),  # NAT64 wrapping 10.0.0.1
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2a00:1450::1"]


@pytest.mark.parametrize(("address", "kind"), BLOCKED_BY_DEFAULT)
def test_special_addresses_are_refused_by_default(address, kind):
    problem = EgressPolicy().address_problem(address)
    assert problem is not None
    assert kind in problem


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address):
    assert EgressPolicy().address_problem(address) is None


def test_allow_list_opens_exactly_its_networks():
    policy = EgressPolicy(["127.0.0.0/8", "10.0.0.0/16"])
    assert policy.address_problem("127.0.0.1") is None
    assert policy.address_problem("::ffff:127.0.0.1") is None
    assert policy.address_problem("10.0.200.1") is None
    assert policy.address_problem("10.1.0.1") is not None
    assert policy.address_problem("::1") is not None


def test_metadata_needs_the_exact_address_even_inside_an_allowed_network():
    assert "metadata" in EgressPolicy(["169.254.0.0/16"]).address_problem("169.254.169.254")
    assert "metadata" in EgressPolicy(["0.0.0.0/0"]).address_problem("169.254.169.254")
    assert "metadata" in EgressPolicy(["100.64.0.0/10"]).address_problem("100.100.100.200")
    assert EgressPolicy(["0.0.0.0/0"]).address_problem("10.0.0.1") is None
    assert EgressPolicy(["169.254.169.254/32"]).address_problem("169.254.169.254") is None
    assert EgressPolicy(["fd00:ec2::254/128"]).address_problem("fd00:ec2::254") is None


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("64:ff9b:1::a00:1", "local-use NAT64"),  # RFC 8215 local-use NAT64 holding 10.0.0.1
        ("64:ff9b:1:a9fe:a9:fe00::", "local-use NAT64"),  # the same prefix, /48 layout, metadata
        ("::ffff:0:10.0.0.1", "private"),  # IPv4-translated (SIIT) form of a private address
        ("::ffff:0:169.254.169.254", "metadata"),
        ("::ffff:0:127.0.0.1", "loopback"),
    ],
)
def test_nat64_local_use_and_ipv4_translated_addresses_are_refused(address, words):
    problem = EgressPolicy().address_problem(address)
    assert problem is not None and words in problem


def test_ipv4_translated_form_of_a_public_address_stays_public():
    assert EgressPolicy().address_problem("::ffff:0:8.8.8.8") is None
    assert EgressPolicy(["10.0.0.0/8"]).address_problem("::ffff:0:10.0.0.1") is None


def test_refusal_says_how_to_allow_it():
    problem = EgressPolicy().address_problem("10.0.0.1")
    assert "--allow-network" in problem and "HOOKLINE_ALLOW_NETWORKS" in problem


@pytest.mark.parametrize(
    ("url", "error", "words"),
    [
        ("http://shop.example.com/hook", BlockedDestination, "--allow-http"),
        ("https://user:pw@shop.example.com/hook", BlockedDestination, "user:password"),
        ("ftp://shop.example.com/x", InvalidURL, "http"),
        ("/relative/path", InvalidURL, "absolute"),
        ("https://10.0.0.1/hook", BlockedDestination, "private"),
        ("https://[::1]:8443/hook", BlockedDestination, "loopback"),
        ("https://[::ffff:a9fe:a9fe]/", BlockedDestination, "metadata"),
    ],
)
def test_url_checks(url, error, words):
    with pytest.raises(error, match=words) as info:
        EgressPolicy().check_url(url)
    assert "pw" not in str(info.value)


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f000001", "017700000001", "0x7f.1", "10.1", "0"])
def test_legacy_numeric_ipv4_forms_are_refused_as_what_they_mean(host):
    with pytest.raises(BlockedDestination, match="address"):
        DEFAULT_HTTP.check_url(f"http://{host}:8080/hook")


def test_legacy_numeric_form_of_a_public_address_asks_for_the_plain_form():
    with pytest.raises(InvalidURL, match=r"write the address as 8\.8\.8\.8"):
        DEFAULT_HTTP.check_url("https://134744072/")


def test_https_public_url_passes_the_url_check():
    assert EgressPolicy().check_url("https://shop.example.com/hooks/x.php").host == "shop.example.com"


def test_from_cli_combines_flags_and_environment():
    policy = EgressPolicy.from_cli(
        ["10.0.0.0/8"],
        None,
        {"HOOKLINE_ALLOW_NETWORKS": "127.0.0.1/32, fd00::/8", "HOOKLINE_ALLOW_HTTP": "1"},
    )
    assert policy.allow_http is True
    assert [str(n) for n in policy.allow_networks] == ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]
    assert EgressPolicy.from_cli([], None, {}).allow_http is False
    assert EgressPolicy.from_cli([], True, {}).allow_http is True
    assert EgressPolicy.from_cli(["127.0.0.1"], None, {}).address_problem("127.0.0.1") is None


@pytest.mark.parametrize(
    ("networks", "env", "words"),
    [
        (["10.0.0.0/33"], {}, "--allow-network: '10.0.0.0/33' is not an IP network"),
        (["localhost"], {}, "--allow-network: 'localhost'"),
        ([], {"HOOKLINE_ALLOW_NETWORKS": "10.0.0.0/8,nope"}, "HOOKLINE_ALLOW_NETWORKS: 'nope'"),
        ([], {"HOOKLINE_ALLOW_HTTP": "sure"}, "HOOKLINE_ALLOW_HTTP='sure' is not a boolean"),
    ],
)
def test_from_cli_errors_name_the_flag(networks, env, words):
    with pytest.raises(ValueError, match=words):
        EgressPolicy.from_cli(networks, None, env)


def test_dev_policy_allows_loopback_and_http():
    policy = EgressPolicy.for_dev()
    assert policy.allow_http and policy.address_problem("127.0.0.1") is None
    assert policy.address_problem("::1") is None and policy.address_problem("10.0.0.1") is not None


# ---------------------------------------------------------------------------------------------------------
# Against a real server on 127.0.0.1


@dataclass
class Receiver:
    port: int
    hits: list[str] = field(default_factory=list)
    user_agents: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    peers: set[object] = field(default_factory=set)
    active: int = 0
    max_active: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(port=free_port())

    @web.middleware
    async def record(request: web.Request, handler):
        rec.hits.append(request.path)
        rec.user_agents.append(request.headers.get("User-Agent", ""))
        rec.hosts.append(request.headers.get("Host", ""))
        rec.peers.add(request.transport.get_extra_info("peername"))
        return await handler(request)

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok", headers={"Retry-After": "7"})

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (1024 * 1024))

    async def big_chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(b"y" * 4096)
        await resp.write_eof()
        return resp

    async def hang(request: web.Request) -> web.Response:
        await rec.release.wait()
        return web.Response(text="late")

    async def slow(request: web.Request) -> web.Response:
        rec.active += 1
        rec.max_active = max(rec.max_active, rec.active)
        await asyncio.sleep(0.05)
        rec.active -= 1
        return web.Response(text="done")

    async def redirect(request: web.Request) -> web.Response:
        hops = int(request.match_info["n"])
        target = "/ok" if hops == 0 else f"/redirect/{hops - 1}"
        raise web.HTTPFound(target)

    async def to_other_host(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://localhost:{rec.port}/ok")

    async def to_other_port(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(f"http://127.0.0.1:{rec.port + 1}/ok")

    app = web.Application(middlewares=[record])
    app.router.add_route("*", "/ok", ok)
    app.router.add_get("/big", big)
    app.router.add_get("/chunked", big_chunked)
    app.router.add_get("/hang", hang)
    app.router.add_get("/slow", slow)
    app.router.add_route("*", "/redirect/{n}", redirect)
    app.router.add_get("/other-host", to_other_host)
    app.router.add_get("/other-port", to_other_port)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", rec.port).start()
    try:
        yield rec
    finally:
        rec.release.set()
        await runner.cleanup()


class StubResolver(AbstractResolver):
    """Answers host names from a table instead of DNS (no /etc/hosts needed)."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        self.asked.append(host)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in self.table[host]
        ]

    async def close(self) -> None:
        pass


async def test_loopback_is_refused_without_allow_list_and_nothing_is_sent(receiver):
    async with SafeHTTPClient(DEFAULT_HTTP) as client:
        with pytest.raises(BlockedDestination, match="loopback") as info:
            await client.post(receiver.url("/ok"), data=b"x")
    assert info.value.kind == "blocked"
    assert receiver.hits == []


async def test_host_name_resolving_to_loopback_is_refused(receiver):
    async with SafeHTTPClient(DEFAULT_HTTP) as client:
        with pytest.raises(BlockedDestination, match=r"localhost \(resolves to .*loopback"):
            await client.get(receiver.url("/ok", host="localhost"))
    assert receiver.hits == []


@pytest.mark.parametrize(
    "addresses",
    [["127.0.0.1"], ["10.0.0.7"], ["169.254.169.254"], ["::ffff:127.0.0.1"], ["fd00::1"], ["fe80::1"]],
)
async def test_stub_resolved_name_to_special_address_is_refused(receiver, addresses):
    resolver = StubResolver({"shop.example.com": addresses})
    async with SafeHTTPClient(DEFAULT_HTTP, resolver=resolver) as client:
        with pytest.raises(BlockedDestination):
            await client.post(f"http://shop.example.com:{receiver.port}/ok", data=b"{}")
    assert resolver.asked == ["shop.example.com"]
    assert receiver.hits == []


async def test_one_bad_address_among_several_refuses_the_host(receiver):
    resolver = StubResolver({"shop.example.com": ["127.0.0.1", "10.0.0.7"]})
    async with SafeHTTPClient(LOOPBACK, resolver=resolver) as client:
        with pytest.raises(BlockedDestination, match=r"10\.0\.0\.7"):
            await client.get(f"http://shop.example.com:{receiver.port}/ok")
    assert receiver.hits == []


async def test_allow_listed_name_connects_to_the_checked_address(receiver):
    resolver = StubResolver({"shop.example.com": ["127.0.0.1"]})
    async with SafeHTTPClient(LOOPBACK, resolver=resolver) as client:
        response = await client.post(f"http://shop.example.com:{receiver.port}/ok", data=b"{}")
    assert response.status == 200 and response.body == b"ok"
    assert receiver.hosts == [f"shop.example.com:{receiver.port}"]


async def test_response_fields_and_user_agent(receiver):
    async with SafeHTTPClient(LOOPBACK) as client:
        response = await client.post(receiver.url("/ok"), data=b"a=1", headers={"X-Team": "crm"})
    assert response.status == 200
    assert response.headers["retry-after"] == "7"
    assert response.elapsed > 0
    assert response.url == receiver.url("/ok")
    assert receiver.user_agents == [USER_AGENT]


async def test_plain_http_is_refused_unless_allowed(receiver):
    async with SafeHTTPClient(EgressPolicy(["127.0.0.0/8"])) as client:
        with pytest.raises(BlockedDestination, match="--allow-http"):
            await client.get(receiver.url("/ok"))
    assert receiver.hits == []


async def test_get_follows_same_origin_redirects_up_to_three(receiver):
    async with SafeHTTPClient(LOOPBACK) as client:
        response = await client.get(receiver.url("/redirect/2"), follow_redirects=True)
        assert (response.status, response.body) == (200, b"ok")
        assert response.url == receiver.url("/ok")
        with pytest.raises(RedirectRefused, match="more than 3"):
            await client.get(receiver.url("/redirect/3"), follow_redirects=True)


async def test_redirects_are_not_followed_unless_asked(receiver):
    async with SafeHTTPClient(LOOPBACK) as client:
        response = await client.get(receiver.url("/redirect/0"))
    assert response.status == 302
    assert receiver.hits == ["/redirect/0"]


async def test_post_is_never_redirected(receiver):
    async with SafeHTTPClient(LOOPBACK) as client:
        response = await client.post(receiver.url("/redirect/0"), data=b"x", follow_redirects=True)
    assert response.status == 302
    assert receiver.hits == ["/redirect/0"]


@pytest.mark.parametrize("path", ["/other-host", "/other-port"])
async def test_redirect_to_another_origin_is_refused(receiver, path):
    async with SafeHTTPClient(LOOPBACK) as client:
        with pytest.raises(RedirectRefused, match="another origin") as info:
            await client.get(receiver.url(path), follow_redirects=True)
    assert info.value.kind == "redirect"
    assert receiver.hits == [path]


@pytest.mark.parametrize("path", ["/big", "/chunked"])
async def test_response_body_is_capped_and_the_rest_discarded(receiver, path):
    async with SafeHTTPClient(LOOPBACK, max_response_bytes=1000) as client:
        response = await client.get(receiver.url(path))
        assert response.status == 200
        assert len(response.body) == 1000 and response.truncated
        again = await client.post(receiver.url("/ok"), data=b"x")  # the client still works
        assert again.body == b"ok" and not again.truncated


async def test_default_cap_is_64_kib(receiver):
    async with SafeHTTPClient(LOOPBACK) as client:
        response = await client.get(receiver.url("/big"))
    assert len(response.body) == 64 * 1024


async def test_timeout_is_a_request_timeout(receiver):
    async with SafeHTTPClient(LOOPBACK) as client:
        with pytest.raises(RequestTimeout) as info:
            await client.get(receiver.url("/hang"), timeout=0.3)
    assert info.value.kind == "timeout" and info.value.reason == "timeout"
    assert receiver.hits == ["/hang"]


async def test_connection_refused_has_a_short_reason():
    async with SafeHTTPClient(LOOPBACK) as client:
        with pytest.raises(ConnectionFailed) as info:
            await client.post(f"http://127.0.0.1:{free_port()}/x", data=b"x")
    assert info.value.kind == "connection_error"
    assert info.value.reason == "connection refused"


async def test_one_keep_alive_connection_serves_sequential_requests(receiver):
    async with SafeHTTPClient(LOOPBACK) as client:
        for _ in range(20):
            assert (await client.post(receiver.url("/ok"), data=b"x")).status == 200
    assert len(receiver.hits) == 20
    assert len(receiver.peers) == 1


async def test_connection_limit_bounds_concurrency(receiver):
    async with SafeHTTPClient(LOOPBACK, limit=2) as client:
        responses = await asyncio.gather(*(client.get(receiver.url("/slow")) for _ in range(8)))
    assert all(r.status == 200 for r in responses)
    assert receiver.max_active <= 2
    assert len(receiver.peers) <= 2


async def test_client_starts_lazily_and_closes():
    client = SafeHTTPClient(DEFAULT_HTTP)
    with pytest.raises(BlockedDestination):
        await client.get("http://127.0.0.1:1/")
    await client.close()
    await client.close()
