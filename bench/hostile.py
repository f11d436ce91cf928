"""Ingest under hostile clients (issues 9 and 22): `/healthz` p99 and valid-request p99 beside normal load.

A real nats-server and `hookline ingest` process on loopback. Normal load (valid batches of 10 events
at a steady pace, and a `/healthz` probe) runs alone ("quiet"), then beside an attacker process
("hostile") that sends decompression bombs (1 MB of gzip inflating to 1 GiB), requests whose error
bodies would be huge (100,000 `{}`), and slow connections trickling their headers. Target:
valid-request p99 within 2x of the quiet figure.

Quiet and attacked windows alternate for `--rounds` rounds (the machine's other load moves both alike);
the figures are the medians. Everything (client, nats-server, ingest, attacker) shares two CPUs, as on
the 2-core machine the figures come from. The attacker runs at nice `--attacker-nice` (15: attackers
are other machines in real life, so they get leftover CPU); it reports its CPU time and the time it
waited for a CPU, so a figure within 2x shows it came from ingest's design, not from starving the
attackers (`--attacker-nice 0` gives them an equal share).

    .venv/bin/python bench/hostile.py [--seconds 6] [--rate 200] [--rounds 3] [--attacker-nice 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nats.js import api  # noqa: E402
from run import peak_rss_mib, wait_http  # noqa: E402

from hookline.sender import bus  # noqa: E402
from hookline.sender.bus.natsserver import EmbeddedNats, free_port, terminate  # noqa: E402

HOOKLINE = [sys.executable, "-m", "hookline.cli"]
HEADERS = {"Content-Type": "application/json"}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def valid_batch(i: int) -> bytes:
    return json.dumps(
        [
            {
                "type": "open",
                "recipient": f"r{i}-{j}@example.com",
                "ip": "192.0.2.7",
                "database": "newsletter",
            }
            for j in range(10)
        ]
    ).encode()


def gzip_bomb(inflated: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b" " * (1024 * 1024)
    parts = [compressor.compress(b"[")]
    parts.extend(compressor.compress(chunk) for _ in range(inflated // len(chunk)))
    parts.append(compressor.compress(b"]"))
    parts.append(compressor.flush())
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------------------
# The attacker (its own process, so that its CPU does not count against the measuring client)


async def attack(base: str, seconds: float, slow: int) -> None:
    bomb = gzip_bomb(1024 * 1024 * 1024)
    empties = b"[" + b",".join([b"{}"] * 100_000) + b"]"
    url = f"{base}/v1/events"
    host, port = base.removeprefix("http://").split(":")
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    counts = {"bomb": 0, "errors": 0, "slow": 0}

    async def flood(http: aiohttp.ClientSession, kind: str, body: bytes, headers: dict[str, str]) -> None:
        """POST ``body`` again and again until the deadline, counting the answers under ``kind``."""
        while time.monotonic() < deadline:
            try:
                async with http.post(url, data=body, headers=headers) as response:
                    await response.read()
                counts[kind] += 1
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)

    def bombs(http: aiohttp.ClientSession) -> Any:
        return flood(http, "bomb", bomb, {**HEADERS, "Content-Encoding": "gzip"})

    def errors(http: aiohttp.ClientSession) -> Any:
        return flood(http, "errors", empties, HEADERS)

    async def trickle() -> None:
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                await asyncio.sleep(0.1)
                continue
            counts["slow"] += 1
            try:
                for byte in b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n":
                    if time.monotonic() > deadline or reader.at_eof():
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.5)
            except OSError:
                pass
            finally:
                writer.close()

    kinds = os.environ.get("HOOKLINE_HOSTILE_KINDS", "bombs,errors,slow").split(",")
    started, waited = time.monotonic(), _runqueue_wait_seconds()
    cpu = time.process_time()
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(
            *(bombs(http) for _ in range(2) if "bombs" in kinds),
            *(errors(http) for _ in range(2) if "errors" in kinds),
            *(trickle() for _ in range(slow) if "slow" in kinds),
        )
    own = {
        "wall_s": round(time.monotonic() - started, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
        "cpu_wait_s": round(_runqueue_wait_seconds() - waited, 2),
    }
    print(json.dumps({**counts, **own}), flush=True)


def _runqueue_wait_seconds() -> float:
    """Time this process's main thread was runnable but waited for a CPU (/proc schedstat)."""
    try:
        with open("/proc/self/schedstat") as stat:
            return int(stat.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


# ---------------------------------------------------------------------------------------------------------
# The measurement


async def normal_load(base: str, seconds: float, rate: float) -> dict[str, list[float]]:
    """Valid requests at `rate`/s and a /healthz probe every 20 ms; their latencies in ms."""
    valid: list[float] = []
    health: list[float] = []
    refused = 0
    deadline = time.monotonic() + seconds
    timeout = aiohttp.ClientTimeout(total=30)

    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def one(i: int) -> None:
            nonlocal refused
            started = time.perf_counter()
            async with http.post(f"{base}/v1/events", data=valid_batch(i), headers=HEADERS) as response:
                await response.read()
                refused += response.status != 202
            valid.append((time.perf_counter() - started) * 1000)

        async def probe() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                async with http.get(f"{base}/healthz") as response:
                    await response.read()
                health.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.02)

        prober = asyncio.create_task(probe())
        tasks: list[asyncio.Task[None]] = []
        i = 0
        start = time.monotonic()
        while time.monotonic() < deadline:
            tasks.append(asyncio.create_task(one(i)))
            i += 1
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        await asyncio.gather(*tasks)
        await prober
    return {"valid": valid, "health": health, "refused": [float(refused)]}


def summary(load: dict[str, list[float]]) -> dict[str, float]:
    return {
        "valid_p50_ms": round(percentile(load["valid"], 0.5), 2),
        "valid_p99_ms": round(percentile(load["valid"], 0.99), 2),
        "healthz_p99_ms": round(percentile(load["health"], 0.99), 2),
        "requests": float(len(load["valid"])),
        "refused": load["refused"][0],
    }


def two_cpus() -> set[int]:
    """The first two CPUs this process may use: the bench's processes share them."""
    return set(sorted(os.sched_getaffinity(0))[:2])


async def attacked(
    base: str, seconds: float, rate: float, slow: int, nice: int
) -> tuple[dict[str, float], dict[str, float]]:
    """One attacked window: the attacker process at full strength, normal load measured beside it."""
    attacker = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--attack",
        base,
        "--seconds",
        str(seconds + 2),
        "--slow",
        str(slow),
        stdout=asyncio.subprocess.PIPE,
        # Attackers are other machines in real life: by default they get leftover CPU only.
        preexec_fn=lambda: os.nice(nice),
    )
    assert attacker.stdout is not None
    await attacker.stdout.readline()  # "ready": its bomb is built
    await asyncio.sleep(1.0)  # let the attack reach full strength before measuring
    hostile = summary(await normal_load(base, seconds, rate))
    out, _ = await attacker.communicate()
    return hostile, json.loads(out.decode().strip().splitlines()[-1])


async def measure(
    seconds: float = 6.0, rate: float = 200.0, slow: int = 300, rounds: int = 3, attacker_nice: int = 15
) -> dict[str, Any]:
    pinned = os.sched_getaffinity(0)
    os.sched_setaffinity(0, two_cpus())  # inherited by nats-server, ingest and the attacker
    try:
        return await _measure(seconds, rate, slow, rounds, attacker_nice)
    finally:
        os.sched_setaffinity(0, pinned)


async def _measure(seconds: float, rate: float, slow: int, rounds: int, attacker_nice: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hookline-hostile-") as tmp_name:
        tmp = Path(tmp_name)
        with EmbeddedNats(tmp / "nats", log_file=tmp / "nats.log") as nats:
            nc = await bus.connect(nats.url)
            js = nc.jetstream()
            await bus.ensure_stream(js)
            # A Webhook's consumer, so that accepted events are really stored (interest retention).
            await js.add_consumer(
                bus.STREAM, api.ConsumerConfig(durable_name="bench", ack_policy=api.AckPolicy.EXPLICIT)
            )
            await nc.close()
            port = free_port()
            env = {**os.environ, "HOOKLINE_NATS_URL": nats.url}
            env.pop("HOOKLINE_INGEST_TOKEN", None)
            ingest = _spawn_ingest(port, env, tmp / "ingest.log")
            base = f"http://127.0.0.1:{port}"
            windows: list[dict[str, Any]] = []
            try:
                async with aiohttp.ClientSession() as http:
                    await wait_http(http, f"{base}/readyz", ingest)
                await normal_load(base, 1.0, rate)  # warm-up
                for _ in range(rounds):
                    quiet = summary(await normal_load(base, seconds, rate))
                    hostile, counts = await attacked(base, seconds, rate, slow, attacker_nice)
                    ratio = round(hostile["valid_p99_ms"] / quiet["valid_p99_ms"], 2)
                    windows.append({"quiet": quiet, "hostile": hostile, "attack": counts, "ratio": ratio})
                rss = peak_rss_mib(ingest.pid)
            finally:
                terminate(ingest)
    middle = sorted(windows, key=lambda w: w["ratio"])[len(windows) // 2]
    attack_seconds = sum(w["attack"].get("wall_s", seconds + 2) for w in windows)
    return {
        "quiet": median_summary([w["quiet"] for w in windows]),
        "hostile": median_summary([w["hostile"] for w in windows]),
        "attack": middle["attack"],
        "attack_per_s": {
            kind: round(sum(w["attack"][kind] for w in windows) / attack_seconds, 1)
            for kind in ("bomb", "errors")
        },
        # Shares of the attacker's wall time: on a CPU, and runnable but waiting for one (starved).
        "attacker_cpu": {
            key: round(sum(w["attack"].get(f"{key}_s", 0.0) for w in windows) / attack_seconds, 2)
            for key in ("cpu", "cpu_wait")
        },
        "ratio": round(statistics.median(w["ratio"] for w in windows), 2),
        "rounds": windows,
        "rate": rate,
        "attacker_nice": attacker_nice,
        "cpus": len(two_cpus()),
        "ingest_peak_rss_mib": None if rss is None else round(rss, 1),
    }


def median_summary(summaries: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(s[key] for s in summaries), 2) for key in summaries[0]}


def _spawn_ingest(port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        command = [*HOOKLINE, "ingest", "--listen", f"127.0.0.1:{port}", "--insecure-no-auth"]
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rate", type=float, default=200.0, help="valid requests/s (10 events each)")
    parser.add_argument("--slow", type=int, default=300, help="trickling connections")
    parser.add_argument("--rounds", type=int, default=3, help="quiet/attacked window pairs; medians")
    parser.add_argument("--attacker-nice", type=int, default=15, help="the attacker's nice value")
    parser.add_argument("--attack", metavar="BASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack:
        asyncio.run(attack(args.attack, args.seconds, args.slow))
        return 0
    result = asyncio.run(measure(args.seconds, args.rate, args.slow, args.rounds, args.attacker_nice))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
