"""What one hostile request costs ingest, in CPU, by thread: the event loop (which also serves every
valid request), ingest's other threads, and its worker process. CPU time, not latency, so it holds on
a busy machine where bench/hostile.py's p99s do not.

A real nats-server and `hookline ingest` on loopback; the requests of bench/hostile.py (a gzip bomb of
1 MB inflating to 1 GiB, 100,000 `{}`) and one valid batch of 10 events, each sent `--requests` times
one after another; CPU from /proc (schedstat) before and after, per request.

    .venv/bin/python bench/hostile_cost.py [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from hostile import HEADERS, _spawn_ingest, gzip_bomb, valid_batch  # noqa: E402
from run import wait_http  # noqa: E402

from hookline.sender import bus  # noqa: E402
from hookline.sender.bus.natsserver import EmbeddedNats, free_port, terminate  # noqa: E402


def _cpu_seconds(task_dir: str) -> float:
    """A thread's time on a CPU: the scheduler's own count (schedstat), exact where utime/stime are
    sampled at timer ticks (and so overcharge a process that wakes on its own timers)."""
    return int(Path(task_dir, "schedstat").read_text().split()[0]) / 1e9


def snapshot(pid: int) -> tuple[float, float, float]:
    """CPU seconds of (the event loop thread, ingest's other threads, its child processes' threads)."""
    loop = threads = children = 0.0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):  # a thread gone meanwhile
            used = _cpu_seconds(f"/proc/{pid}/task/{task}")
            if task == str(pid):
                loop += used
            else:
                threads += used
            for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
                for child_task in os.listdir(f"/proc/{child}/task"):
                    children += _cpu_seconds(f"/proc/{child}/task/{child_task}")
    return loop, threads, children


async def measure(requests: int = 300) -> dict[str, Any]:
    bodies = {
        "bomb": (gzip_bomb(1024**3), {**HEADERS, "Content-Encoding": "gzip"}),
        "errors": (b"[" + b",".join([b"{}"] * 100_000) + b"]", HEADERS),
        "valid": (valid_batch(1), HEADERS),
    }
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hookline-hostile-cost-") as tmp_name:
        tmp = Path(tmp_name)
        with EmbeddedNats(tmp / "nats") as nats:
            nc = await bus.connect(nats.url)
            await bus.ensure_stream(nc.jetstream())
            await nc.close()
            port = free_port()
            ingest = _spawn_ingest(port, {**os.environ, "HOOKLINE_NATS_URL": nats.url}, tmp / "ingest.log")
            url = f"http://127.0.0.1:{port}/v1/events"
            try:
                async with aiohttp.ClientSession() as http:
                    await wait_http(http, f"http://127.0.0.1:{port}/readyz", ingest)
                    for kind, (body, headers) in bodies.items():
                        statuses: set[int] = set()
                        for i in range(requests + 5):  # 5 to warm up
                            if i == 5:
                                before = snapshot(ingest.pid)
                            async with http.post(url, data=body, headers=headers) as response:
                                await response.read()
                                statuses.add(response.status)
                        after = snapshot(ingest.pid)
                        used = [a - b for a, b in zip(after, before, strict=True)]
                        per = [round(seconds / requests * 1000, 3) for seconds in used]
                        out[kind] = {
                            "event_loop_ms": per[0],
                            "other_threads_ms": per[1],
                            "worker_ms": per[2],
                            "answers": sorted(statuses),
                        }
            finally:
                terminate(ingest)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="requests of each kind")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.requests)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
