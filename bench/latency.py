"""Ingest-to-receiver latency at a steady event rate (issue 4: p99 under 100 ms at 500 events/s).

Producers post batches to `hookline ingest` at a fixed pace; one `hookline sender` delivers to an
aiohttp receiver in this process. Latency of an event = its arrival at the receiver minus the start
of the POST that carried it, both on this process's monotonic clock.

    .venv/bin/python bench/latency.py [--rate 500] [--seconds 20] [--batch 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from aiohttp import web
from stack import Attempt, Receiver, click, percentile, stack, wait_until


class BatchReceiver(Receiver):
    """The harness receiver, one attempt per event of a JSON batch (webhook-id is the batch id)."""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        arrived = time.monotonic()
        for item in json.loads(body):
            self.attempts.append(Attempt(item["id"], arrived, 200, arrived, (item["id"],)))
        return web.Response(status=200, text="ok")


async def measure(
    rate: float = 500.0, seconds: float = 20.0, batch: int = 10, delivery_batch: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`batch`: events per POST to ingest; `delivery_batch`: the Webhook's spec.delivery.batch."""
    async with stack() as harness:
        if delivery_batch:
            receiver = await BatchReceiver(name="batch-receiver").start()
            harness.receivers.append(receiver)
            extra = {"batch": delivery_batch}
        else:
            receiver = await harness.receiver()
            extra = {}
        await harness.webhook("latency", receiver, maxInFlight=50, maxRequestsPerSecond=10000, **extra)
        await harness.ingest_events(200, prefix="warmup")  # connections, JIT-free but caches warm
        await wait_until(lambda: receiver.successes >= 200, what="warm-up delivered")
        receiver.attempts.clear()

        posted_at: dict[str, float] = {}
        interval = batch / rate
        total = int(rate * seconds)
        started = time.monotonic()
        pending: set[asyncio.Task[Any]] = set()
        rejected = 0

        async def post(events: list[dict[str, Any]]) -> None:
            nonlocal rejected
            status, _ = await harness.post(events)
            if status != 202:
                rejected += len(events)

        for n, first in enumerate(range(0, total, batch)):
            # Keep the pace from the start time, not from the previous post (no drift under load).
            await asyncio.sleep(max(0.0, started + n * interval - time.monotonic()))
            events = [click(f"lat-{i:07d}") for i in range(first, min(total, first + batch))]
            now = time.monotonic()
            for event in events:
                posted_at[event["id"]] = now
            task = asyncio.create_task(post(events))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        send_seconds = time.monotonic() - started
        await wait_until(
            lambda: len(receiver.delivered_ids) >= total - rejected, within=120, what="all delivered"
        )
        arrivals: dict[str, float] = {}
        for attempt in receiver.attempts:
            if attempt.status == 200:
                arrivals.setdefault(attempt.event_id, attempt.arrived)
        latencies = sorted((arrivals[i] - posted_at[i]) * 1000 for i in arrivals if i in posted_at)
        return {
            "benchmark": "ingest_to_receiver_latency",
            "delivery_batch": delivery_batch,
            "target_rate_per_second": rate,
            "achieved_post_rate_per_second": round(total / send_seconds, 1),
            "events": len(latencies),
            "rejected": rejected,
            "p50_ms": round(percentile(latencies, 0.50), 2),
            "p90_ms": round(percentile(latencies, 0.90), 2),
            "p99_ms": round(percentile(latencies, 0.99), 2),
            "max_ms": round(latencies[-1], 2),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=500.0, help="events per second (default 500)")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to send (default 20)")
    parser.add_argument("--batch", type=int, default=10, help="events per POST (default 10)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.rate, args.seconds, args.batch)), indent=2))


if __name__ == "__main__":
    main()
