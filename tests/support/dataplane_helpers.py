"""Helpers for the data-plane tests: a real aiohttp receiver on 127.0.0.1, sender configs, waiting."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import harness
from aiohttp import web
from nats.js import api
from prometheus_client import CollectorRegistry

from hookline.sender import bus
from hookline.sender.bus.natsserver import free_port
from hookline.sender.cmd.sender import SenderRuntime
from hookline.sender.delivery.settings import EngineSettings
from hookline.sender.model.config import SenderConfig, consumer_name, parse_sender_config
from hookline.sender.model.signing import parse_secret
from hookline.sender.model.wire import decode_form
from hookline.sender.observe.health import bound_port, start_site
from hookline.sender.observe.metrics import SenderMetrics
from hookline.sender.transport.egress import EgressPolicy


async def add_witness(js: Any, name: str = "witness") -> None:
    """A consumer interested in every event: the stream has interest retention, so without one an
    event nobody subscribed to is not kept (tests that count stored events add this)."""
    config = api.ConsumerConfig(durable_name=name, ack_policy=api.AckPolicy.EXPLICIT)
    await js.add_consumer(bus.STREAM, config)


SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks documentation's example key


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def fields(self) -> dict[str, Any]:
        """The body as the receiver's application sees it (PHP-style form or JSON)."""
        import json

        if self.headers.get("Content-Type", "").startswith("application/json"):
            return json.loads(self.body)
        return decode_form(self.body)


@dataclass
class Receiver:
    """A customer endpoint: records every request; `status` decides the answer (switchable)."""

    status: int = 200
    delay: float = 0.0  # seconds before answering (a slow customer server)
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> Receiver:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = await start_site(app, "127.0.0.1", port)
        self.url = f"http://127.0.0.1:{bound_port(self._runner)}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.status
        self.requests.append(Received(request.path, dict(request.headers), body, status))
        return web.Response(status=status, text="ok" if status < 300 else "nope")

    def ids(self) -> list[str]:
        """`webhook-id` of every request, in arrival order, repeats included."""
        return [r.headers["webhook-id"] for r in self.requests]

    def delivered(self) -> dict[str, Received]:
        """The request that was answered 2xx, per event id."""
        return {r.headers["webhook-id"]: r for r in self.requests if 200 <= r.answered < 300}


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    within: float = 60.0,
    what: str = "condition",
    diagnostics: Callable[[], str | Awaitable[str]] | None = None,
) -> None:
    """Poll `condition` (plain or async) until true; generous default for a loaded 2-core CI machine.
    `diagnostics` (plain or async) adds what it returns (a process's log) to the error when time runs out."""
    await harness.wait_until(condition, within=within, what=what, interval=0.02, diagnostics=diagnostics)


async def wait_until_ready(
    http: aiohttp.ClientSession,
    url: str,
    proc: subprocess.Popen[bytes] | None = None,
    within: float = 60.0,
    *,
    status: int = 200,
) -> None:
    """Poll `url` until it answers `status` (200: ready; 503: no longer ready)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before {url} was ready")
        try:
            async with http.get(url) as response:
                if response.status == status:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} within {within:g}s")


def sender_config(
    nats_url: str,
    url: str,
    *,
    name: str = "shop",
    namespace: str = "default",
    events: list[str] | None = None,
    secret_file: str | None = None,
    listen: str | None = None,
    **spec: Any,
) -> SenderConfig:
    doc: dict[str, Any] = {
        "webhook": {"namespace": namespace, "name": name},
        "spec": {"url": url, "events": events or ["open"], **spec},
        "nats": {"url": nats_url, "consumer": consumer_name(namespace, name)},
        "listen": listen or f"127.0.0.1:{free_port()}",
        "allowNetworks": ["127.0.0.0/8"],
        "allowHttp": True,
    }
    if secret_file:
        doc["signingSecretFile"] = secret_file
        doc["spec"]["signing"] = {"secretRef": {"name": "hook-secret", "key": "secret"}}
    return parse_sender_config(doc)


async def sender_runtime(nc: Any, cfg: SenderConfig, *, watch_interval: float = 0.2) -> SenderRuntime:
    """An in-process sender for `cfg` on `nc` (dev egress: loopback allowed), its consumer in place."""
    runtime = await SenderRuntime.create(
        nc,
        cfg,
        EgressPolicy.for_dev(),
        SenderMetrics(CollectorRegistry()),
        parse_secret(SECRET),
        settings=EngineSettings(watch_interval_seconds=watch_interval),
    )
    await bus.ensure_consumer(nc.jetstream(), cfg)
    return runtime
