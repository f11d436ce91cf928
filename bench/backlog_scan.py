"""What one full scan of the backlog loop costs (operator/loops/backlog.py): listing every consumer of
HOOKLINE_EVENTS (pages of 256) and turning them into the policy's states, with N Webhooks.

A fresh nats-server gets the events stream and N consumers made as senders make them (three event
types, a database scope and the redrive subject each). Reported: requests, bytes of JSON answered,
the time of one scan and the Python memory it allocates at its peak (tracemalloc), and the progress
table the loop keeps between scans.

    .venv/bin/python bench/backlog_scan.py [--consumers 1000 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nats_consumers import webhook_config  # noqa: E402

from hookline.operator.adapters.backlog import consumer_state  # noqa: E402
from hookline.operator.rules.backlog import track_progress, webhook_of_consumer  # noqa: E402
from hookline.sender import bus  # noqa: E402
from hookline.sender.bus.backlog import CONSUMER_PAGE, list_consumers  # noqa: E402
from hookline.sender.bus.natsserver import EmbeddedNats  # noqa: E402


async def measure(url: str, count: int) -> dict[str, float]:
    nc = await bus.connect(url)
    js = nc.jetstream(timeout=30)
    await bus.ensure_stream(js)
    for i in range(count):
        await bus.ensure_consumer(js, webhook_config(i))
    answered = [0]
    original = nc.request

    async def counting(*args, **kwargs):  # the JSON bytes the server answers
        msg = await original(*args, **kwargs)
        answered[0] += len(msg.data)
        return msg

    nc.request = counting  # type: ignore[method-assign]
    tracemalloc.start()
    started = time.perf_counter()
    infos = await list_consumers(js)
    states = [consumer_state(i, w, {}) for i in infos if (w := webhook_of_consumer(i.name, {})) is not None]
    scan = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    del infos
    before = tracemalloc.get_traced_memory()[0]
    progress = track_progress({}, states, time.time())
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    await nc.close()
    return {
        "consumers": len(states),
        "requests": -(-len(states) // CONSUMER_PAGE),
        "answered_mib": answered[0] / 2**20,
        "scan_seconds": scan,
        "peak_mib": peak / 2**20,
        "progress_bytes_each": kept / max(1, len(progress)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consumers", type=int, nargs="+", default=[1000, 5000])
    args = parser.parse_args()
    for count in args.consumers:
        with EmbeddedNats(Path(f"/tmp/hookline-backlog-scan-{count}")) as server:
            result = asyncio.run(measure(server.url, count))
        print(
            f"{result['consumers']:>6} consumers: {result['requests']:.0f} requests, "
            f"{result['answered_mib']:.1f} MiB answered, scan {result['scan_seconds']:.2f} s, "
            f"peak {result['peak_mib']:.1f} MiB, progress table "
            f"{result['progress_bytes_each']:.0f} bytes each"
        )


if __name__ == "__main__":
    main()
