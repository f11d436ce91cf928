"""URL ownership: where the file is looked for, and each answer of the check against a real server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from hookline.sender.bus.natsserver import free_port
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.egress import EgressPolicy
from hookline.sender.transport.ownership import (
    check_ownership,
    new_token,
    verification_file_name,
    verification_locations,
)

LOOPBACK = EgressPolicy(["127.0.0.0/8"], allow_http=True)
TOKEN = "0123456789abcdef0123456789abcdef"
FILE = f"hookline-{TOKEN}.txt"


def test_token_is_128_bits_of_lower_hex_and_unique():
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) == 32 and t == t.lower() and int(t, 16) >= 0 for t in tokens)


def test_file_name():
    assert verification_file_name(TOKEN) == FILE


@pytest.mark.parametrize("token", ["", "xyz", TOKEN.upper(), TOKEN + "0", "../" + TOKEN[3:]])
def test_file_name_refuses_malformed_tokens(token):
    with pytest.raises(ValueError, match="32 lower-case hex"):
        verification_file_name(token)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://h.example/hooks/copernica.php", ["https://h.example/hooks/F", "https://h.example/F"]),
        ("https://h.example/hooks/", ["https://h.example/hooks/F", "https://h.example/F"]),
        ("https://h.example/a/b/c.php?x=1&y=2#frag", ["https://h.example/a/b/F", "https://h.example/F"]),
        ("https://h.example/copernica.php", ["https://h.example/F"]),
        ("https://h.example/", ["https://h.example/F"]),
        ("https://h.example", ["https://h.example/F"]),
        ("https://h.example:8443/x/y", ["https://h.example:8443/x/F", "https://h.example:8443/F"]),
        ("http://user:pw@h.example/x/y", ["http://h.example/x/F", "http://h.example/F"]),
        ("https://[2001:db8::1]/x/y", ["https://[2001:db8::1]/x/F", "https://[2001:db8::1]/F"]),
    ],
)
def test_locations_are_script_directory_then_root(url, expected):
    assert verification_locations(url, "F") == expected


def test_locations_refuse_non_urls():
    with pytest.raises(ValueError, match="not an http"):
        verification_locations("shop.example.com/hook", "F")


# ---------------------------------------------------------------------------------------------------------
# Against a real server


@dataclass
class Site:
    port: int
    files: dict[str, tuple[int, str]] = field(default_factory=dict)  # path -> (status, body)
    hits: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def hook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/copernica.php?key=1"

    @property
    def in_dir(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{FILE}"

    @property
    def at_root(self) -> str:
        return f"http://127.0.0.1:{self.port}/{FILE}"


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    s = Site(port=free_port())

    async def serve(request: web.Request) -> web.StreamResponse:
        s.hits.append(request.path)
        status, body = s.files.get(request.path, (404, "not found"))
        if status == 0:
            await s.release.wait()
        if 300 <= status < 400:
            return web.Response(status=status, headers={"Location": body})
        return web.Response(status=status, text=body)

    app = web.Application()
    app.router.add_get("/{tail:.*}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", s.port).start()
    try:
        yield s
    finally:
        s.release.set()
        await runner.cleanup()


async def check(site: Site, policy: EgressPolicy = LOOPBACK, **kwargs):
    async with SafeHTTPClient(policy, **kwargs.pop("client", {})) as client:
        return await check_ownership(client, site.hook_url, TOKEN, **kwargs)


async def test_file_in_script_directory_matches_without_asking_the_root(site):
    site.files[f"/hooks/{FILE}"] = (200, TOKEN)
    result = await check(site)
    assert result.reason == "FileMatched" and result.verified
    assert result.verified_url == site.in_dir
    assert site.hits == [f"/hooks/{FILE}"]


async def test_file_only_at_root_matches(site):
    site.files[f"/{FILE}"] = (200, f"\n  {TOKEN}\r\n")
    result = await check(site)
    assert result.reason == "FileMatched"
    assert result.verified_url == site.at_root
    assert result.location_errors == {site.in_dir: "HTTP 404"}


async def test_wrong_content_is_a_mismatch_that_says_what_to_write(site):
    site.files[f"/hooks/{FILE}"] = (200, "<html>Welcome to our shop</html>")
    result = await check(site)
    assert result.reason == "ContentMismatch" and not result.verified
    assert result.verified_url is None
    assert f"must contain exactly {TOKEN}" in result.message
    assert FILE in result.message
    assert "content is not the token" in result.location_errors[site.in_dir]


async def test_missing_everywhere_tells_where_to_place_the_file(site):
    result = await check(site)
    assert result.reason == "FileNotFound"
    assert (
        f"place a file named {FILE} containing {TOKEN} at {site.in_dir} or {site.at_root}" in result.message
    )
    assert result.location_errors == {site.in_dir: "HTTP 404", site.at_root: "HTTP 404"}


@pytest.mark.parametrize("status", [403, 410, 401])
async def test_other_client_errors_count_as_not_found(site, status):
    site.files[f"/hooks/{FILE}"] = (status, "no")
    site.files[f"/{FILE}"] = (status, "no")
    assert (await check(site)).reason == "FileNotFound"


async def test_server_errors_are_unreachable(site):
    site.files[f"/hooks/{FILE}"] = (503, "maintenance")
    site.files[f"/{FILE}"] = (500, "oops")
    result = await check(site)
    assert result.reason == "Unreachable"
    assert "reachable" in result.message and "retried" in result.message
    assert result.location_errors[site.at_root] == "HTTP 500"


async def test_closed_port_is_unreachable():
    closed = Site(port=free_port())
    result = await check(closed)
    assert result.reason == "Unreachable"
    assert set(result.location_errors.values()) == {"connection refused"}


async def test_timeout_is_unreachable(site):
    site.files[f"/hooks/{FILE}"] = (0, "")
    site.files[f"/{FILE}"] = (0, "")
    result = await check(site, per_location_timeout=0.3)
    assert result.reason == "Unreachable"
    assert set(result.location_errors.values()) == {"timeout"}


async def test_loopback_without_allow_list_is_blocked_and_nothing_is_fetched(site):
    site.files[f"/hooks/{FILE}"] = (200, TOKEN)
    result = await check(site, EgressPolicy(allow_http=True))
    assert result.reason == "Blocked"
    assert "loopback" in result.message and "--allow-network" in result.message
    assert site.hits == []


class StubResolver(AbstractResolver):
    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        return [
            {"hostname": host, "host": self.address, "port": port, "family": family, "proto": 0, "flags": 0}
        ]

    async def close(self) -> None:
        pass


async def test_host_name_resolving_to_private_address_is_blocked(site):
    async with SafeHTTPClient(EgressPolicy(allow_http=True), resolver=StubResolver("127.0.0.1")) as client:
        result = await check_ownership(client, f"http://shop.example.com:{site.port}/hooks/x.php", TOKEN)
    assert result.reason == "Blocked"
    assert site.hits == []


async def test_allowed_host_name_is_verified_through_the_resolver(site):
    site.files[f"/{FILE}"] = (200, TOKEN)
    async with SafeHTTPClient(LOOPBACK, resolver=StubResolver("127.0.0.1")) as client:
        result = await check_ownership(client, f"http://shop.example.com:{site.port}/hooks/x.php", TOKEN)
    assert result.reason == "FileMatched"
    assert result.verified_url == f"http://shop.example.com:{site.port}/{FILE}"


async def test_same_host_redirect_is_followed(site):
    site.files[f"/hooks/{FILE}"] = (302, f"/static/{FILE}")
    site.files[f"/static/{FILE}"] = (200, TOKEN)
    result = await check(site)
    assert result.reason == "FileMatched"
    assert result.verified_url == site.in_dir


async def test_redirect_to_another_host_is_not_followed(site):
    site.files[f"/hooks/{FILE}"] = (302, f"http://localhost:{site.port}/{FILE}")
    site.files[f"/{FILE}"] = (301, f"http://localhost:{site.port}/{FILE}")
    result = await check(site)
    assert result.reason == "FileNotFound"
    assert set(result.location_errors.values()) == {"redirect to another host"}
    assert f"/{FILE}" in site.hits and len(site.hits) == 2


@pytest.mark.parametrize(
    ("in_dir", "at_root", "reason"),
    [
        ((200, "wrong"), (200, TOKEN), "FileMatched"),
        ((500, "x"), (200, TOKEN), "FileMatched"),
        ((200, "wrong"), (500, "x"), "ContentMismatch"),
        ((500, "x"), (200, "wrong"), "ContentMismatch"),
        ((500, "x"), (404, "x"), "Unreachable"),
        ((404, "x"), (502, "x"), "Unreachable"),
    ],
)
async def test_precedence_when_locations_disagree(site, in_dir, at_root, reason):
    site.files[f"/hooks/{FILE}"] = in_dir
    site.files[f"/{FILE}"] = at_root
    assert (await check(site)).reason == reason


async def test_huge_file_is_read_only_up_to_the_cap_and_does_not_match(site):
    site.files[f"/hooks/{FILE}"] = (200, TOKEN + " " * 200_000 + "x")
    result = await check(site)
    assert result.reason == "ContentMismatch"
