"""Delivery health on the Webhook (issue 10): the operator, a real nats-server, a real sender (run from
the ConfigMap the operator wrote) and a customer server switched between healthy, failing, timing out
and slow. What `kubectl get wh` and `kubectl describe wh` show a platform team.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import yaml
from aiohttp import web
from operator_helpers import (
    CONFIGMAPS,
    WEBHOOKS,
    condition,
    create_webhook,
    serve_on_loopback,
    token_of,
    wait_for,
)
from prometheus_client import CollectorRegistry

from hookline.sender import bus
from hookline.sender.cmd.sender import SenderRuntime
from hookline.sender.delivery.settings import EngineSettings
from hookline.sender.model.config import parse_sender_config
from hookline.sender.model.events import parse_event
from hookline.sender.observe.metrics import SenderMetrics
from hookline.sender.transport.egress import EgressPolicy

TOKEN = "q-s3cret-token"
HEADER_SECRET = "h-s3cret-value"


@dataclass
class Customer:
    """The customer's server: the ownership file on GET, POSTs answered with ``status`` after ``delay``."""

    status: int = 200
    delay: float = 0.0
    files: dict[str, str] = field(default_factory=dict)
    posts: int = 0
    base: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        if request.method == "GET":
            text = self.files.get(request.path)
            return web.Response(status=404) if text is None else web.Response(text=text)
        await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.posts += 1
        return web.Response(status=self.status, text="ok" if self.status < 300 else "database down")


@pytest.fixture
async def customer() -> AsyncIterator[Customer]:
    server = Customer()
    runner, server.base = await serve_on_loopback(server.handle)
    yield server
    await runner.cleanup()


def delivery_of(cluster, name):
    return ((cluster.get(WEBHOOKS, name) or {}).get("status") or {}).get("delivery") or {}


def delivering(cluster, name):
    return condition(cluster.get(WEBHOOKS, name), "Delivering")


async def run_sender_from_configmap(cluster, name, stop: asyncio.Event) -> SenderRuntime:
    """What the sender pod would run: the config the operator put in the Webhook's ConfigMap."""
    configmap = await wait_for(lambda: cluster.get(CONFIGMAPS, f"{name}-sender"), "the sender ConfigMap")
    cfg = parse_sender_config(yaml.safe_load(configmap["data"]["sender.yaml"]))
    nc = await bus.connect(cfg.nats.url)
    metrics = SenderMetrics(CollectorRegistry())
    policy = EgressPolicy(["127.0.0.0/8"], allow_http=True)
    runtime = await SenderRuntime.create(
        nc, cfg, policy, metrics, None, settings=EngineSettings(watch_interval_seconds=0.2)
    )

    async def run() -> None:
        try:
            await runtime.run(stop)
        finally:
            await nc.close()

    asyncio.get_running_loop().create_task(run())
    await wait_for(lambda: runtime.engine.readiness() is None, "the sender consuming")
    return runtime


async def publish(js, count: int, first: int) -> None:
    for i in range(first, first + count):
        event = parse_event({"id": f"ev{i}", "type": "open", "recipient": "a@b.example", "ip": "192.0.2.1"})
        await js.publish(event.subject, event.to_bytes(), headers={"Nats-Msg-Id": event.id})


async def test_delivering_moves_through_failing_and_back_with_events_and_no_secrets(
    cluster, customer, start_operator, nats_server
):
    await start_operator(delivery_status_interval=0.5)
    url = f"{customer.base}/hooks/h.php?token={TOKEN}"
    await create_webhook(
        cluster, "health", url=url, events=["open"], format="json", headers={"X-Api-Key": HEADER_SECRET}
    )
    token = await wait_for(lambda: token_of(cluster, "health"), "a token")
    customer.files[f"/hooks/hookline-{token}.txt"] = token
    stop = asyncio.Event()
    runtime = await run_sender_from_configmap(cluster, "health", stop)
    nc = await bus.connect(nats_server.url)
    js = nc.jetstream()
    try:
        # Healthy: the last 2xx shows, Delivering is True.
        await publish(js, 3, 0)
        await wait_for(lambda: delivery_of(cluster, "health").get("lastSuccessAt"), "lastSuccessAt")
        await wait_for(lambda: delivering(cluster, "health").get("status") == "True", "Delivering=True")

        # The receiver fails: Delivering=False/Failing says what it answered, and an Event says so.
        customer.status = 500
        await publish(js, 5, 100)
        failing = await wait_for(
            lambda: (
                delivering(cluster, "health").get("reason") == "Failing" and delivering(cluster, "health")
            ),
            "Delivering=False/Failing",
        )
        assert failing["status"] == "False" and "HTTP 500: database down" in failing["message"]
        facts = delivery_of(cluster, "health")
        assert facts["lastFailure"] == "HTTP 500: database down" and facts["failingSince"]
        assert facts["recentFailures"] >= 3 and facts["lastFailureAt"] >= facts["lastSuccessAt"]
        await wait_for(
            lambda: [e for e in cluster.events_for("health") if e.get("reason") == "Failing"],
            "a Failing Event",
        )

        # Fixed again: the retries (after 5 s) succeed and it reports Delivering once more.
        customer.status = 200
        await publish(js, 10, 200)
        resumed = await wait_for(
            lambda: delivering(cluster, "health").get("status") == "True" and delivering(cluster, "health"),
            "Delivering=True again",
        )
        assert resumed["reason"] == "Delivering"
        await wait_for(lambda: delivery_of(cluster, "health").get("pending") == 0, "nothing pending")
        assert "failingSince" not in delivery_of(cluster, "health")

        # Slow: events arrive faster than one request in flight drains them.
        runtime.engine.reporter.tally.backlog_trend_seconds = 2.0
        customer.delay = 0.2
        for batch in range(30):
            await publish(js, 20, 1000 + batch * 20)
            await asyncio.sleep(0.1)
            if delivering(cluster, "health").get("reason") == "Backlogged":
                break
        backlogged = await wait_for(
            lambda: (
                delivering(cluster, "health").get("reason") == "Backlogged" and delivering(cluster, "health")
            ),
            "Delivering=False/Backlogged",
        )
        assert "events wait" in backlogged["message"]
        assert delivery_of(cluster, "health")["pending"] >= 100
    finally:
        customer.delay = 0
        stop.set()
        await nc.close()

    # Nothing secret reached the status or an Event: not the URL's query, not a header value.
    shown = json.dumps(cluster.get(WEBHOOKS, "health")["status"]) + json.dumps(cluster.events_for("health"))
    assert TOKEN not in shown and HEADER_SECRET not in shown, shown


async def test_a_timing_out_receiver_is_failing_with_timeouts(cluster, customer, start_operator, nats_server):
    await start_operator(delivery_status_interval=0.5)
    await create_webhook(
        cluster,
        "slowpoke",
        url=f"{customer.base}/hooks/s.php",
        events=["open"],
        delivery={"timeoutSeconds": 1},
    )
    token = await wait_for(lambda: token_of(cluster, "slowpoke"), "a token")
    customer.files[f"/hooks/hookline-{token}.txt"] = token
    stop = asyncio.Event()
    await run_sender_from_configmap(cluster, "slowpoke", stop)
    customer.delay = 2.0
    nc = await bus.connect(nats_server.url)
    try:
        await publish(nc.jetstream(), 4, 0)
        failing = await wait_for(
            lambda: (
                delivering(cluster, "slowpoke").get("reason") == "Failing" and delivering(cluster, "slowpoke")
            ),
            "Delivering=False/Failing",
        )
        assert "timeout" in failing["message"]
        assert delivery_of(cluster, "slowpoke")["lastFailure"].startswith("timeout")
    finally:
        customer.delay = 0
        stop.set()
        await nc.close()
