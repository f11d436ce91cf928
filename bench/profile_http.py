"""CPU per request: `SafeHTTPClient.request` against a bare `aiohttp.ClientSession.post`.

Both post the same signed bodies with the same headers at the same concurrency to the same local
receiver (its own process, started here; it also counts the TCP connections it saw, so a client that
does not reuse keep-alive connections shows up). Rounds alternate the clients; each row reports
microseconds of this process's CPU (`time.process_time`) per request, the wall rate, and connections.

Variants:
  raw    bare aiohttp session, default settings (what bench/run.py calls the ceiling)
  safe   SafeHTTPClient.request with everything already built (the client's own overhead)
  event  what the sender does per event in the files this profile covers: Event.from_bytes,
         render_event (the bus bytes for JSON), request_headers (signing), SafeHTTPClient.request

    .venv/bin/python bench/profile_http.py                       # 3 rounds of 20,000 requests
    .venv/bin/python bench/profile_http.py --cprofile safe --top 40
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import run as run_bench  # noqa: E402  (bench/ is this script's own folder on sys.path)

from hookline.sender.bus.natsserver import free_port  # noqa: E402
from hookline.sender.model.events import Event, parse_event  # noqa: E402
from hookline.sender.model.signing import parse_secret, request_headers  # noqa: E402
from hookline.sender.model.wire import render_body, render_event  # noqa: E402
from hookline.sender.transport.client import SafeHTTPClient  # noqa: E402
from hookline.sender.transport.egress import EgressPolicy  # noqa: E402

SECRET = run_bench.SECRET
VARIANTS = ("raw", "safe", "event")


# ---------------------------------------------------------------------------------------------------------
# The receiver (a separate process: `profile_http.py --serve PORT`)


def serve(port: int) -> None:
    stats: dict[str, float] = {"count": 0, "connections": 0, "first": 0.0, "last": 0.0}
    seen: set[int] = set()

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        now = time.perf_counter()
        if not stats["count"]:
            stats["first"] = now
        stats["last"] = now
        stats["count"] += 1
        transport = request.transport
        if transport is not None and id(transport) not in seen:
            seen.add(id(transport))
            stats["connections"] += 1
        return web.Response(text="ok")

    async def get_stats(_: web.Request) -> web.Response:
        return web.json_response(stats)

    async def reset(_: web.Request) -> web.Response:
        stats.update(count=0, connections=0, first=0.0, last=0.0)
        seen.clear()
        return web.json_response(stats)

    app = web.Application()
    app.router.add_get("/stats", get_stats)
    app.router.add_post("/reset", reset)
    app.router.add_post("/{tail:.*}", receive)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# ---------------------------------------------------------------------------------------------------------
# The clients


def sample_event(i: int) -> dict:
    """The same click event bench/run.py measures with."""
    return run_bench.sample_event(i, "p")


Send = Callable[[int], Awaitable[None]]


async def drive(send: Send, count: int, concurrency: int) -> None:
    position = 0

    async def worker() -> None:
        nonlocal position
        while position < count:
            i = position
            position += 1
            await send(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def run_variant(
    variant: str,
    url: str,
    messages: list[bytes],
    fmt: str,
    concurrency: int,
    profiler: cProfile.Profile | None,
) -> tuple[float, float]:
    """(CPU seconds, wall seconds) for posting every message once."""
    key = parse_secret(SECRET)
    now = int(time.time())
    prebuilt = []
    if variant != "event":
        for data in messages:
            event = Event.from_bytes(data)
            content_type, body = render_body(event.payload, fmt)
            prebuilt.append((body, request_headers(event.id, now, content_type, body, key, None)))

    if variant == "raw":
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))

        async def send(i: int) -> None:
            body, headers = prebuilt[i]
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                assert response.status == 200

        close: Callable[[], Awaitable[None]] = session.close
    else:
        client = await SafeHTTPClient(
            EgressPolicy(["127.0.0.0/8"], allow_http=True), limit=concurrency
        ).start()
        close = client.close
        if variant == "safe":

            async def send(i: int) -> None:
                body, headers = prebuilt[i]
                response = await client.request("POST", url, data=body, headers=headers, timeout=10.0)
                assert response.status == 200

        else:

            async def send(i: int) -> None:
                event = Event.from_bytes(messages[i])
                content_type, body = render_event(event, fmt)
                headers = request_headers(event.id, int(time.time()), content_type, body, key, None)
                response = await client.request("POST", url, data=body, headers=headers, timeout=10.0)
                assert response.status == 200

    try:
        await drive(send, min(concurrency * 4, len(messages)), concurrency)  # warm: connections, caches
        if profiler is not None:
            profiler.enable()
        cpu, system, wall = time.process_time(), os.times().system, time.perf_counter()
        await drive(send, len(messages), concurrency)
        cpu, system = time.process_time() - cpu, os.times().system - system
        wall = time.perf_counter() - wall
        if profiler is not None:
            profiler.disable()
    finally:
        await close()
    return cpu, system, wall


async def receiver_call(base: str, method: str, path: str) -> dict:
    async with aiohttp.ClientSession() as http, http.request(method, f"{base}{path}") as response:
        return await response.json()


async def wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"receiver exited with {proc.returncode}")
        try:
            await receiver_call(base, "GET", "/stats")
            return
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)
    raise RuntimeError("receiver not ready within 60 s")


async def measure(args: argparse.Namespace, port: int, proc: subprocess.Popen[bytes]) -> int:
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/hooks/copernica.php"
    messages = [parse_event(sample_event(i)).to_bytes() for i in range(args.requests)]
    variants = [args.cprofile] if args.cprofile else list(args.variants)
    profiler = cProfile.Profile() if args.cprofile else None
    results: dict[str, list[tuple[float, float, int]]] = {v: [] for v in variants}
    await wait_ready(base, proc)
    for round_ in range(1, args.rounds + 1):
        for variant in variants:
            await receiver_call(base, "POST", "/reset")
            cpu, system, wall = await run_variant(
                variant, url, messages, args.format, args.concurrency, profiler
            )
            stats = await receiver_call(base, "GET", "/stats")
            n = len(messages)
            results[variant].append((cpu / n * 1e6, n / wall, stats["connections"]))
            print(
                f"round {round_} {variant:5}: {cpu / n * 1e6:6.1f} us CPU/request "
                f"({system / n * 1e6:4.1f} system), "
                f"{n / wall:7.0f} req/s, {stats['connections']} connections",
                flush=True,
            )
    print()
    print(f"best of {args.rounds} (lowest CPU), {args.requests} requests, concurrency {args.concurrency}:")
    base_cpu = min(r[0] for r in results[variants[0]])
    for variant in variants:
        cpu = min(r[0] for r in results[variant])
        rate = max(r[1] for r in results[variant])
        print(
            f"  {variant:5} {cpu:6.1f} us/request ({cpu / base_cpu:4.2f}x {variants[0]}), {rate:6.0f} req/s"
        )
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(args.sort).print_stats(args.top)
        print(out.getvalue())
        if args.save:
            profiler.dump_stats(args.save)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--format", choices=("json", "form"), default="json")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--cprofile", choices=VARIANTS, help="profile one variant with cProfile")
    parser.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumulative)")
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--save", help="also write the profile to this file")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        return asyncio.run(measure(args, port, proc))
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    sys.exit(main())
