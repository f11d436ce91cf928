"""https is what customers' URLs use in production: both of SafeHTTPClient's paths (the lean POST pool
for deliveries, aiohttp for ownership GETs) must speak TLS, verify the certificate and the host name,
and refuse a server they cannot trust with a reason the user can act on.

The receiver is a real aiohttp server on 127.0.0.1 with a certificate from a throwaway CA (trustme).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import trustme
import uvloop
from aiohttp import web

from hookline.sender.bus.natsserver import free_port
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.egress import EgressPolicy
from hookline.sender.transport.errors import ConnectionFailed

# https only: plain http stays refused, loopback is allowed because the test site lives there.
LOOPBACK_HTTPS_ONLY = EgressPolicy(["127.0.0.0/8"], allow_http=False)


@dataclass
class TLSSite:
    url: str
    ca: trustme.CA
    bodies: list[bytes] = field(default_factory=list)
    peers: set[object] = field(default_factory=set)

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


async def _serve(ca: trustme.CA, cert_names: list[str]) -> tuple[TLSSite, web.AppRunner]:
    port = free_port()
    site = TLSSite(url=f"https://127.0.0.1:{port}", ca=ca)

    async def hook(request: web.Request) -> web.Response:
        site.bodies.append(await request.read())
        site.peers.add(request.transport.get_extra_info("peername"))
        return web.Response(text="thanks")

    async def ownership_file(request: web.Request) -> web.Response:
        return web.Response(text="token-123\n")

    app = web.Application()
    app.router.add_post("/hooks/copernica.php", hook)
    app.router.add_get("/hooks/hookline-token-123.txt", ownership_file)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*cert_names).configure_cert(server_context)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_context).start()
    return site, runner


@pytest.fixture
async def tls_site() -> AsyncIterator[TLSSite]:
    site, runner = await _serve(trustme.CA(), ["127.0.0.1"])
    yield site
    await runner.cleanup()


@pytest.fixture
async def wrong_name_site() -> AsyncIterator[TLSSite]:
    site, runner = await _serve(trustme.CA(), ["shop.example.com"])
    yield site
    await runner.cleanup()


async def test_deliveries_over_https_arrive_on_one_verified_keepalive_connection(tls_site):
    async with SafeHTTPClient(LOOPBACK_HTTPS_ONLY, ssl=tls_site.client_context()) as client:
        for n in range(5):
            body = f'{{"n": {n}}}'.encode()
            response = await client.request(
                "POST",
                f"{tls_site.url}/hooks/copernica.php",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            assert response.status == 200
            assert response.body == b"thanks"
    assert tls_site.bodies == [f'{{"n": {n}}}'.encode() for n in range(5)]
    assert len(tls_site.peers) == 1, "each delivery opened a new TLS connection"


async def test_ownership_file_is_fetched_over_https(tls_site):
    async with SafeHTTPClient(LOOPBACK_HTTPS_ONLY, ssl=tls_site.client_context()) as client:
        response = await client.request("GET", f"{tls_site.url}/hooks/hookline-token-123.txt")
    assert response.status == 200
    assert response.body.strip() == b"token-123"


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_untrusted_certificate_is_refused_with_a_tls_reason(tls_site, method):
    # The system trust store does not know the throwaway CA, as with a customer's self-signed cert.
    async with SafeHTTPClient(LOOPBACK_HTTPS_ONLY) as client:
        with pytest.raises(ConnectionFailed) as refused:
            await client.request(method, f"{tls_site.url}/hooks/copernica.php", data=b"{}")
    assert refused.value.reason == "tls error: certificate is not trusted (self-signed or unknown issuer)"
    assert tls_site.bodies == []


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_certificate_for_another_host_is_refused(wrong_name_site, method):
    async with SafeHTTPClient(LOOPBACK_HTTPS_ONLY, ssl=wrong_name_site.client_context()) as client:
        with pytest.raises(ConnectionFailed) as refused:
            await client.request(method, f"{wrong_name_site.url}/hooks/copernica.php", data=b"{}")
    assert refused.value.reason == "tls error: certificate is not valid for this host name"
    assert wrong_name_site.bodies == []


def test_the_same_on_uvloop():
    """`hookline sender` and `hookline pool` run on uvloop: deliveries over TLS keep one verified
    connection, and untrusted or misnamed certificates are refused with the same reasons."""

    async def scenario() -> None:
        site, runner = await _serve(trustme.CA(), ["127.0.0.1"])
        wrong, wrong_runner = await _serve(trustme.CA(), ["shop.example.com"])
        url = f"{site.url}/hooks/copernica.php"
        try:
            async with SafeHTTPClient(LOOPBACK_HTTPS_ONLY, ssl=site.client_context()) as client:
                for n in range(3):
                    response = await client.request("POST", url, data=f'{{"n": {n}}}'.encode())
                    assert (response.status, response.body) == (200, b"thanks")
            assert len(site.peers) == 1
            refusals = {}
            for name, target, context in (
                ("untrusted", url, None),
                ("misnamed", f"{wrong.url}/hooks/copernica.php", wrong.client_context()),
            ):
                options = {} if context is None else {"ssl": context}
                async with SafeHTTPClient(LOOPBACK_HTTPS_ONLY, **options) as client:
                    with pytest.raises(ConnectionFailed) as refused:
                        await client.request("POST", target, data=b"{}")
                refusals[name] = refused.value.reason
            assert refusals == {
                "untrusted": "tls error: certificate is not trusted (self-signed or unknown issuer)",
                "misnamed": "tls error: certificate is not valid for this host name",
            }
        finally:
            await runner.cleanup()
            await wrong_runner.cleanup()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
        loop_runner.run(scenario())
