"""Peak resident memory of one `hookline sender` under load (issue 4: under 100 MiB).

A backlog of events is ingested, one sender delivers it to an aiohttp receiver on 127.0.0.1 with
many requests in flight, and the sender's peak RSS is read from /proc/<pid>/status (VmHWM, the
kernel's high-water mark, so no sampling can miss the peak).

    .venv/bin/python bench/rss.py [--events 50000] [--in-flight 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from stack import stack, wait_until


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


async def measure(events: int = 50_000, in_flight: int = 100) -> dict[str, Any]:
    async with stack() as harness:
        receiver = await harness.receiver()
        webhook = await harness.webhook("rss", receiver, maxInFlight=in_flight, maxRequestsPerSecond=10000)
        proc = webhook.sender.proc
        assert proc is not None
        idle_kib = status_kib(proc.pid, "VmRSS")
        started = time.monotonic()
        await harness.ingest_events(events, prefix="rss", batch=500)
        await wait_until(
            lambda: receiver.successes >= events, within=600, what="backlog delivered", interval=0.5
        )
        seconds = time.monotonic() - started
        return {
            "benchmark": "sender_peak_rss",
            "events": events,
            "max_in_flight": in_flight,
            "idle_rss_mib": round(idle_kib / 1024, 1),
            "peak_rss_mib": round(status_kib(proc.pid, "VmHWM") / 1024, 1),
            "end_rss_mib": round(status_kib(proc.pid, "VmRSS") / 1024, 1),
            "deliveries_per_second": round(events / seconds, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000, help="backlog size (default 50000)")
    parser.add_argument("--in-flight", type=int, default=100, help="maxInFlight (default 100)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.events, args.in_flight)), indent=2))


if __name__ == "__main__":
    main()
