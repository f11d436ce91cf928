"""`make bench`: delivery and ingest throughput on this machine, loopback only; writes bench/report.md.

1. Deliveries/s of one `hookline sender` process to a local aiohttp receiver (its own process),
   against the ceiling: a bare aiohttp client posting the same signed bodies with the same headers
   at the same concurrency to the same receiver (on asyncio's loop and on uvloop's, the sender's; the
   better is the ceiling), and wrk, a C client (bench/wrk.py; installed from Debian if missing), whose
   rate is what the receiver itself can take. All rates are measured at the receiver.
2. Ingest events/s: `hookline ingest` as a process, batches of 100 events, a few concurrent clients.
3. Ingest-to-receiver latency at a steady rate (bench/latency.py).
4. The request rate one Webhook's receiver sees with two sender replicas, against its
   maxRequestsPerSecond (bench/ratelimit.py).
5. Ingest beside hostile clients (decompression bombs, huge-error bodies, slow connections):
   valid-request and /healthz p99, quiet and under attack (bench/hostile.py).
6. Batched delivery (spec.delivery.batch): events/s and requests/s at the same receiver from one
   sender process with maxEvents 1 (no batch), 10 and 100, and the ingest-to-receiver latency at
   500 events/s with maxEvents 100 against maxWaitMilliseconds + 20 ms (bench/latency.py).
7. Sender pools (bench/pool.py, short variant): `hookline pool` RSS with 1, 100 and 1,000 quiet
   Webhooks and MiB per Webhook; deliveries/s of one pool replica over 100 Webhooks against one
   dedicated sender, and against the 100 dedicated senders it replaces (bench/fleet.py, one round).
9. Quiet Webhooks (bench/quiet_cost.py): NATS requests/s of one pool replica serving 1,000 Webhooks
   that get no events (nats-server /varz in_msgs over a window), beside the figure before issue 22.
8. NATS auth on vs off (bench/nats_auth_cost.py): connect latency, a sender's first delivery and
   its deliveries/s.

Bounded in count and time (defaults take well under a minute); `--help` for the knobs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hookline.sender import bus  # noqa: E402
from hookline.sender.bus.natsserver import EmbeddedNats, free_port, terminate  # noqa: E402
from hookline.sender.model.bundles import pack  # noqa: E402
from hookline.sender.model.config import SenderConfig, consumer_name, parse_sender_config  # noqa: E402
from hookline.sender.model.events import Event, parse_event  # noqa: E402
from hookline.sender.model.signing import parse_secret, request_headers  # noqa: E402
from hookline.sender.model.wire import render_body  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# The bench Webhooks' maxRequestsPerSecond: the API's maximum, so a row measures the sender, not a
# limit (at 10,000, the maximum before issue 22, the sender row stopped there while the bare client
# went on to 14,000-15,000).
BENCH_RATE_LIMIT = 100_000
HOOKLINE = [sys.executable, "-m", "hookline.cli"]


def sample_event(i: int, prefix: str) -> dict:
    return {
        "id": f"{prefix}-{i}",
        "type": "click",
        "recipient": f"user{i}@example.com",
        "ip": "192.0.2.7",
        "database": "newsletter",
        "profile": 1000 + i,
        "original": f"https://shop.example.com/product/{i}?utm_source=newsletter",
        "useragent": "Mozilla/5.0 (X11; Linux x86_64)",
        "tags": ["spring", "sale"],
    }


async def wait_http(
    http: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes], within: float = 60
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {within:g}s")


def spawn(
    command: list[str], log_path: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    if log_path is None:
        return subprocess.Popen(command, env=env)
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=log, env=env)


def stop(proc: subprocess.Popen[bytes]) -> None:
    terminate(proc, timeout=30)


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident set size (Linux VmHWM), or None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def receiver_stats(http: aiohttp.ClientSession, base: str) -> dict:
    async with http.get(f"{base}/stats") as response:
        return await response.json()


async def wait_count(
    http: aiohttp.ClientSession, base: str, count: int, within: float, key: str = "count"
) -> dict:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        stats = await receiver_stats(http, base)
        if stats[key] >= count:
            return stats
        await asyncio.sleep(0.2)
    raise RuntimeError(f"receiver got {stats[key]} of {count} {key} within {within:g}s")


def rate(stats: dict) -> float:
    span = stats["last"] - stats["first"]
    return (stats["count"] - 1) / span if span > 0 else float("nan")


def event_rate(stats: dict) -> float:
    """Events/s at the receiver (the first request's events arrived at the start of the span)."""
    span = stats["last"] - stats["first"]
    return (stats["events"] - stats["first_events"]) / span if span > 0 else float("nan")


async def raw_ceiling(http_base: str, hook_url: str, events: list, concurrency: int, fmt: str) -> dict:
    """The same bodies and headers the sender would send, posted by a bare aiohttp client."""
    key = parse_secret(SECRET)
    now = int(time.time())
    requests = []
    for event in events:
        content_type, body = render_body(event.payload, fmt)
        requests.append((body, request_headers(event.id, now, content_type, body, key, None)))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as client:
        async with client.post(f"{http_base}/reset") as response:
            await response.read()
        position = 0

        async def worker() -> None:
            nonlocal position
            while position < len(requests):
                body, headers = requests[position]
                position += 1
                async with client.post(hook_url, data=body, headers=headers) as response:
                    await response.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return await receiver_stats(client, http_base)


def raw_ceiling_on_uvloop(http_base: str, hook_url: str, events: list, concurrency: int, fmt: str) -> dict:
    """`raw_ceiling` on uvloop's loop (in this thread), the loop the sender runs on: the ceiling is the
    better of the two loops, never one the sender's own loop would beat."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(raw_ceiling(http_base, hook_url, events, concurrency, fmt))


async def wrk_ceiling(
    binary: str, http_base: str, hook_url: str, event: Event, concurrency: int, fmt: str, seconds: float
) -> dict:
    """Requests/s the receiver got from wrk (bench/wrk.py): the first event's body and signed headers,
    the same concurrency, one wrk thread, measured at the receiver as the other rows."""
    from wrk import run_wrk

    content_type, body = render_body(event.payload, fmt)
    key = parse_secret(SECRET)
    headers = request_headers(event.id, int(time.time()), content_type, body, key, None)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{http_base}/reset") as response:
            await response.read()
        await asyncio.to_thread(
            run_wrk, binary, hook_url, body, headers, connections=concurrency, seconds=seconds
        )
        return await receiver_stats(http, http_base)


def write_sender_config(
    tmp: Path,
    nats_url: str,
    hook_url: str,
    concurrency: int,
    fmt: str,
    name: str,
    *,
    record_attempts: bool = True,
    batch: dict | None = None,
) -> tuple[Path, str, SenderConfig]:
    """The bench Webhook's sender config file (signed click deliveries, loopback allowed)."""
    secret_file = tmp / "secret"
    secret_file.write_text(SECRET)
    listen = f"127.0.0.1:{free_port()}"
    cfg = parse_sender_config(
        {
            "webhook": {"namespace": "bench", "name": name},
            "spec": {
                "url": hook_url,
                "events": ["click"],
                "database": "newsletter",
                "format": fmt,
                "signing": {"secretRef": {"name": "s", "key": "secret"}},
                "delivery": {
                    "maxInFlight": concurrency,
                    "maxRequestsPerSecond": BENCH_RATE_LIMIT,
                    **({"batch": batch} if batch else {}),
                },
            },
            "nats": {"url": nats_url, "consumer": consumer_name("bench", name)},
            "signingSecretFile": str(secret_file),
            "listen": listen,
            "allowNetworks": ["127.0.0.0/8"],
            "allowHttp": True,
            "recordAttempts": record_attempts,
        }
    )
    path = tmp / f"sender-{name}.yaml"
    path.write_text(yaml.safe_dump(cfg.to_document()))
    return path, listen, cfg


async def publish_backlog(nc: Any, js: Any, events: list[Event], bundle: int = 1) -> None:
    """Store `events`, each its own message, or (`bundle` > 1) as `hookline ingest --bundle-events`
    would: those of a subject together in order, `bundle` per message."""
    if bundle <= 1:
        for start in range(0, len(events), 500):
            await bus.publish_events(nc, js, events[start : start + 500], ack_timeout=30)
        return
    by_subject: dict[str, list[Event]] = {}
    for event in events:
        by_subject.setdefault(event.subject, []).append(event)
    for same in by_subject.values():
        for start in range(0, len(same), bundle):
            part = same[start : start + bundle]
            payload, headers = pack([event.to_bytes() for event in part])
            headers[bus.MSG_ID_HEADER] = f"bundle:{part[0].id}:{len(part)}"
            await js.publish(part[0].subject, payload, headers=headers)


async def sender_throughput(
    tmp: Path,
    nats: EmbeddedNats,
    http_base: str,
    hook_url: str,
    events: list,
    concurrency: int,
    fmt: str,
    tag: str,
    *,
    record_attempts: bool = True,
    batch: dict | None = None,
    cpu: bool = False,
    retention: str = bus.DEFAULT_STREAM_RETENTION,
    bundle: int = 1,
) -> dict:
    """Deliveries of a backlog by one `hookline sender` process; with `cpu` also the CPU per event of
    the sender and of nats-server from the first event the receiver got to the last. `retention`: the
    events stream's (ingest's `--stream-retention`)."""
    config_path, listen, cfg = write_sender_config(
        tmp,
        nats.url,
        hook_url,
        concurrency,
        fmt,
        f"throughput-{tag}",
        record_attempts=record_attempts,
        batch=batch,
    )
    nc = await bus.connect(nats.url)
    js = nc.jetstream()
    await bus.ensure_stream(js, retention=retention)
    await bus.ensure_consumer(js, cfg)
    await publish_backlog(nc, js, events, bundle)
    await nc.close()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{http_base}/reset") as response:
            await response.read()
        proc = spawn([*HOOKLINE, "sender", "--config", str(config_path)], tmp / f"sender-{tag}.log")
        try:
            pids = {"sender": proc.pid, "nats": nats.proc.pid if nats.proc else proc.pid}
            mark = await cpu_mark(http, http_base, pids) if cpu else None
            stats = await wait_count(http, http_base, len(events), within=300, key="events")
            if mark is not None:
                stats["cpu_us_per_event"] = cpu_since(mark, pids, stats)
            async with http.get(f"http://{listen}/metrics") as response:
                metrics = await response.text()
            stats["peak_rss_mib"] = peak_rss_mib(proc.pid)
        finally:
            stop(proc)
    stats["failed_attempts"] = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("hookline_delivery_attempts_total{") and 'outcome="success"' not in line
    )
    return stats


def process_cpu(pid: int) -> float:
    """User and system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_mark(http: aiohttp.ClientSession, base: str, pids: dict[str, int]) -> tuple[int, dict]:
    """(events at the receiver, CPU seconds of each process) once the first events arrived: the
    sender's start-up is not counted."""
    deadline = time.monotonic() + 120
    for _ in range(6000):  # polled: the receiver is another process
        events = (await receiver_stats(http, base))["events"]
        if events or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    return events, {what: process_cpu(pid) for what, pid in pids.items()}


def cpu_since(mark: tuple[int, dict], pids: dict[str, int], stats: dict) -> dict[str, float]:
    events, before = mark
    count = max(1, stats["events"] - events)
    return {what: round((process_cpu(pid) - before[what]) * 1e6 / count, 1) for what, pid in pids.items()}


async def ingest_throughput(
    tmp: Path, nats: EmbeddedNats, total: int, batch: int, clients: int, bundle: int = 1
) -> dict:
    """Events/s `hookline ingest` takes (`bundle` > 1: with --bundle-events)."""
    port = free_port()
    env = {**os.environ, "HOOKLINE_NATS_URL": nats.url}
    env.pop("HOOKLINE_INGEST_TOKEN", None)
    command = [*HOOKLINE, "ingest", "--listen", f"127.0.0.1:{port}", "--insecure-no-auth"]
    proc = spawn([*command, "--bundle-events", str(bundle)], tmp / f"ingest-{bundle}.log", env)
    bodies = [
        json.dumps(
            [sample_event(i, f"ingest-{bundle}-{start}") for i in range(start, start + batch)]
        ).encode()
        for start in range(0, total, batch)
    ]
    url = f"http://127.0.0.1:{port}/v1/events"
    try:
        connector = aiohttp.TCPConnector(limit=clients)
        async with aiohttp.ClientSession(connector=connector) as http:
            await wait_http(http, f"http://127.0.0.1:{port}/readyz", proc)
            position = 0
            refused = 0

            async def client() -> None:
                nonlocal position, refused
                headers = {"Content-Type": "application/json"}
                while position < len(bodies):
                    body = bodies[position]
                    position += 1
                    async with http.post(url, data=body, headers=headers) as response:
                        await response.read()
                        refused += response.status != 202

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            elapsed = time.perf_counter() - started
    finally:
        stop(proc)
    return {
        "events": len(bodies) * batch,
        "seconds": elapsed,
        "rate": len(bodies) * batch / elapsed,
        "refused": refused,
    }


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def _wrk_binary(args: argparse.Namespace) -> tuple[str | None, str]:
    if args.wrk_seconds <= 0:
        return None, "wrk row skipped (--wrk-seconds 0)"
    sys.path.insert(0, str(ROOT / "bench"))
    from wrk import ensure_wrk

    return ensure_wrk()


async def measure(args: argparse.Namespace) -> dict:
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="hookline-bench-") as tmp_name:
        tmp = Path(tmp_name)
        receiver_port = free_port()
        receiver = spawn([sys.executable, str(ROOT / "bench" / "receiver.py"), str(receiver_port)])
        http_base = f"http://127.0.0.1:{receiver_port}"
        hook_url = f"{http_base}/hooks/copernica.php"
        try:
            with EmbeddedNats(tmp / "nats", log_file=tmp / "nats.log") as nats:
                async with aiohttp.ClientSession() as http:
                    await wait_http(http, f"{http_base}/stats", receiver)
                raw_rates: list[float] = []
                raw_uv_rates: list[float] = []
                wrk_rates: list[float] = []
                sender_rates: list[float] = []
                unrecorded_rates: list[float] = []
                wrk_bin, results["wrk_setup"] = _wrk_binary(args)
                print(results["wrk_setup"], flush=True)
                for round_ in range(1, args.rounds + 1):
                    # Alternate the two, and keep the best of each: other load on a shared machine
                    # only ever slows a run down.
                    events = [parse_event(sample_event(i, f"r{round_}")) for i in range(args.events)]
                    print(
                        f"round {round_}/{args.rounds}: raw aiohttp client, {args.events} requests ...",
                        flush=True,
                    )
                    raw = await raw_ceiling(http_base, hook_url, events, args.concurrency, args.format)
                    raw_rates.append(rate(raw))
                    print(f"  {raw_rates[-1]:.0f} requests/s", flush=True)
                    if _has_uvloop():
                        print(f"round {round_}/{args.rounds}: the same on uvloop ...", flush=True)
                        raw = await asyncio.to_thread(
                            raw_ceiling_on_uvloop, http_base, hook_url, events, args.concurrency, args.format
                        )
                        raw_uv_rates.append(rate(raw))
                        print(f"  {raw_uv_rates[-1]:.0f} requests/s", flush=True)
                    if wrk_bin is not None:
                        print(f"round {round_}/{args.rounds}: wrk, {args.wrk_seconds:g}s ...", flush=True)
                        hit = await wrk_ceiling(
                            wrk_bin,
                            http_base,
                            hook_url,
                            events[0],
                            args.concurrency,
                            args.format,
                            args.wrk_seconds,
                        )
                        wrk_rates.append(rate(hit))
                        print(f"  {wrk_rates[-1]:.0f} requests/s", flush=True)
                    print(
                        f"round {round_}/{args.rounds}: hookline sender, {args.events} events ...", flush=True
                    )
                    sent = await sender_throughput(
                        tmp, nats, http_base, hook_url, events, args.concurrency, args.format, f"r{round_}"
                    )
                    sender_rates.append(rate(sent))
                    print(f"  {sender_rates[-1]:.0f} deliveries/s", flush=True)
                    print(f"round {round_}/{args.rounds}: the same, attempt log off ...", flush=True)
                    # Other event ids: the stream's duplicate window would drop the same ones unstored.
                    unrecorded = [parse_event(sample_event(i, f"r{round_}-off")) for i in range(args.events)]
                    quiet = await sender_throughput(
                        tmp,
                        nats,
                        http_base,
                        hook_url,
                        unrecorded,
                        args.concurrency,
                        args.format,
                        f"r{round_}-off",
                        record_attempts=False,
                    )
                    unrecorded_rates.append(rate(quiet))
                    results["sender_failed_attempts"] = sent["failed_attempts"]
                    results["sender_peak_rss_mib"] = max(
                        sent["peak_rss_mib"] or 0.0, results.get("sender_peak_rss_mib") or 0.0
                    )
                    print(f"  {unrecorded_rates[-1]:.0f} deliveries/s", flush=True)
                results["raw_asyncio_rate"] = max(raw_rates)
                results["raw_uvloop_rate"] = max(raw_uv_rates) if raw_uv_rates else None
                results["raw_rate"] = max(raw_rates + raw_uv_rates)
                results["raw_uv_rates"] = raw_uv_rates
                results["wrk_rates"] = wrk_rates
                results["wrk_rate"] = max(wrk_rates) if wrk_rates else None
                results["unrecorded_rate"] = max(unrecorded_rates)
                results["sender_rate"] = max(sender_rates)
                results["raw_rates"] = raw_rates
                results["sender_rates"] = sender_rates
                results["batches"] = await batched(args, tmp, nats, http_base, hook_url)
                print(
                    f"hookline ingest: {args.ingest_events} events in batches of {args.batch} ...", flush=True
                )
                ingest = await ingest_throughput(
                    tmp, nats, args.ingest_events, args.batch, args.ingest_clients
                )
                results["ingest_rate"] = ingest["rate"]
                results["ingest_refused"] = ingest["refused"]
                print(f"  {ingest['rate']:.0f} events/s", flush=True)
                if args.bundle_size > 1:
                    bundled = await ingest_throughput(
                        tmp, nats, args.ingest_events, args.batch, args.ingest_clients, args.bundle_size
                    )
                    results["ingest_bundled_rate"] = bundled["rate"]
                    results["ingest_refused"] += bundled["refused"]
                    print(
                        f"  with --bundle-events {args.bundle_size}: {bundled['rate']:.0f} events/s",
                        flush=True,
                    )
            if args.latency_seconds > 0:
                results["latency"] = await latency(args)
                results["batch_latency"] = await latency(
                    args, {"maxEvents": 100, "maxWaitMilliseconds": args.batch_wait_ms}
                )
            if args.ratelimit_seconds > 0:
                results["ratelimit"] = await ratelimit(args)
            if args.hostile_seconds > 0:
                results["hostile"] = await hostile(args)
            if args.nats_consumers > 0:
                results["nats_consumers"] = await nats_consumers(args)
            if args.auth_events > 0:
                results["nats_auth"] = await nats_auth(args)
            if args.pool_events > 0:
                results["pool"] = await sender_pool(args)
            if args.fleet_events > 0:
                results["fleet"] = await pool_against_fleet(args)
            if args.quiet_webhooks > 0:
                results["quiet"] = await quiet_webhooks(args)
            if args.signing_events >= 0:
                results["signing"] = await signing_cost(args)
            if args.operator_webhooks > 0:
                results["operator"] = await operator_memory(args)
        finally:
            stop(receiver)
    return results


async def batched(
    args: argparse.Namespace, tmp: Path, nats: EmbeddedNats, http_base: str, hook_url: str
) -> list[dict]:
    """Events/s and requests/s at the receiver for each maxEvents (1: no batch), same receiver. With
    `--batch-rounds` above 1 every setting runs again in each round (alternating) and the best of each
    is kept, as for the other rows: other load on a shared machine only ever slows a run down."""
    settings = [(size, bundle) for bundle in sorted({1, args.bundle_size}) for size in args.batch_sizes]
    best: dict[tuple[int, int], dict] = {}
    for round_ in range(1, args.batch_rounds + 1):
        for size, bundle in settings:
            batch = None if size == 1 else {"maxEvents": size, "maxWaitMilliseconds": args.batch_wait_ms}
            stored = f", stored in bundles of {bundle}" if bundle > 1 else ""
            print(
                f"batched delivery (round {round_}/{args.batch_rounds}): maxEvents {size}, "
                f"{args.batch_events} events{stored} ...",
                flush=True,
            )
            tag = f"b{size}-{bundle}-r{round_}"
            events = [parse_event(sample_event(i, tag)) for i in range(args.batch_events)]
            sent = await sender_throughput(
                tmp,
                nats,
                http_base,
                hook_url,
                events,
                args.concurrency,
                "json",
                tag,
                batch=batch,
                cpu=True,
                bundle=bundle,
            )
            row = {
                "max_events": size,
                "bundle": bundle,
                "events_per_second": event_rate(sent),
                "requests_per_second": rate(sent),
                "requests": sent["count"],
                "failed_attempts": sent["failed_attempts"],
                "cpu_us_per_event": sent.get("cpu_us_per_event"),
            }
            print(
                f"  {row['events_per_second']:.0f} events/s, {row['requests_per_second']:.0f} requests/s, "
                f"CPU us per event {row['cpu_us_per_event']}",
                flush=True,
            )
            kept = best.get((size, bundle))
            if kept is None or row["events_per_second"] > kept["events_per_second"]:
                best[(size, bundle)] = row
    return [best[setting] for setting in settings]


async def latency(args: argparse.Namespace, delivery_batch: dict | None = None) -> dict | None:
    """Ingest-to-receiver latency from bench/latency.py (issue 4's harness), when it is there."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from latency import measure as measure_latency
    except ImportError:
        return None
    what = f" with batch {delivery_batch}" if delivery_batch else ""
    print(f"latency at {args.latency_rate:g} events/s for {args.latency_seconds:g}s{what} ...", flush=True)
    result = await measure_latency(args.latency_rate, args.latency_seconds, delivery_batch=delivery_batch)
    print(f"  p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms", flush=True)
    return result


async def ratelimit(args: argparse.Namespace) -> dict:
    """Observed request rate of two replicas vs the Webhook's limit, from bench/ratelimit.py."""
    sys.path.insert(0, str(ROOT / "bench"))
    from ratelimit import measure as measure_rate

    print(
        f"rate limit {args.ratelimit_limit:g}/s over two sender replicas, "
        f"{args.ratelimit_seconds:g}s of backlog ...",
        flush=True,
    )
    result = await measure_rate(args.ratelimit_limit, args.ratelimit_seconds)
    print(f"  {result['observed_per_second']}/s observed ({result['deviation_percent']:+.2f} %)", flush=True)
    return result


async def nats_consumers(args: argparse.Namespace) -> dict:
    """nats-server RSS and publish rate with N Webhooks' consumers, from bench/nats_consumers.py."""
    sys.path.insert(0, str(ROOT / "bench"))
    from nats_consumers import measure as measure_consumers

    print(f"nats-server with {args.nats_consumers} Webhook consumers ...", flush=True)
    result = await measure_consumers(args.nats_consumers, 10_000)
    print(f"  {result['rss_mib']} MiB, {result['publish_events_per_s']} events/s", flush=True)
    return result


async def nats_auth(args: argparse.Namespace) -> dict:
    """Connect and first-delivery latency, deliveries/s, NATS auth on and off (bench/nats_auth_cost.py)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from nats_auth_cost import measure as measure_auth

    print(f"NATS auth on / off, {args.auth_events} events ...", flush=True)
    return await measure_auth(args.auth_events)


def nats_auth_rows(result: dict | None) -> list[str]:
    if not result:
        return []
    sys.path.insert(0, str(ROOT / "bench"))
    from nats_auth_cost import report_rows

    return report_rows(result)


# A memory-backed folder for a nats-server store (the bundled pool comparison runs once more there).
MEMORY_FOLDER: Path | None = Path("/dev/shm") if Path("/dev/shm").is_dir() else None


async def sender_pool(args: argparse.Namespace) -> dict:
    """Memory per pooled Webhook and pool vs dedicated deliveries/s, from bench/pool.py."""
    sys.path.insert(0, str(ROOT / "bench"))
    from pool import run_pool_bench

    result = await run_pool_bench(True, events=args.pool_events)
    tput = result["throughput"]
    print(f"  pool {tput['pool_rate']}/s vs dedicated {tput['dedicated_rate']}/s", flush=True)
    if args.bundle_size > 1:
        from pool import throughput as pool_throughput

        # Twice: nats-server's store on the disk, then in memory, where its consumer-state files (each
        # busy consumer's rewritten up to 10 times a second) cost what a journaled file system's do
        # (README "Sender pools").
        stores: list[tuple[str, Path | None]] = [("bundled_throughput", None)]
        if MEMORY_FOLDER is not None:
            stores.append(("bundled_memory_store_throughput", MEMORY_FOLDER))
        for key, store in stores:
            where = f"bundles of {args.bundle_size}, nats-server's store in {store or 'a temporary folder'}"
            print(f"pool vs dedicated, events stored in {where} ...", flush=True)
            with tempfile.TemporaryDirectory(prefix="hookline-bench-pool-bundles-") as tmp:
                compared = await pool_throughput(
                    Path(tmp),
                    args.pool_events,
                    100,
                    args.pool_rounds,
                    control=False,
                    bundle=args.bundle_size,
                    nats_store=store,
                )
            result[key] = compared
            print(f"  pool {compared['pool_rate']}/s vs dedicated {compared['dedicated_rate']}/s", flush=True)
    return result


async def pool_against_fleet(args: argparse.Namespace) -> dict:
    """100 Webhooks on one pool replica against 100 dedicated senders, from bench/fleet.py."""
    sys.path.insert(0, str(ROOT / "bench"))
    from fleet import run_fleet

    result = await run_fleet(args.fleet_events, 100, 1)
    print(
        f"  pool {result['pool']['rate']:.0f}/s vs 100 senders {result['dedicated']['rate']:.0f}/s",
        flush=True,
    )
    return result


def fleet_rows(result: dict | None) -> list[str]:
    if not result:
        return []
    from fleet import report_rows

    return report_rows(result)


async def operator_memory(args: argparse.Namespace) -> dict | None:
    """The operator's peak RSS with N dedicated Webhooks created at once on a real kube-apiserver
    (bench/operator_scale.py --real-api, a process of its own); None without the binaries."""
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from kubeassets import HOW_TO_GET, available

    if not available():
        print(f"operator memory on a real API server: skipped, {HOW_TO_GET}", flush=True)
        return None
    print(f"operator peak RSS, {args.operator_webhooks} Webhooks on a real kube-apiserver ...", flush=True)
    command = [sys.executable, str(ROOT / "bench" / "operator_scale.py"), "--real-api", "--json"]
    command += ["--webhooks", str(args.operator_webhooks), "--timeout", "900"]
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        print("  failed:\n" + out.decode(errors="replace")[-2000:], flush=True)
        return None
    result: dict = json.loads(lines[-1])
    print(f"  {result['peak_rss_mib']} MiB, all Ready after {result['ready_seconds']} s", flush=True)
    return result


def operator_rows(result: dict | None) -> list[str]:
    if not result:
        return []
    return [
        f"| operator peak RSS, {result['webhooks']:,} dedicated Webhooks created at once, real "
        f"kube-apiserver v1.36 (`bench/operator_scale.py --real-api`; all Ready after "
        f"{result['ready_seconds']:.0f} s) | "
        f"{result['peak_rss_mib']:.0f} MiB (before: 147 MiB at 1,000 in make bench on 2026-12-04 14:28; "
        "503 MiB before issue 22; 251 MiB at 10,000, README) |"
    ]


async def quiet_webhooks(args: argparse.Namespace) -> dict:
    """NATS requests/s of N quiet pooled Webhooks, from bench/quiet_cost.py."""
    sys.path.insert(0, str(ROOT / "bench"))
    from quiet_cost import quiet_cost

    print(f"NATS requests/s of {args.quiet_webhooks} quiet pooled Webhooks ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="hookline-quiet-") as tmp:
        result = await quiet_cost(Path(tmp), args.quiet_webhooks, 15.0, args.quiet_seconds)
    print(f"  {result['requests_per_s']} requests/s", flush=True)
    return result


def quiet_rows(result: dict | None) -> list[str]:
    if not result:
        return []
    from quiet_cost import report_rows

    # Before issue 22: a look every 5 s and a pull request every 30 s per engine (2026-12-04, 1,000).
    return report_rows(result, previous="266.7/s, CONSUMER.INFO 200, CONSUMER.MSG 33.3")


async def signing_cost(args: argparse.Namespace) -> dict:
    """Signatures/s and deliveries/s per signing scheme, from bench/signing.py."""
    sys.path.insert(0, str(ROOT / "bench"))
    from signing import measure as measure_signing

    return await measure_signing(args.signing_events)


def signing_rows(result: dict | None) -> list[str]:
    if not result:
        return []
    from signing import report_rows

    return report_rows(result)


async def hostile(args: argparse.Namespace) -> dict:
    """Ingest p99s beside hostile clients, from bench/hostile.py (quiet and attacked windows alternate)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from hostile import measure as measure_hostile

    seconds = args.hostile_seconds
    print(
        f"ingest beside hostile clients, 3 rounds of {seconds:g}s quiet then {seconds:g}s attacked ...",
        flush=True,
    )
    result = await measure_hostile(args.hostile_seconds)
    from hostile_cost import measure as measure_cost

    result["cpu_per_request"] = await measure_cost(100)
    print(
        f"  valid p99 {result['quiet']['valid_p99_ms']} -> {result['hostile']['valid_p99_ms']} ms "
        f"({result['ratio']}x, rounds {[w['ratio'] for w in result['rounds']]}), "
        f"/healthz p99 {result['hostile']['healthz_p99_ms']} ms",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = render_report(args, asyncio.run(measure(args)))
    print()
    print(report)
    Path(args.report).write_text(report)
    print(f"written to {args.report}")
    return 0


def render_report(args: argparse.Namespace, r: dict) -> str:
    ratio = r["sender_rate"] / r["raw_rate"]
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpus = os.cpu_count()
    return "\n".join(
        [
            "# hookline benchmark",
            "",
            f"{when}; {cpus} CPUs; Python {platform.python_version()}; `make bench` "
            f"(`python bench/run.py --events {args.events} --rounds {args.rounds} "
            f"--concurrency {args.concurrency} --ingest-events {args.ingest_events}`). "
            "Loopback only; receiver in its own process.",
            "",
            "| measure | result |",
            "|---|---|",
            f"| deliveries/s, one `hookline sender` process ({args.format}, signed, maxInFlight "
            f"{args.concurrency}, {args.events} events) | {r['sender_rate']:.0f} |",
            *ceiling_rows(r),
            f"| ratio sender / ceiling | {ratio:.2f} (before: 0.77 in make bench on 2026-12-04 14:28, "
            "11,837 / 15,451; 0.72 on a quiet machine before issue 22's sender changes, 10,233 / 14,126) |",
            *wrk_rows(r),
            *bundled_sender_rows(r),
            "| deliveries/s, the same with the attempt log and health reports off (`recordAttempts: false`) "
            f"| {r['unrecorded_rate']:.0f} (ratio {r['unrecorded_rate'] / r['raw_rate']:.2f}) |",
            f"| ingest events/s (`hookline ingest`, batches of {args.batch}, {args.ingest_clients} clients) "
            f"| {r['ingest_rate']:.0f} |",
            *(
                [
                    f"| ingest events/s, the same with `--bundle-events {args.bundle_size}` (ids reserved, "
                    f"one message per bundle) | {r['ingest_bundled_rate']:.0f} |"
                ]
                if r.get("ingest_bundled_rate")
                else []
            ),
            *latency_rows(r.get("latency")),
            *batch_rows(r.get("batches") or [], r.get("batch_latency"), args),
            *ratelimit_rows(r.get("ratelimit")),
            *hostile_rows(r.get("hostile")),
            *nats_consumer_rows(r.get("nats_consumers")),
            *nats_auth_rows(r.get("nats_auth")),
            *pool_rows(r.get("pool")),
            *fleet_rows(r.get("fleet")),
            *quiet_rows(r.get("quiet")),
            *signing_rows(r.get("signing")),
            *operator_rows(r.get("operator")),
            "| sender peak RSS during the delivery run (VmHWM) | "
            + (f"{r['sender_peak_rss_mib']:.0f} MiB |" if r.get("sender_peak_rss_mib") else "n/a |"),
            "",
            "Best of "
            + str(args.rounds)
            + " alternating rounds (deliveries/s "
            + ", ".join(f"{x:.0f}" for x in r["sender_rates"])
            + "; ceiling "
            + ", ".join(f"{x:.0f}" for x in r["raw_rates"])
            + (
                ("; on uvloop " + ", ".join(f"{x:.0f}" for x in r["raw_uv_rates"]))
                if r["raw_uv_rates"]
                else ""
            )
            + (("; wrk " + ", ".join(f"{x:.0f}" for x in r["wrk_rates"])) if r["wrk_rates"] else "")
            + "). "
            + r["wrk_setup"]
            + ".",
            f"Failed delivery attempts during the last sender run: {r['sender_failed_attempts']:.0f}; "
            f"ingest requests not answered 202: {r['ingest_refused']}.",
            "",
        ]
    )


def ceiling_rows(r: dict) -> list[str]:
    uv = r.get("raw_uvloop_rate")
    loops = f"{r['raw_asyncio_rate']:.0f} on asyncio's loop" + (f", {uv:.0f} on uvloop's" if uv else "")
    return [
        "| ceiling: raw aiohttp client, same receiver, bodies, headers, concurrency (the better loop; "
        f"{loops}) | {r['raw_rate']:.0f} |"
    ]


def wrk_rows(r: dict) -> list[str]:
    if not r.get("wrk_rate"):
        return [f"| wrk (C client) | n/a: {r.get('wrk_setup', '')} |"]
    return [
        "| wrk (C client, one thread), same receiver, body, headers, connections: requests/s "
        f"| {r['wrk_rate']:.0f} (before: 22,770 in make bench on 2026-12-04 14:28; 20,730-20,978 earlier) |",
        f"| ratio sender / wrk | {r['sender_rate'] / r['wrk_rate']:.2f} (before: 0.52 on 2026-12-04 14:28; "
        "0.49 on a quiet machine before issue 22's sender changes) |",
        "| ratio raw aiohttp client / wrk (the aiohttp client's own limit) "
        f"| {r['raw_rate'] / r['wrk_rate']:.2f} |",
    ]


def bundled_sender_rows(r: dict) -> list[str]:
    """The unbatched sender reading bundles (the batched rows' maxEvents 1 run) against the ceilings."""
    rows = [b for b in r.get("batches") or [] if b["max_events"] == 1 and b.get("bundle", 1) > 1]
    if not rows:
        return []
    row = rows[0]
    out = [
        f"| ratio sender / raw aiohttp client, events stored in bundles of {row['bundle']} (the batched "
        f"rows' maxEvents 1 run) | {row['events_per_second'] / r['raw_rate']:.2f} |"
    ]
    if r.get("wrk_rate"):
        out.append(
            f"| ratio sender / wrk, events stored in bundles of {row['bundle']} "
            f"| {row['events_per_second'] / r['wrk_rate']:.2f} |"
        )
    return out


def batch_rows(rows: list[dict], latency_result: dict | None, args: argparse.Namespace) -> list[str]:
    out = []
    base = next((r["events_per_second"] for r in rows if r["max_events"] == 1 and r["bundle"] == 1), None)
    for row in rows:
        size = row["max_events"]
        label = ("1 (no batch)" if size == 1 else str(size)) + (
            f", stored in bundles of {row['bundle']}" if row["bundle"] > 1 else ""
        )
        gain = f" ({row['events_per_second'] / base:.1f}x)" if base and row is not rows[0] else ""
        out.append(
            f"| batched delivery, maxEvents {label}: events/s, one sender (json, signed, maxInFlight "
            f"{args.concurrency}, {args.batch_events} events, best of {args.batch_rounds}) "
            f"| {row['events_per_second']:.0f}{gain} |"
        )
        out.append(
            f"| batched delivery, maxEvents {label}: requests/s the receiver saw "
            f"| {row['requests_per_second']:.0f} |"
        )
        if row.get("cpu_us_per_event"):
            cpu = row["cpu_us_per_event"]
            out.append(
                f"| batched delivery, maxEvents {label}: CPU per event, sender / nats-server "
                f"(first event to last) | {cpu['sender']} / {cpu['nats']} us |"
            )
    if base:
        out.append(
            "| batched delivery before (maxEvents 1 / 10 / 100, events/s) | 11,906 / 40,708 / 51,060 (4.3x) "
            "in make bench on 2026-12-04 14:28; 3,306 / 9,396 / 12,155 (3.7x) on 2026-12-03 |"
        )
    if latency_result:
        goal = args.batch_wait_ms + 20
        out.append(
            f"| ingest-to-receiver latency at {latency_result['target_rate_per_second']:g} events/s, "
            f"maxEvents 100, maxWaitMilliseconds {args.batch_wait_ms}: p50 / p99 (goal: p99 within "
            f"{goal} ms) | {latency_result['p50_ms']} / {latency_result['p99_ms']} ms |"
        )
    return out


def latency_rows(result: dict | None) -> list[str]:
    if not result:
        return []
    rate_ = result["target_rate_per_second"]
    return [
        f"| ingest-to-receiver latency at {rate_:g} events/s, p50 (bench/latency.py) "
        f"| {result['p50_ms']} ms |",
        f"| ingest-to-receiver latency at {rate_:g} events/s, p99 | {result['p99_ms']} ms |",
    ]


def ratelimit_rows(result: dict | None) -> list[str]:
    if not result:
        return []
    limit = result["limit_per_second"]
    return [
        f"| requests/s at the receiver, maxRequestsPerSecond {limit:g}, two sender replicas "
        f"(bench/ratelimit.py) | {result['observed_per_second']:.1f} "
        f"({result['deviation_percent']:+.2f} % of the limit; busiest second {result['busiest_second']}) |",
    ]


def nats_consumer_rows(result: dict | None) -> list[str]:
    if not result:
        return []
    n = f"{result['consumers']:,}"
    return [
        f"| nats-server RSS with {n} Webhook consumers (idle server {result['rss_idle_mib']} MiB; "
        f"bench/nats_consumers.py) | {result['rss_mib']:.0f} MiB ({result['kib_per_consumer']} KiB each) |",
        f"| publish events/s with {n} consumers / none (batches of 100) | "
        f"{result['publish_events_per_s']} / {result['publish_events_per_s_no_consumers']} |",
    ]


def pool_rows(result: dict | None) -> list[str]:
    if not result:
        return []
    sys.path.insert(0, str(ROOT / "bench"))
    from pool import report_rows

    rows = report_rows(result)
    for key in ("bundled_throughput", "bundled_memory_store_throughput"):
        if compared := result.get(key):
            rows.append(
                f"| pool replica over 100 Webhooks vs one dedicated sender, events stored in bundles of "
                f"{compared['bundle']} (maxInFlight {compared['max_in_flight']}, {compared['events']:,} "
                f"events, best of {len(compared.get('pool_rates') or [0])}); nats-server's store: "
                f"{compared['nats_store_kind']}{STORE_NOTES.get(compared['nats_store_kind'], '')} "
                f"| {compared['pool_rate']} vs {compared['dedicated_rate']} ({compared['ratio']:.2f}); "
                f"{nats_share(compared)} |"
            )
    return rows


# What the pool rows say of the file system nats-server's store was on (README "Sender pools").
STORE_NOTES = {
    "ext4 without a journal": " (each new inode is checked against the recently deleted ones, and every "
    "consumer-state rewrite makes one: several times the cost of a journaled ext4)",
    "tmpfs": " (consumer-state rewrites cost what they cost on a journaled ext4, measured; target >= 0.9)",
}


def nats_share(tput: dict) -> str:
    """nats-server's CPU per delivery, pooled against dedicated, in one pool comparison."""
    pooled = (tput.get("pool_cpu_ms_per_delivery") or {}).get("nats")
    dedicated_us = (tput.get("dedicated_cpu_us_per_event") or {}).get("nats")
    dedicated = None if dedicated_us is None else dedicated_us / 1000

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    return f"nats-server {ms(pooled)} ms per pooled delivery, {ms(dedicated)} per dedicated one"


# Before issue 22 item 4 (make bench, 2026-12-04): one quiet and one attacked window, ingest's large
# bodies in a nice-10 process pool.
HOSTILE_BEFORE = "1.9 / 2.94 ms (1.4x) on 2026-12-04 14:28; 5.2 / 16.4 ms (3.2x) and 6.4x earlier"


def hostile_rows(result: dict | None) -> list[str]:
    if not result:
        return []
    quiet, attacked, attack = result["quiet"], result["hostile"], result["attack"]
    what = (
        f"beside hostile clients (gzip bombs 1 MB -> 1 GiB, 100,000-error bodies, "
        f"{attack['slow']} slow connections; bench/hostile.py), {result['rate']:g} valid requests/s"
    )
    rates = result.get("attack_per_s", {})
    cpu = result.get("attacker_cpu", {})
    rounds = ", ".join(f"{w['ratio']}x" for w in result.get("rounds", []))
    return [
        f"| ingest valid-request p99, quiet / {what}; medians of {len(result.get('rounds', [])) or 1} "
        f"alternating rounds on {result.get('cpus', 2)} shared CPUs | {quiet['valid_p99_ms']} ms / "
        f"{attacked['valid_p99_ms']} ms (**{result['ratio']}x**; rounds {rounds}; p50 "
        f"{quiet['valid_p50_ms']} / {attacked['valid_p50_ms']} ms); before: {HOSTILE_BEFORE} |",
        f"| ingest `/healthz` p99, quiet / hostile | {quiet['healthz_p99_ms']} ms / "
        f"{attacked['healthz_p99_ms']} ms (ingest peak RSS {result['ingest_peak_rss_mib']} MiB) |",
        f"| the attack answered, per second (attacker at nice {result.get('attacker_nice', 15)}: on a CPU / "
        f"waiting for one, shares of its time) | {rates.get('bomb')} bombs, {rates.get('errors')} "
        f"100,000-event bodies ({cpu.get('cpu')} / {cpu.get('cpu_wait')}) |",
        *hostile_cost_rows(result.get("cpu_per_request")),
    ]


# bench/hostile_cost.py before issue 22 item 4: event loop + ingest's other threads (executor), ms.
HOSTILE_COST_BEFORE = {"bomb": "0.67 + 0.45", "errors": "0.40 + 0.27", "valid": "0.77 + 0"}


def hostile_cost_rows(cost: dict | None) -> list[str]:
    if not cost:
        return []
    names = {"bomb": "gzip bomb", "errors": "100,000 `{}`", "valid": "valid batch of 10"}
    cells = "; ".join(
        f"{names[kind]} {c['event_loop_ms']} + {c['other_threads_ms']} (worker {c['worker_ms']}; before "
        f"{HOSTILE_COST_BEFORE[kind]})"
        for kind, c in cost.items()
    )
    return [f"| ingest CPU per request, event loop + other threads, ms (bench/hostile_cost.py) | {cells} |"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=20000, help="deliveries per measurement (default %(default)s)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating raw/sender rounds; best kept")
    parser.add_argument("--concurrency", type=int, default=32, help="maxInFlight and client concurrency")
    parser.add_argument("--format", choices=("json", "form"), default="json")
    parser.add_argument(
        "--wrk-seconds", type=float, default=3.0, help="seconds of each wrk round (bench/wrk.py); 0 skips"
    )
    parser.add_argument("--ingest-events", type=int, default=50000, help="events posted to ingest")
    parser.add_argument("--batch", type=int, default=100, help="events per ingest request")
    parser.add_argument("--ingest-clients", type=int, default=4, help="concurrent ingest clients")
    parser.add_argument("--latency-rate", type=float, default=500.0, help="events/s for the latency run")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="0 skips the latency run")
    parser.add_argument(
        "--ratelimit-limit", type=float, default=100.0, help="maxRequestsPerSecond for the rate-limit run"
    )
    parser.add_argument(
        "--ratelimit-seconds", type=float, default=20.0, help="backlog at the limit, seconds; 0 skips"
    )
    parser.add_argument(
        "--hostile-seconds",
        type=float,
        default=6.0,
        help="quiet and attacked ingest phases, seconds; 0 skips",
    )
    parser.add_argument(
        "--batch-events",
        type=int,
        default=40000,
        help="events per batched-delivery run (default %(default)s)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[1, 10, 100],
        help="maxEvents of the batched runs, 1 meaning no batch (default 1,10,100)",
    )
    parser.add_argument(
        "--batch-rounds",
        type=int,
        default=2,
        help="rounds of the batched runs, alternating settings, the best of each kept (default %(default)s)",
    )
    parser.add_argument(
        "--batch-wait-ms", type=int, default=50, help="maxWaitMilliseconds of the batched runs"
    )
    parser.add_argument(
        "--bundle-size",
        type=int,
        default=100,
        help="the batched runs again, events stored in bundles of this many (1: not; default %(default)s)",
    )
    parser.add_argument(
        "--nats-consumers",
        type=int,
        default=1000,
        help="Webhook consumers on one nats-server for the RSS/publish-rate run (0 skips; "
        "bench/nats_consumers.py measures 10,000)",
    )
    parser.add_argument(
        "--auth-events",
        type=int,
        default=5000,
        help="events of the NATS auth on/off run (bench/nats_auth_cost.py; 0 skips)",
    )
    parser.add_argument(
        "--pool-events",
        type=int,
        default=40000,
        help="events of the sender-pool throughput runs, spread over 100 Webhooks: 400 each (with ~200 "
        "each the 100 engines' start, ~0.25 s, was a fifth of a run and set its rate more than "
        "delivery did), after its 1/100/1,000-Webhook memory run (0 skips; bench/pool.py runs the "
        "full variant)",
    )
    parser.add_argument(
        "--pool-rounds",
        type=int,
        default=2,
        help="alternating dedicated/pool rounds of the bundled pool run, the best of each kept "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--signing-events",
        type=int,
        default=5000,
        help="deliveries per signing scheme (bench/signing.py); 0: signatures/s only; -1 skips",
    )
    parser.add_argument(
        "--quiet-webhooks",
        type=int,
        default=1000,
        help="quiet pooled Webhooks whose NATS requests/s are counted (bench/quiet_cost.py; 0 skips)",
    )
    parser.add_argument("--quiet-seconds", type=float, default=60.0, help="their counting window")
    parser.add_argument(
        "--fleet-events",
        type=int,
        default=20000,
        help="events for 100 Webhooks on one pool replica, then on 100 senders (bench/fleet.py; 0 skips)",
    )
    parser.add_argument(
        "--operator-webhooks",
        type=int,
        default=1000,
        help="Webhooks for the operator's peak RSS on a real API server (bench/operator_scale.py; 0 skips)",
    )
    parser.add_argument("--report", default=str(ROOT / "bench" / "report.md"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
