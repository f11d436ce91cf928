"""What the recovery stream costs: publishes/s into HOOKLINE_EVENTS with and without its mirror
HOOKLINE_EVENTS_RECOVERY, and the bytes the mirror keeps per event (README, "Retention").

Each run: a fresh nats-server, the events stream as ingest makes it (interest retention) with one
Webhook consumer, with or without the recovery stream; `events` events of `size` bytes published
500 at a time (each settled by the server's answer, as ingest does), then, with the mirror, the wait
until it holds them all. Loopback only.

    .venv/bin/python bench/nats_recovery_cost.py [--events 40000] [--size 800]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hookline.sender import bus  # noqa: E402
from hookline.sender.bus.natsserver import EmbeddedNats  # noqa: E402
from hookline.sender.bus.publish import Publisher  # noqa: E402
from hookline.sender.bus.recovery import RECOVERY_STREAM, remove_recovery_stream  # noqa: E402

CHUNK = 500


async def measure(mirror: bool, events: int, size: int) -> tuple[float, float | None]:
    """Publishes/s, and bytes the mirror keeps per event (None without it)."""
    with (
        tempfile.TemporaryDirectory(prefix="hookline-bench-recovery-") as tmp,
        EmbeddedNats(store_dir=tmp) as server,
    ):
        nc = await bus.connect(server.url)
        try:
            js = nc.jetstream()
            await bus.ensure_stream(js)
            if not mirror:
                await remove_recovery_stream(js)
            await js.add_consumer(
                bus.STREAM,
                bus.api.ConsumerConfig(
                    durable_name="bench",
                    ack_policy=bus.api.AckPolicy.EXPLICIT,
                    filter_subject="hookline.events.>",
                ),
            )
            await asyncio.sleep(1.5)  # the mirror's reader on the stream is in place
            publisher = Publisher(nc)
            await publisher.start()
            body = b"x" * size
            started = time.perf_counter()
            for first in range(0, events, CHUNK):
                futures = [
                    await publisher.publish("hookline.events.click._._", body, f"bench-{i:032d}")
                    for i in range(first, min(events, first + CHUNK))
                ]
                await asyncio.gather(*futures)
            rate = events / (time.perf_counter() - started)
            if not mirror:
                return rate, None
            for _ in range(1200):  # the mirror catches up within a minute
                state = (await js.stream_info(RECOVERY_STREAM)).state
                if state.last_seq >= events:
                    return rate, state.bytes / events
                await asyncio.sleep(0.05)
            raise SystemExit(f"{RECOVERY_STREAM} did not catch up within a minute")
        finally:
            await nc.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--size", type=int, default=800, help="bytes per event body")
    args = parser.parse_args()
    for mirror in (False, True, False, True):
        rate, per_event = await measure(mirror, args.events, args.size)
        kept = "" if per_event is None else f", the mirror keeps {per_event:.0f} bytes per event"
        print(f"recovery stream {'on ' if mirror else 'off'}: {rate:,.0f} publishes/s{kept}")


if __name__ == "__main__":
    asyncio.run(main())
