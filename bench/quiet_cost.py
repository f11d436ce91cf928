"""What quiet Webhooks cost the bus: NATS requests/s of one pool replica serving N Webhooks that get no
events (issue 22 item 3; target: at most 10 requests/s for 1,000, i.e. 100 at 10,000).

nats-server runs with its monitoring port; its `/varz` `in_msgs` (messages the server received from
clients: pull requests, consumer-info requests, KV puts, acks) is read before and after a window in
which nothing but the replica talks to it. Beside it, a subscriber on `$JS.API.>` and `$KV.>` counts
them by kind, and the replica's CPU over the window (percent of one core).

    .venv/bin/python bench/quiet_cost.py [--webhooks 1000] [--settle 20] [--seconds 60]

`make bench` (bench/run.py) runs it with 1,000 Webhooks. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pool import POOL, POOL_KEY, QUIET_URL, Replica, cpu_seconds, wait_running, webhook_config  # noqa: E402

from hookline.operator.adapters.consumers import Consumers  # noqa: E402
from hookline.operator.adapters.pools import PoolDirectory, pool_entry  # noqa: E402
from hookline.sender import bus  # noqa: E402
from hookline.sender.bus.natsserver import EmbeddedNats, free_port  # noqa: E402
from hookline.sender.bus.poolproto import PoolKey, pool_bucket  # noqa: E402


async def varz(http: aiohttp.ClientSession, monitor: str) -> dict[str, Any]:
    async with http.get(f"{monitor}/varz") as response:
        return json.loads(await response.text())


def kind_of(subject: str) -> str:
    """`$JS.API.CONSUMER.INFO.<stream>.<name>` -> CONSUMER.INFO; `$KV.<bucket>.<key>` -> KV.<bucket>."""
    parts = subject.split(".")
    if subject.startswith("$JS.API."):
        return ".".join(parts[2:4])
    return ".".join(parts[:2])


async def quiet_cost(tmp: Path, webhooks: int, settle_seconds: float, seconds: float) -> dict[str, Any]:
    http_port = free_port()
    conf = tmp / "nats-monitor.conf"
    conf.write_text(f'http: "127.0.0.1:{http_port}"\n')
    monitor = f"http://127.0.0.1:{http_port}"
    with EmbeddedNats(tmp / "nats-quiet", log_file=tmp / "nats-quiet.log", config_file=conf) as nats:
        nc = await bus.connect(nats.url)
        js = nc.jetstream(timeout=30)
        await bus.ensure_stream(js, max_consumers=max(bus.DEFAULT_MAX_CONSUMERS, webhooks + 100))
        kv = await pool_bucket(js)
        consumers = Consumers(nats.url, timeout=30)
        directory = PoolDirectory(consumers, PoolKey(POOL_KEY))
        want: set[str] = set()
        for i in range(webhooks):  # the operator's order: the consumer first, then the entry
            cfg = webhook_config(nats.url, QUIET_URL, f"quiet-{i}", f"quiet-{i}", signed=False)
            await consumers.ensure(cfg)
            entry = pool_entry(cfg, None, PoolKey(POOL_KEY)).to_bytes()
            await directory.place(cfg.nats.consumer, entry, POOL, 0, None)
            want.add(cfg.nats.consumer)
        replica = Replica(tmp, nats.url, "quiet")
        by_kind: collections.Counter[str] = collections.Counter()

        async def count(msg: Any) -> None:
            by_kind[kind_of(msg.subject)] += 1

        try:
            took, running = await wait_running(kv, replica, want, within=max(120, webhooks * 0.6))
            if took is None:
                raise RuntimeError(f"only {running} of {webhooks} engines running")
            print(f"  {webhooks} quiet Webhooks running after {took:.1f}s; settling {settle_seconds:g}s")
            await asyncio.sleep(settle_seconds)
            subs = [await nc.subscribe(subject, cb=count) for subject in ("$JS.API.>", "$KV.>")]
            await nc.flush()
            async with aiohttp.ClientSession() as http:
                before, cpu, began = await varz(http, monitor), cpu_seconds(replica.pid), time.monotonic()
                by_kind.clear()
                await asyncio.sleep(seconds)
                after, span = await varz(http, monitor), time.monotonic() - began
            used = cpu_seconds(replica.pid) - cpu
            for sub in subs:
                await sub.unsubscribe()
        finally:
            replica.stop()
            await consumers.close()
            await nc.close()
    requests = after["in_msgs"] - before["in_msgs"]
    return {
        "webhooks": webhooks,
        "seconds": round(span, 1),
        "requests": requests,
        "requests_per_s": round(requests / span, 2),
        "by_kind_per_s": {kind: round(n / span, 2) for kind, n in by_kind.most_common()},
        "replica_cpu_percent": round(used * 100 / span, 1),
    }


def report_rows(result: dict[str, Any] | None, previous: str = "") -> list[str]:
    if not result:
        return []
    kinds = ", ".join(f"{kind} {rate:g}" for kind, rate in result["by_kind_per_s"].items())
    before = f" (before: {previous})" if previous else ""
    return [
        f"| NATS requests/s of {result['webhooks']:,} quiet pooled Webhooks, one replica "
        f"(nats-server /varz in_msgs over {result['seconds']:g}s; bench/quiet_cost.py) | "
        f"{result['requests_per_s']:g}/s{before}; by kind/s: {kinds or 'none'}; replica CPU "
        f"{result['replica_cpu_percent']:g} % of a core |",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--webhooks", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds after all run, before counting")
    parser.add_argument("--seconds", type=float, default=60.0, help="the counting window")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hookline-quiet-") as tmp:
        result = asyncio.run(quiet_cost(Path(tmp), args.webhooks, args.settle, args.seconds))
    print(json.dumps(result, indent=2))
    print("\n".join(report_rows(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
