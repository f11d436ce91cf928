"""Process plumbing shared by sender, ingest and dev: `/metrics`, `/healthz`, `/readyz`, sites, signals.

`/healthz` answers 200 while the process serves requests at all (liveness); `/readyz` answers 200
only when the process can do its work (connected to NATS), so Kubernetes stops routing to it otherwise.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import cast

from aiohttp import web
from prometheus_client import CollectorRegistry

from hookline.sender.observe.logs import configure_logging
from hookline.sender.observe.metrics import CONTENT_TYPE_LATEST, render, use_loop_values

Readiness = Callable[[], str | None]
"""Returns None when ready, else a short reason shown in the /readyz body."""


def add_health_routes(
    app: web.Application,
    registry: CollectorRegistry,
    readiness: Readiness,
    *,
    liveness: Readiness | None = None,
) -> None:
    """`liveness` (None: always alive) fails /healthz, so Kubernetes restarts a process that cannot
    recover by itself (its NATS connection closed for good)."""

    async def healthz(_: web.Request) -> web.Response:
        reason = liveness() if liveness is not None else None
        if reason is not None:
            return web.Response(status=503, text=f"not alive: {reason}\n")
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        reason = readiness()
        if reason is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {reason}\n")

    async def metrics(_: web.Request) -> web.Response:
        body = render(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


def parse_listen(value: str, default_port: int) -> tuple[str, int]:
    """'HOST:PORT', ':PORT', 'PORT' or '[::1]:PORT' to (host, port); a clear error otherwise."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or "0.0.0.0"
    if not port_text:
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        msg = f"listen address {value!r}: port {port_text!r} is not a number (use HOST:PORT)"
        raise ValueError(msg) from None
    if not 0 <= port <= 65535:
        raise ValueError(f"listen address {value!r}: port {port} is out of range 0-65535")
    return host, port


class _Refuse(asyncio.Protocol):
    """A connection over the limit: one short 503, then closed (nothing of the request is read)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.WriteTransport, transport).write(  # uvloop's transports are not its subclasses
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
            b"Connection: close\r\n\r\n"
        )
        transport.close()


class _CappedServer:
    """aiohttp's protocol factory with an upper bound on open connections."""

    def __init__(self, server: web.Server, max_connections: int) -> None:
        self._server = server
        self._max = max_connections
        self.refused = 0

    def __call__(self) -> asyncio.Protocol:
        if len(self._server.connections) >= self._max:
            self.refused += 1
            return _Refuse()
        return self._server()

    def __getattr__(self, name: str) -> object:
        return getattr(self._server, name)


class _CappedRunner(web.AppRunner):
    def __init__(self, app: web.Application, max_connections: int, **kwargs: object) -> None:
        super().__init__(app, **kwargs)  # type: ignore[arg-type]
        self._max_connections = max_connections

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _CappedServer(server, self._max_connections)  # type: ignore[return-value]


async def start_site(
    app: web.Application,
    host: str,
    port: int,
    *,
    max_connections: int | None = None,
    idle_timeout: float | None = None,
    auto_decompress: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> web.AppRunner:
    """Start serving `app` on host:port; the caller cleans up with `await runner.cleanup()`.

    `max_connections` bounds open connections (more get a 503 and are closed); `idle_timeout` closes
    a connection that has not sent a whole request's headers, or sat idle between requests, that long.
    Bodies are not inflated by aiohttp (it would inflate without bound, on the event loop, even for a
    refused request): a handler that takes compressed bodies inflates them itself (ingest/body.py's inflate).
    """
    options: dict[str, object] = {"access_log": None, "handle_signals": False}
    if idle_timeout is not None:
        options["keepalive_timeout"] = idle_timeout
    options["auto_decompress"] = auto_decompress
    runner: web.AppRunner
    if max_connections is not None:
        runner = _CappedRunner(app, max_connections, **options)
    else:
        runner = web.AppRunner(app, **options)  # type: ignore[arg-type]
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
    await site.start()
    return runner


async def wait_first(*events: asyncio.Event) -> None:
    """Return as soon as any of the events is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (useful with port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the site is not listening on a TCP port")


LOOP_ENV = "HOOKLINE_EVENT_LOOP"  # "asyncio" keeps the standard loop where uvloop would be used


def loop_factory(fast: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop for `fast` (the delivery processes, CPU-bound on small messages: 6-10 % less CPU
    per delivery, bench/profile_sender.py), unless HOOKLINE_EVENT_LOOP=asyncio or uvloop is missing."""
    if not fast or os.environ.get(LOOP_ENV, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


# Young-generation collections after this many net allocations (CPython's default is 700), and older
# generations ten times rarer than CPython's; see `settle_garbage_collector`.
GC_THRESHOLDS = (20_000, 50, 100)


def settle_garbage_collector() -> None:
    """For the delivery processes: what was loaded at start-up (modules, schemas, config) is frozen out
    of the cycle collector, and collections are made rarer. A sender holds thousands of messages in
    flight, each a handful of objects; with CPython's thresholds the collector ran every 700
    allocations and walked them all again and again: 2-4 us of CPU per event of a batch of 100
    (bench/run.py's batched rows). Memory is still freed by reference counting as before; only cycles
    wait longer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_until_signal(main: Callable[[asyncio.Event], Awaitable[int]], *, fast_loop: bool = False) -> int:
    """Run `main(stop)` on a fresh loop (uvloop's with `fast_loop`, see `loop_factory`); SIGTERM and
    SIGINT set `stop` so it can shut down cleanly."""

    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return int(await main(stop))

    if fast_loop:
        use_loop_values()  # the delivery processes update their metrics from the loop's thread only
        settle_garbage_collector()
    with asyncio.Runner(loop_factory=loop_factory(fast_loop)) as loop_runner:
        return loop_runner.run(runner())


def run_service(
    main: Callable[[asyncio.Event], Awaitable[int]],
    exit_codes: Mapping[type[Exception], int],
    log: logging.Logger,
    log_format: str | None = None,
    *,
    fast_loop: bool = False,
) -> int:
    """`run_until_signal` for a service command: INFO logging in ``log_format`` (--log-format, else
    HOOKLINE_LOG_FORMAT), and an expected error (its message says what to fix) logged as one line
    and turned into the exit code of its first matching type."""
    try:
        configure_logging(log_format)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return run_until_signal(main, fast_loop=fast_loop)
    except tuple(exit_codes) as exc:
        log.error("%s", exc)
        return next(code for kind, code in exit_codes.items() if isinstance(exc, kind))
