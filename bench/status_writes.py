"""API writes per Webhook per minute that delivery health costs, at steady state (issue 10).

The operator runs in-process against the strict API emulator (tests/support/strict_api.py) with a
real nats-server; N Webhooks are verified through a loopback site. Then every Webhook's "sender"
reports a changed tally every 5 s (a busy receiver that keeps failing and recovering), as real
senders do through the HOOKLINE_HEALTH bucket, and the writes the operator makes to the API are
counted over a minute; then the reports stop changing (idle Webhooks) and they are counted again.

    .venv/bin/python bench/status_writes.py [--webhooks 100] [--minutes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import kmock
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))

from operator_helpers import (  # noqa: E402
    NS,
    OPERATOR_TOKEN,
    WEBHOOKS,
    RunningOperator,
    api_path,
    declare_resources,
    operator_config,
    start_token_site,
)
from strict_api import StrictCluster  # noqa: E402

from hookline.sender import bus  # noqa: E402
from hookline.sender.bus.attemptlog import health_bucket, health_key  # noqa: E402
from hookline.sender.bus.natsserver import EmbeddedNats  # noqa: E402
from hookline.sender.delivery.retry import classify  # noqa: E402
from hookline.sender.model.deliveryhealth import DeliveryTally  # noqa: E402

WRITES = {"POST", "PUT", "PATCH", "DELETE"}


class CountingCluster(StrictCluster):
    """Counts the writes to Webhooks (status included) as they pass."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.writes: list[tuple[float, str]] = []

    async def _handle(self, request: kmock.Request) -> web.StreamResponse:
        method = str(getattr(request.method, "value", request.method)).upper()
        if method in WRITES and "/webhooks" in str(request.url):
            self.writes.append((time.monotonic(), str(request.url.path)))
        return await super()._handle(request)


async def report_loop(js: Any, names: list[str], stop: asyncio.Event, changing: asyncio.Event) -> None:
    kv = await health_bucket(js)
    tallies = {name: DeliveryTally(NS, name) for name in names}
    step = 0
    while not stop.is_set():
        now = time.time()
        for name, tally in tallies.items():
            if changing.is_set():
                tally.record(now, classify(500 if step % 4 == 0 else 200), b"database down")
                tally.observe_pending(now, 10 + step % 7)
            await kv.put(health_key(NS, name), tally.report(now).to_bytes())
        step += 1
        await asyncio.sleep(5.0)


async def measure(webhooks: int, minutes: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hookline-status-writes-") as tmp:
        async with CountingCluster() as cluster, kmock.Server(cluster):
            declare_resources(cluster)
            server = str(cluster.url).rstrip("/")

            def login(**_: Any) -> Any:
                import kopf

                return kopf.ConnectionInfo(
                    server=server, insecure=True, default_namespace=NS, token=OPERATOR_TOKEN
                )

            site_runner, base, _ = await start_token_site()
            with EmbeddedNats(Path(tmp) / "nats") as nats:
                config = replace(operator_config(nats.url), delivery_status_interval=30.0)
                operator = await RunningOperator(config, login).start()
                names = [f"wh{i:04d}" for i in range(webhooks)]
                for name in names:
                    body = {
                        "apiVersion": "hookline.io/v1alpha1",
                        "kind": "Webhook",
                        "metadata": {"name": name, "namespace": NS},
                        "spec": {"url": f"{base}/hooks/{name}.php", "events": ["open"]},
                    }
                    await cluster.call("POST", api_path(WEBHOOKS), body)
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    verified = sum(
                        1
                        for name in names
                        if ((cluster.get(WEBHOOKS, name) or {}).get("status") or {})
                        .get("sender", {})
                        .get("deployment")
                    )
                    if verified == webhooks:
                        break
                    await asyncio.sleep(0.5)
                print(f"{webhooks} Webhooks verified; busy reports every 5 s ...", flush=True)
                nc = await bus.connect(nats.url)
                stop, changing = asyncio.Event(), asyncio.Event()
                changing.set()
                reporter = asyncio.create_task(report_loop(nc.jetstream(), names, stop, changing))
                await asyncio.sleep(40)  # warm-up: the first report of each is written at once
                start = time.monotonic()
                await asyncio.sleep(60 * minutes)
                busy = sum(1 for t, _ in cluster.writes if t >= start)
                print("reports stop changing (idle) ...", flush=True)
                changing.clear()
                await asyncio.sleep(40)
                start = time.monotonic()
                await asyncio.sleep(60 * minutes)
                idle = sum(1 for t, _ in cluster.writes if t >= start)
                stop.set()
                await reporter
                await nc.close()
                await operator.stop()
            await site_runner.cleanup()
    return {
        "webhooks": webhooks,
        "busy_writes_per_webhook_minute": busy / webhooks / minutes,
        "idle_writes_per_webhook_minute": idle / webhooks / minutes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--webhooks", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=1.0)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.webhooks, args.minutes))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
