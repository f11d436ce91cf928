"""nats-server CPU per acknowledged event on HOOKLINE_EVENTS with 1 and with 100 Webhook consumers.

Why a pool replica over 100 Webhooks delivers less per second than one dedicated sender on a small
machine (bench/pool.py): the server's own cost per ack grows with the consumers on the stream
(interest retention), whoever holds them. Each run: a fresh nats-server and the stream as ingest
makes it; `consumers` durable consumers with hookline-shaped filters; `total` events published to
one consumer's filter (or spread over all of them); then pulled and acked, and the server's CPU time
over the ack phase divided by the events. Loopback only.

Two variants say where the growth comes from (issue 22): the stream with limits retention instead of
interest (no interest check of every consumer on each ack), and the spread events published in
blocks (each consumer's events contiguous) instead of interleaved (each consumer's next event lies
past the other 99 consumers' events). A third measures the remedy that keeps interest retention: the
100 consumers split over 10 interest streams (partitions), events still interleaved.

    .venv/bin/python bench/nats_ack_cost.py [--events 20000] [--variants] [--consumers 1 1000 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from nats.js import api

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hookline.sender import bus  # noqa: E402
from hookline.sender.bus.natsserver import EmbeddedNats  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    consumers: int,
    spread: bool,
    total: int,
    *,
    limits: bool = False,
    blocked: bool = False,
    partitions: int = 1,
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="hookline-bench-ack-") as tmp,
        EmbeddedNats(Path(tmp) / "n") as nats,
    ):
        assert nats.proc is not None
        nc = await bus.connect(nats.url)
        js = nc.jetstream()
        if limits:  # the variant: nothing is removed on ack, so no consumer's interest is checked
            await js.add_stream(
                name=bus.STREAM, subjects=["hookline.events.>"], retention=api.RetentionPolicy.LIMITS
            )
        elif partitions > 1:  # the variant: interest streams each holding 1/partitions of the consumers
            for k in range(partitions):
                await js.add_stream(
                    name=f"{bus.STREAM}_P{k}",
                    subjects=[f"p{k}.hookline.events.>"],
                    retention=api.RetentionPolicy.INTEREST,
                )
        else:
            await bus.ensure_stream(js)

        def subject(i: int) -> str:  # consumer i's events (its partition's stream when partitioned)
            prefix = f"p{i % partitions}." if partitions > 1 else ""
            return f"{prefix}hookline.events.open.db{i}"

        subs = []
        for i in range(consumers):
            stream = f"{bus.STREAM}_P{i % partitions}" if partitions > 1 else bus.STREAM
            config = api.ConsumerConfig(
                durable_name=f"c{i}",
                ack_policy=api.AckPolicy.EXPLICIT,
                filter_subject=f"{subject(i)}.>",
                max_ack_pending=10_000,
            )
            await js.add_consumer(stream, config)
            subs.append(await js.pull_subscribe_bind(f"c{i}", stream))
        targets = consumers if spread else 1
        payload = b"x" * 300
        for start in range(0, total, 500):
            if blocked:  # each consumer's events contiguous in the stream
                subjects = [f"{subject((start + j) * targets // total)}._" for j in range(500)]
            else:
                subjects = [f"{subject((start + j) % targets)}._" for j in range(500)]
            await asyncio.gather(*(js.publish(subject, payload) for subject in subjects))

        async def drain(sub: Any, count: int) -> None:
            got = 0
            while got < count:
                for msg in await sub.fetch(min(256, count - got), timeout=10):
                    await msg.ack()
                    got += 1

        before, started = cpu_seconds(nats.proc.pid), time.perf_counter()
        await asyncio.gather(*(drain(subs[i], total // targets) for i in range(targets)))
        elapsed = time.perf_counter() - started
        used = cpu_seconds(nats.proc.pid) - before
        await nc.close()
    return {
        "consumers": consumers,
        "spread": spread,
        "acks_per_second": round(total / elapsed),
        "server_cpu_ms_per_ack": round(used * 1000 / total, 3),
    }


async def main(total: int, variants: bool, counts: list[int] | None = None) -> None:
    print("| consumers on the stream | events go to | acks/s | nats-server CPU per ack |")
    print("|---|---|---|---|")
    runs: list[tuple[int, bool, dict[str, bool], str]] = [
        (1, False, {}, ""),
        (100, False, {}, ""),
        (100, True, {}, ""),
    ]
    if counts:  # how the cost grows with the consumers on the stream, all events for one of them
        runs = [(count, False, {}, "") for count in counts]
    if variants:
        runs += [
            (1, False, {"limits": True}, ", limits retention"),
            (100, False, {"limits": True}, ", limits retention"),
            (100, True, {"blocked": True}, ", published in blocks"),
            (100, True, {"partitions": 10}, ", 10 interest streams of 10 consumers each"),
        ]
    for consumers, spread, how, note in runs:
        row = await measure(consumers, spread, total, **how)
        where = (f"all {consumers}" if spread else "one of them") + note
        print(f"| {consumers} | {where} | {row['acks_per_second']} | {row['server_cpu_ms_per_ack']} ms |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--variants", action="store_true", help="limits, blocks, partitions")
    parser.add_argument(
        "--consumers", type=int, nargs="+", help="only these consumer counts, events for one (1 1000 10000)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.events, args.variants, args.consumers))
