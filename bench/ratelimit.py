"""Observed request rate of one Webhook with two sender replicas vs its maxRequestsPerSecond
(issue 4: within 5 % of the limit).

A backlog larger than the limit can drain is ingested; two `hookline sender` replicas (config
`replicas: 2`, so each takes half the limit) deliver it to one aiohttp receiver on 127.0.0.1.
The rate is counted over the steady part: the first second (each replica's small bucket) and
the tail are left out.

    .venv/bin/python bench/ratelimit.py [--limit 100] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from stack import stack, wait_until


async def measure(limit: float = 100.0, seconds: float = 30.0) -> dict[str, Any]:
    events = int(limit * seconds)
    async with stack() as harness:
        receiver = await harness.receiver()
        webhook = await harness.webhook(
            "ratelimit", receiver, replicas=2, maxRequestsPerSecond=limit, maxInFlight=50
        )
        await harness.ingest_events(events, prefix="rate", batch=500)
        await wait_until(
            lambda: receiver.successes >= events, within=seconds * 4 + 60, what="backlog delivered"
        )
        arrivals = sorted(a.arrived for a in receiver.attempts)
        steady = [t for t in arrivals if arrivals[0] + 1.0 <= t <= arrivals[-1] - 1.0]
        if len(steady) < 2:  # over in about two seconds: no limit in force; rate over everything
            steady = arrivals
        window = steady[-1] - steady[0]
        observed = (len(steady) - 1) / window if window > 0 else float("inf")
        per_replica = []
        for sender in webhook.senders:
            assert harness.http is not None
            per_replica.append(
                await sender.metric(harness.http, "hookline_delivery_attempts_total", outcome="success")
            )
        # Busiest one-second window anywhere (bursts a receiver would feel).
        peak, start = 0, 0
        for end, t in enumerate(arrivals):
            while arrivals[start] <= t - 1.0:
                start += 1
            peak = max(peak, end - start + 1)
        return {
            "benchmark": "rate_limit_two_replicas",
            "limit_per_second": limit,
            "requests": len(arrivals),
            "steady_window_seconds": round(window, 2),
            "observed_per_second": round(observed, 2),
            "deviation_percent": round((observed - limit) / limit * 100, 2),
            "busiest_second": peak,
            "requests_per_replica": per_replica,
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=float, default=100.0, help="maxRequestsPerSecond (default 100)")
    parser.add_argument("--seconds", type=float, default=30.0, help="backlog size in seconds at the limit")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.limit, args.seconds)), indent=2))


if __name__ == "__main__":
    main()
