"""Process plumbing shared by sender, ingest and dev: `/metrics`, `/healthz`, `/readyz`, sites, signals.

`/healthz` answers 200 while the process serves requests at all (liveness); `/readyz` answers 200
only when the process can do its work (connected to NATS), so Kubernetes stops routing to it otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry

from hookline.sender.metrics import CONTENT_TYPE_LATEST, render

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

Readiness = Callable[[], str | None]
"""Returns None when ready, else a short reason shown in the /readyz body."""


def add_health_routes(app: web.Application, registry: CollectorRegistry, readiness: Readiness) -> None:
    async def healthz(_: web.Request) -> web.Response:
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


async def start_site(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving `app` on host:port; the caller cleans up with `await runner.cleanup()`."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (useful with port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the site is not listening on a TCP port")


def run_until_signal(main: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    """Run `main(stop)` on a fresh loop; SIGTERM and SIGINT set `stop` so it can shut down cleanly."""

    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return int(await main(stop))

    return asyncio.run(runner())


def run_service(
    main: Callable[[asyncio.Event], Awaitable[int]],
    exit_codes: Mapping[type[Exception], int],
    log: logging.Logger,
) -> int:
    """`run_until_signal` for a service command: INFO logging, and an expected error (its message says
    what to fix) logged as one line and turned into the exit code of its first matching type."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        return run_until_signal(main)
    except tuple(exit_codes) as exc:
        log.error("%s", exc)
        return next(code for kind, code in exit_codes.items() if isinstance(exc, kind))
