"""One deadline per request: connect, send, headers, the body read and every redirect hop share it.

A receiver that answers headers at once and then stalls the body, or a chain of slow redirects, must
not hold a delivery worker past the Webhook's timeoutSeconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from hookline.sender.bus.natsserver import free_port
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.egress import EgressPolicy
from hookline.sender.transport.errors import RequestTimeout

LOOPBACK = EgressPolicy(["127.0.0.0/8"], allow_http=True)


@pytest.fixture
async def site() -> AsyncIterator[tuple[str, asyncio.Event]]:
    release = asyncio.Event()

    async def stalled_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "10"})
        await resp.prepare(request)
        await resp.write(b"12345")
        await release.wait()  # the other half never comes while the test runs
        return resp

    async def slow_redirect(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        hops = int(request.match_info["n"])
        raise web.HTTPFound("/ok" if hops == 0 else f"/slow-redirect/{hops - 1}")

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/stalled-body", stalled_body)
    app.router.add_get("/slow-redirect/{n}", slow_redirect)
    app.router.add_get("/ok", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", release
    finally:
        release.set()
        await runner.cleanup()


async def test_a_body_that_stalls_after_the_headers_is_a_timeout(site):
    base, _ = site
    async with SafeHTTPClient(LOOPBACK) as client:
        with pytest.raises(RequestTimeout) as info:
            await client.post(f"{base}/stalled-body", data=b"{}", timeout=0.5)
    assert info.value.reason == "timeout"
    assert "within 0.5 s" in str(info.value)


async def test_redirect_hops_share_the_request_deadline(site):
    base, _ = site
    async with SafeHTTPClient(LOOPBACK) as client:
        # Three hops of 0.2 s each fit in 1 s on their own but not together with the timeout of 0.5 s.
        with pytest.raises(RequestTimeout):
            await client.get(f"{base}/slow-redirect/2", timeout=0.5, follow_redirects=True)
        response = await client.get(f"{base}/slow-redirect/2", timeout=30, follow_redirects=True)
    assert response.status == 200
    assert response.url.endswith("/ok")


async def test_the_client_still_works_after_a_timeout(site):
    base, _ = site
    async with SafeHTTPClient(LOOPBACK, limit=1) as client:
        with pytest.raises(RequestTimeout):
            await client.post(f"{base}/stalled-body", data=b"{}", timeout=0.3)
        # The timed-out connection is not handed out again half-read.
        response = await client.get(f"{base}/ok", timeout=30)
    assert response.status == 200 and response.body == b"ok"
