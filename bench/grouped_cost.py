"""What storing events in groups would save on the delivery path (issue 22, item 1): the reader's and
nats-server's CPU per event to pull, decode and acknowledge N events stored one message per event (as
ingest stores them) against the same events stored G to a message (one message per request and subject
group, the design weighed in the README, "Benchmarks"; not built).

Each run: a fresh nats-server and the events stream as ingest makes it; one consumer filtered on the
events' subject; the events published (one message each, or G per message as newline-separated event
JSON, so every event keeps its own bytes); then read through the sender's own feed (`MessageFeed`,
capacity 1,000), each event decoded (`Event.from_bytes`) and each message acknowledged through the
connection's outbox, as the engine does. Measured over the read phase: this process's CPU (the reader,
on asyncio's loop) and nats-server's, per event. No HTTP: this is the bus's share only. Loopback only.

    .venv/bin/python bench/grouped_cost.py [--events 40000] [--groups 1 10 100]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pool import cpu_seconds, webhook_config  # noqa: E402
from run import sample_event  # noqa: E402

from hookline.sender import bus  # noqa: E402
from hookline.sender.bus.natsserver import EmbeddedNats  # noqa: E402
from hookline.sender.model.events import Event, parse_event  # noqa: E402


async def measure(total: int, group: int) -> dict[str, Any]:
    events = [parse_event(sample_event(i, f"g{group}")) for i in range(total)]
    with (
        tempfile.TemporaryDirectory(prefix="hookline-bench-group-") as tmp,
        EmbeddedNats(Path(tmp) / "n") as nats,
    ):
        assert nats.proc is not None
        nc = await bus.connect(nats.url)
        js = nc.jetstream(timeout=30)
        await bus.ensure_stream(js)
        # The bench's click events go to the database "newsletter"; this Webhook's consumer reads them.
        cfg = webhook_config(nats.url, "http://127.0.0.1:9/unused", "grouped", "newsletter", signed=False)
        await bus.ensure_consumer(js, cfg)
        subject = events[0].subject
        for start in range(0, total, group * 50):
            chunk = events[start : start + group * 50]
            bodies = [
                b"\n".join(e.to_bytes() for e in chunk[i : i + group]) for i in range(0, len(chunk), group)
            ]
            await asyncio.gather(*(js.publish(subject, body) for body in bodies))
        messages = -(-total // group)
        feed = bus.MessageFeed(nc, cfg.nats.consumer, 1000)
        outbox = bus.outbox_of(nc)
        cpu, server, started = time.process_time(), cpu_seconds(nats.proc.pid), time.perf_counter()
        await feed.start()
        decoded = 0
        for _ in range(messages):
            msg = await feed.queue.get()
            assert msg is not None
            for line in msg.data.split(b"\n"):
                Event.from_bytes(line)
                decoded += 1
            await outbox.ack((msg,))
            feed.release()
        await outbox.flush()
        elapsed = time.perf_counter() - started
        reader_cpu = time.process_time() - cpu
        await feed.stop()
        info = await js.consumer_info(bus.STREAM, cfg.nats.consumer)
        await nc.close()
        server_used = cpu_seconds(nats.proc.pid) - server
    assert decoded == total
    return {
        "group": group,
        "messages": messages,
        "events_per_second": round(total / elapsed),
        "reader_us_per_event": round(reader_cpu * 1e6 / total, 2),
        "server_us_per_event": round(server_used * 1e6 / total, 2),
        "ack_floor": info.ack_floor.stream_seq,
    }


async def main(total: int, groups: list[int]) -> None:
    print("| events per message | messages | events/s read | reader CPU / event | nats-server CPU / event |")
    print("|---|---|---|---|---|")
    for group in groups:
        row = await measure(total, group)
        print(
            f"| {group} | {row['messages']} | {row['events_per_second']} | {row['reader_us_per_event']} us "
            f"| {row['server_us_per_event']} us |",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=40000)
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 10, 100])
    args = parser.parse_args()
    asyncio.run(main(args.events, args.groups))
