"""100 Webhooks served by one `hookline pool` replica against the same 100 served by 100 dedicated
`hookline sender` processes (the other deployment a platform team would choose between), on one
stream, one nats-server and one receiver (issue 22, item 2: is the pool what is slower, or is it
what 100 Webhooks cost?).

Each mode: fresh consumers for 100 signed JSON Webhooks (maxInFlight and maxRequestsPerSecond as
bench/run.py's sender row, each its own database and path); the deliverers started and waited for
until all run (the pool's roster lists every engine; every sender answers /readyz), so start-up is
not measured; then `--events` events published interleaved over the 100 databases; measured at the
receiver from its first request to its last, with the CPU per delivery of the deliverers (summed over
their processes), nats-server and the receiver over that window. Alternating rounds, best of each.
Loopback only; 100 senders take ~6 GiB of RAM.

    .venv/bin/python bench/fleet.py [--events 20000] [--webhooks 100] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pool import (  # noqa: E402
    POOL,
    POOL_KEY,
    Replica,
    cpu_seconds,
    wait_running,
    webhook_config,
)
from run import HOOKLINE, SECRET, rate, sample_event, spawn, stop, wait_count, wait_http  # noqa: E402

from hookline.operator.adapters.consumers import Consumers  # noqa: E402
from hookline.operator.adapters.pools import PoolDirectory, pool_entry  # noqa: E402
from hookline.sender import bus  # noqa: E402
from hookline.sender.bus.natsserver import EmbeddedNats, free_port  # noqa: E402
from hookline.sender.bus.poolproto import PoolKey, pool_bucket  # noqa: E402
from hookline.sender.model.config import SenderConfig  # noqa: E402
from hookline.sender.model.events import parse_event  # noqa: E402
from hookline.sender.model.signing import parse_secret  # noqa: E402


def listen_ports(count: int, low: int = 20000, high: int = 32767) -> list[int]:
    """Free ports below the kernel's ephemeral range (32768-60999 here): a port picked by binding port 0
    is an ephemeral one, which a sender's own outgoing connections (to NATS, to the receiver) may take
    before the sender listens on it: one of 100 senders once exited with its port in use."""
    found: list[int] = []
    with contextlib.ExitStack() as held:
        for port in range(low, high):
            sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            found.append(port)
            if len(found) == count:
                return found
    raise RuntimeError(f"fewer than {count} free ports in {low}-{high}")


def configs(tmp: Path, nats_url: str, http_base: str, webhooks: int, tag: str) -> list[SenderConfig]:
    secret_file = tmp / "secret"
    secret_file.write_text(SECRET)
    ports = listen_ports(webhooks)
    return [
        webhook_config(
            nats_url,
            f"{http_base}/hooks/{tag}-{i}",
            f"{tag}-{i}",
            f"{tag}-{i}",
            signed=True,
            secret_file=secret_file,
        ).model_copy(update={"listen": f"127.0.0.1:{ports[i]}"})
        for i in range(webhooks)
    ]


async def start_pool(tmp: Path, nats_url: str, cfgs: list[SenderConfig], tag: str) -> tuple[list[Any], Any]:
    """One replica with every Webhook placed on it, once its roster lists them all as running."""
    consumers = Consumers(nats_url, timeout=30)
    directory = PoolDirectory(consumers, PoolKey(POOL_KEY))
    signing = parse_secret(SECRET)
    for cfg in cfgs:
        await directory.place(
            cfg.nats.consumer, pool_entry(cfg, signing, PoolKey(POOL_KEY)).to_bytes(), POOL, 0, None
        )
    replica = Replica(tmp, nats_url, tag)
    nc = await bus.connect(nats_url)
    kv = await pool_bucket(nc.jetstream(timeout=30))
    want = {cfg.nats.consumer for cfg in cfgs}
    took, running = await wait_running(kv, replica, want, 300, since=replica.started)
    if took is None:
        raise RuntimeError(f"the pool replica ran {running} of {len(want)} engines within 300 s")
    await nc.close()

    async def cleanup() -> None:
        replica.stop()
        for cfg in cfgs:
            with contextlib.suppress(Exception):
                await directory.remove(cfg.nats.consumer, (POOL, 0))
        await consumers.close()

    return [replica.proc], cleanup


async def start_senders(
    tmp: Path, http: aiohttp.ClientSession, cfgs: list[SenderConfig], tag: str
) -> tuple[list[Any], Any]:
    """One `hookline sender` per Webhook, once each answers /readyz."""
    procs = []
    for cfg in cfgs:
        path = tmp / f"fleet-{cfg.webhook.name}.yaml"
        path.write_text(yaml.safe_dump(cfg.to_document()))
        procs.append(
            spawn([*HOOKLINE, "sender", "--config", str(path)], tmp / f"fleet-{cfg.webhook.name}.log")
        )
    for cfg, proc in zip(cfgs, procs, strict=True):
        await wait_http(http, f"http://{cfg.listen}/readyz", proc, 300)

    async def cleanup() -> None:
        for proc in procs:
            stop(proc)

    return procs, cleanup


async def one_mode(
    tmp: Path,
    nats: EmbeddedNats,
    http_base: str,
    receiver_pid: int,
    total: int,
    webhooks: int,
    mode: str,
    tag: str,
) -> dict[str, Any]:
    assert nats.proc is not None
    cfgs = configs(tmp, nats.url, http_base, webhooks, tag)
    nc = await bus.connect(nats.url)
    js = nc.jetstream(timeout=30)
    await bus.ensure_stream(js)
    for cfg in cfgs:
        await bus.ensure_consumer(js, cfg)
    events = []
    for i in range(total):
        raw = sample_event(i, tag)
        raw["database"] = f"{tag}-{i % webhooks}"
        events.append(parse_event(raw))
    async with aiohttp.ClientSession() as http:
        if mode == "pool":
            procs, cleanup = await start_pool(tmp, nats.url, cfgs, tag)
        else:
            procs, cleanup = await start_senders(tmp, http, cfgs, tag)
        try:
            async with http.post(f"{http_base}/reset") as response:
                await response.read()
            pids = {"deliverers": [p.pid for p in procs], "nats": [nats.proc.pid], "receiver": [receiver_pid]}
            mark = {what: sum(cpu_seconds(pid) for pid in group) for what, group in pids.items()}
            for start in range(0, total, 500):
                await bus.publish_events(nc, js, events[start : start + 500], ack_timeout=30)
            stats = await wait_count(http, http_base, total, within=300)
            used = {what: sum(cpu_seconds(pid) for pid in group) - mark[what] for what, group in pids.items()}
        finally:
            await cleanup()
            for cfg in cfgs:
                with contextlib.suppress(Exception):
                    await bus.delete_consumer(js, cfg.nats.consumer)
            await nc.close()
    return {
        "mode": mode,
        "rate": rate(stats),
        "cpu_ms_per_delivery": {what: round(seconds * 1000 / total, 3) for what, seconds in used.items()},
    }


async def run_fleet(total: int, webhooks: int, rounds: int) -> dict[str, Any]:
    """The best round of each mode, and the pool's rate over the fleet's."""
    with tempfile.TemporaryDirectory(prefix="hookline-bench-fleet-") as name:
        tmp = Path(name)
        port = free_port()
        receiver = spawn([sys.executable, str(ROOT / "bench" / "receiver.py"), str(port)])
        http_base = f"http://127.0.0.1:{port}"
        best: dict[str, dict[str, Any]] = {}
        rates: dict[str, list[int]] = {"pool": [], "dedicated": []}
        try:
            async with aiohttp.ClientSession() as http:
                await wait_http(http, f"{http_base}/stats", receiver)
            with EmbeddedNats(tmp / "nats", log_file=tmp / "nats.log") as nats:
                for round_ in range(1, rounds + 1):
                    for mode in ("pool", "dedicated"):
                        print(
                            f"round {round_}/{rounds}: {mode}, {total} events over {webhooks} Webhooks ...",
                            flush=True,
                        )
                        row = await one_mode(
                            tmp, nats, http_base, receiver.pid, total, webhooks, mode, f"{mode[0]}{round_}"
                        )
                        cpu = row["cpu_ms_per_delivery"]
                        print(f"  {row['rate']:.0f} deliveries/s; CPU ms per delivery {cpu}", flush=True)
                        rates[mode].append(round(row["rate"]))
                        if mode not in best or row["rate"] > best[mode]["rate"]:
                            best[mode] = row
        finally:
            stop(receiver)
    return {
        "events": total,
        "webhooks": webhooks,
        "pool": best["pool"],
        "dedicated": best["dedicated"],
        "rates": rates,
        "ratio": round(best["pool"]["rate"] / best["dedicated"]["rate"], 2),
    }


def report_rows(result: dict[str, Any]) -> list[str]:
    """`make bench`'s row (bench/run.py)."""
    pool, fleet = result["pool"], result["dedicated"]
    n = result["webhooks"]
    return [
        f"| deliveries/s of {n} Webhooks: one `hookline pool` replica / {n} dedicated `hookline sender`s "
        f"(bench/fleet.py; {result['events']} events published once all run) | {pool['rate']:.0f} / "
        f"{fleet['rate']:.0f} (pool {result['ratio']:.2f}x the fleet; CPU ms per delivery, deliverers / "
        f"nats-server / receiver: {' / '.join(str(v) for v in pool['cpu_ms_per_delivery'].values())} against "
        f"{' / '.join(str(v) for v in fleet['cpu_ms_per_delivery'].values())}) |"
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--webhooks", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print("\n".join(report_rows(asyncio.run(run_fleet(args.events, args.webhooks, args.rounds)))))
