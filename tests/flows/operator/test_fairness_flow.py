"""Per-namespace fairness of the operator's outbound client (issue 18, item 4), against the running
operator on the strict API emulator: a tenant whose receivers hang holds at most its share
(operator.outboundPerNamespace) of the client, so another namespace's verification and WebhookTest
finish promptly; a WebhookTest over the size limits is refused before anything is built."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web
from operator_helpers import TESTS, WEBHOOKS, api_path, serve_on_loopback, wait_for
from test_webhooktest_flows import create_test, finished, verified_webhook

SHARE = 2
SLOW_WEBHOOKS = 6  # more than the whole client (4 connections here) would take at once


@dataclass
class HangingSite:
    """A tenant's server that takes every request and never answers (until released)."""

    in_flight: int = 0
    most: int = 0
    seen: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen += 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        return web.Response(status=404)


async def test_a_namespace_with_hanging_receivers_cannot_starve_another(cluster, site, start_operator):
    hanging = HangingSite()
    runner, base = await serve_on_loopback(hanging.handle)
    try:
        # Four connections for everyone (the chart's default is 100): without shares, six hanging
        # checks of one tenant would hold all of them for check_timeout.
        await start_operator(outbound_per_namespace=SHARE, outbound_connections=4, check_timeout=30.0)
        for i in range(SLOW_WEBHOOKS):
            body = {
                "apiVersion": "hookline.io/v1alpha1",
                "kind": "Webhook",
                "metadata": {"name": f"stuck-{i}", "namespace": "slow"},
                "spec": {"url": f"{base}/hooks/{i}.php", "events": ["click"]},
            }
            await cluster.call("POST", api_path(WEBHOOKS, namespace="slow"), body)
        await wait_for(lambda: hanging.in_flight == SHARE, "the slow namespace's checks hanging")

        loop = asyncio.get_running_loop()
        started = loop.time()
        await verified_webhook(cluster, site, "fast")
        await create_test(cluster, "t-fast", "fast", recipient="a@b.example", original="https://x.example/")
        status = await wait_for(lambda: finished(cluster, "t-fast"), "the other namespace's test", within=20)
        took = loop.time() - started
        print(
            f"[fairness] namespace shop verified and tested in {took:.1f} s while namespace slow had "
            f"{hanging.in_flight} requests hanging (at most {hanging.most} at once, share {SHARE})"
        )
        assert status["phase"] == "Succeeded", status
        assert took < 20 and hanging.in_flight == SHARE and hanging.most == SHARE
    finally:
        hanging.release.set()
        await runner.cleanup()


async def test_a_webhooktest_over_the_size_limits_is_refused_naming_the_field(cluster, site, start_operator):
    await start_operator()
    await verified_webhook(cluster, site, "sized")
    data = {"recipient": "a@b.example", "original": "https://x.example/", "tags": ["t" * (100 * 1024)]}
    body = {
        "apiVersion": "hookline.io/v1alpha1",
        "kind": "WebhookTest",
        "metadata": {"name": "t-big", "namespace": "shop"},
        "spec": {"webhook": "sized", "event": "click", "data": data, "batch": 100},
    }
    await cluster.call("POST", api_path(TESTS), body)
    status = await wait_for(lambda: finished(cluster, "t-big"), "the test to finish")
    assert (status["phase"], status["reason"]) == ("Failed", "TooLarge")
    assert "spec.batch (100)" in status["message"] and "8388608 bytes" in status["message"]
    assert "lower spec.batch to at most 81" in status["message"]
    assert site.posts() == []  # nothing was sent
