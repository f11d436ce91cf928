"""POSTs (every delivery) take SafeHTTPClient's lean keep-alive path; these are the receiver behaviours
it has to get right on its own: framing, interim answers, compressed and oversized bodies, servers
that hang up or answer garbage, the connection limit, and nothing sent when a header is unsafe.

Customer endpoints are real servers on 127.0.0.1: aiohttp for well-formed answers, a raw asyncio server
for the answers aiohttp would never send.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import uvloop
from aiohttp import web

from hookline import USER_AGENT
from hookline.sender.bus.natsserver import free_port
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.egress import EgressPolicy
from hookline.sender.transport.errors import ConnectionFailed, RequestTimeout

LOOPBACK = EgressPolicy(["127.0.0.0/8"], allow_http=True)


@dataclass
class Site:
    url: str
    bodies: list[bytes] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    peers: list[object] = field(default_factory=list)
    active: int = 0
    max_active: int = 0


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    port = free_port()
    rec = Site(url=f"http://127.0.0.1:{port}")

    @web.middleware
    async def record(request: web.Request, handler):
        rec.bodies.append(await request.read())
        rec.headers.append(dict(request.headers))
        rec.peers.append(request.transport.get_extra_info("peername"))
        return await handler(request)

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b"z" * 5000), headers={"Content-Encoding": "gzip"})

    async def deflated(request: web.Request) -> web.Response:
        return web.Response(body=zlib.compress(b"accepted"), headers={"Content-Encoding": "deflate"})

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (256 * 1024))

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=202)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b"queued ", b"for ", b"later"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def close_after(request: web.Request) -> web.Response:
        return web.Response(text="bye", headers={"Connection": "close"})

    async def slow(request: web.Request) -> web.Response:
        rec.active += 1
        rec.max_active = max(rec.max_active, rec.active)
        await asyncio.sleep(0.05)
        rec.active -= 1
        return web.Response(text="done")

    app = web.Application(middlewares=[record])
    for path, handler in {
        "/ok": ok,
        "/gzip": gzipped,
        "/deflate": deflated,
        "/big": big,
        "/chunked": chunked,
        "/close": close_after,
        "/slow": slow,
    }.items():
        app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield rec
    finally:
        await runner.cleanup()


Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Answer], Awaitable[str]]]:
    """A server that answers each connection with the given coroutine; returns its URL."""
    servers: list[asyncio.base_events.Server] = []

    async def serve(answer: Answer) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await answer(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"

    try:
        yield serve
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


async def test_sequential_posts_share_one_connection_and_send_the_body_and_headers(site):
    async with SafeHTTPClient(LOOPBACK) as client:
        for i in range(5):
            response = await client.post(
                f"{site.url}/ok", data=f'{{"n":{i}}}'.encode(), headers={"Content-Type": "application/json"}
            )
            assert (response.status, response.body, response.truncated) == (200, b"ok", False)
    assert site.bodies == [f'{{"n":{i}}}'.encode() for i in range(5)]
    assert len(set(site.peers)) == 1
    sent = site.headers[0]
    assert sent["Content-Type"] == "application/json"
    assert sent["User-Agent"] == USER_AGENT
    assert sent["Host"] == site.url.removeprefix("http://")


async def test_posts_over_http_never_load_a_tls_context(site, monkeypatch):
    """Loading the CA store is ~20 ms of CPU, which a pool replica's first engine paid while every
    other engine waited to start, for receivers that speak plain http."""
    from hookline.sender.transport import client as client_module

    asked: list[object] = []
    load = client_module._tls_context
    monkeypatch.setattr(client_module, "_tls_context", lambda ssl: asked.append(ssl) or load(ssl))
    async with SafeHTTPClient(LOOPBACK) as client:
        assert (await client.post(f"{site.url}/ok", data=b"{}")).status == 200
    assert asked == [] and len(site.bodies) == 1


async def test_chunked_answer_is_read_whole(site):
    async with SafeHTTPClient(LOOPBACK) as client:
        response = await client.post(f"{site.url}/chunked", data=b"{}")
    assert response.status == 202 and response.body == b"queued for later"


@pytest.mark.parametrize(("path", "expected"), [("/gzip", b"z" * 5000), ("/deflate", b"accepted")])
async def test_compressed_answers_are_decoded(site, path, expected):
    async with SafeHTTPClient(LOOPBACK) as client:
        response = await client.post(f"{site.url}{path}", data=b"{}")
    assert response.body == expected and not response.truncated


@pytest.mark.parametrize("path", ["/big", "/gzip"])
async def test_oversized_answer_is_capped_and_the_client_goes_on(site, path):
    async with SafeHTTPClient(LOOPBACK, max_response_bytes=1000) as client:
        response = await client.post(f"{site.url}{path}", data=b"{}")
        assert len(response.body) == 1000 and response.truncated
        again = await client.post(f"{site.url}/ok", data=b"{}")
    assert again.body == b"ok" and not again.truncated


async def test_connection_close_answer_is_not_reused(site):
    async with SafeHTTPClient(LOOPBACK) as client:
        first = await client.post(f"{site.url}/close", data=b"{}")
        second = await client.post(f"{site.url}/ok", data=b"{}")
    assert (first.body, second.body) == (b"bye", b"ok")
    assert len(set(site.peers)) == 2


async def test_connection_limit_bounds_concurrent_posts(site):
    async with SafeHTTPClient(LOOPBACK, limit=2) as client:
        responses = await asyncio.gather(*(client.post(f"{site.url}/slow", data=b"{}") for _ in range(8)))
    assert all(r.status == 200 for r in responses)
    assert site.max_active <= 2
    assert len(set(site.peers)) <= 2


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(site):
    async with SafeHTTPClient(LOOPBACK) as client:
        with pytest.raises(ValueError, match="X-Team"):
            await client.post(f"{site.url}/ok", data=b"{}", headers={"X-Team": "crm\r\nX-Evil: 1"})
    assert site.bodies == []


async def test_interim_100_continue_is_skipped(raw_server):
    async def answer(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    url = await raw_server(answer)
    async with SafeHTTPClient(LOOPBACK) as client:
        response = await client.post(url, data=b"{}")
    assert response.status == 204 and response.body == b""


async def test_answer_without_length_ends_with_the_connection(raw_server):
    async def answer(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nthanks, stored")
        await writer.drain()

    url = await raw_server(answer)
    async with SafeHTTPClient(LOOPBACK) as client:
        response = await client.post(url, data=b"{}")
    assert response.status == 200 and response.body == b"thanks, stored"
    assert response.headers["content-type"] == "text/plain"


async def test_hang_up_without_an_answer_is_server_disconnected(raw_server):
    async def answer(reader, writer):
        await read_request(reader)

    url = await raw_server(answer)
    async with SafeHTTPClient(LOOPBACK) as client:
        with pytest.raises(ConnectionFailed) as info:
            await client.post(url, data=b"{}")
    assert info.value.reason == "server disconnected"


async def test_garbage_answer_is_a_malformed_response(raw_server):
    async def answer(reader, writer):
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    url = await raw_server(answer)
    async with SafeHTTPClient(LOOPBACK) as client:
        with pytest.raises(ConnectionFailed) as info:
            await client.post(url, data=b"{}", timeout=30)
    assert info.value.reason == "malformed response"


async def test_endless_headers_are_refused(raw_server):
    async def answer(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(20000):
            writer.write(f"X-Filler-{i}: {'a' * 20}\r\n".encode())
        await writer.drain()
        await asyncio.sleep(5)

    url = await raw_server(answer)
    async with SafeHTTPClient(LOOPBACK) as client:
        with pytest.raises(ConnectionFailed) as info:
            await client.post(url, data=b"{}", timeout=30)
    assert info.value.reason == "malformed response"


async def test_no_answer_within_the_timeout_is_a_timeout(raw_server):
    async def answer(reader, writer):
        await read_request(reader)
        await asyncio.sleep(5)

    url = await raw_server(answer)
    async with SafeHTTPClient(LOOPBACK) as client:
        with pytest.raises(RequestTimeout):
            await client.post(url, data=b"{}", timeout=0.3)


async def test_connection_closed_by_the_server_while_idle_is_replaced(raw_server):
    connections = []

    async def answer(reader, writer):
        connections.append(writer)
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # then hang up while the client keeps the connection for its next request

    url = await raw_server(answer)
    async with SafeHTTPClient(LOOPBACK) as client:
        assert (await client.post(url, data=b"{}")).body == b"ok"
        await asyncio.sleep(0.2)
        assert (await client.post(url, data=b"{}")).body == b"ok"
    assert len(connections) == 2


def test_the_same_exchanges_on_uvloop():
    """`hookline sender` and `hookline pool` run on uvloop, whose transports are not asyncio.Transport
    subclasses and whose connection_made runs only after create_connection has returned."""

    async def scenario() -> None:
        peers: list[object] = []

        async def ok(request: web.Request) -> web.Response:
            peers.append(request.transport.get_extra_info("peername"))
            body = gzip.compress(await request.read())
            return web.Response(body=body, headers={"Content-Encoding": "gzip"})

        app = web.Application()
        app.router.add_post("/ok", ok)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()

        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.close()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            await asyncio.sleep(5)

        rude = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        mute = await asyncio.start_server(silent, "127.0.0.1", 0)
        try:
            async with SafeHTTPClient(LOOPBACK, limit=2) as client:
                bodies = [f'{{"n":{i}}}'.encode() for i in range(6)]
                answers = await asyncio.gather(
                    *(client.post(f"http://127.0.0.1:{port}/ok", data=body) for body in bodies)
                )
                assert [a.body for a in answers] == bodies
                assert len(set(peers)) <= 2
                with pytest.raises(ConnectionFailed) as info:
                    await client.post(f"http://127.0.0.1:{rude.sockets[0].getsockname()[1]}/", data=b"{}")
                assert info.value.reason == "server disconnected"
                with pytest.raises(RequestTimeout):
                    port_ = mute.sockets[0].getsockname()[1]
                    await client.post(f"http://127.0.0.1:{port_}/", data=b"{}", timeout=0.3)
        finally:
            rude.close()
            mute.close()
            await runner.cleanup()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
        runner.run(scenario())
