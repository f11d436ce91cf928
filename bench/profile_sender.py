"""Where one `hookline sender` process spends its CPU, per delivery, and who else burns the 2 cores.

Starts nats-server, the counting receiver of bench/profile_http.py (its own process) and a real
`hookline sender` for one signed JSON Webhook, with the events already in its consumer (as bench/run.py
does), and waits until the receiver has them all. Reports microseconds of CPU per delivery for the
sender, nats-server and the receiver (from /proc, between "sender ready" and "last request received"),
the delivery rate at the receiver, and the TCP connections the sender opened. With `--py-spy` it also
samples the sender (py-spy, in the venv, not a project dependency) and prints the functions with the
most self and total time, and the samples split by what the sender is doing (`CATEGORIES`; on asyncio's
loop: py-spy charges uvloop's C code to the last Python frame).

    .venv/bin/python bench/profile_sender.py --events 20000
    .venv/bin/python bench/profile_sender.py --events 20000 --py-spy /tmp/perf/sender.txt --top 30
    HOOKLINE_EVENT_LOOP=asyncio .venv/bin/python bench/profile_sender.py --py-spy /tmp/perf/s.txt  # the split
    .venv/bin/python bench/profile_sender.py --events 20000 --cprofile /tmp/perf/sender.prof --top 40
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import io
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import run as run_bench  # noqa: E402  (bench/ is this script's own folder on sys.path)

from hookline.sender import bus  # noqa: E402
from hookline.sender.bus.natsserver import EmbeddedNats, free_port, terminate  # noqa: E402
from hookline.sender.model.config import load_sender_config  # noqa: E402
from hookline.sender.model.events import parse_event  # noqa: E402

PROFILE_HTTP = ROOT / "bench" / "profile_http.py"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system (kernel) CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def sample_event(i: int) -> dict:
    """The same click event bench/run.py measures with."""
    return run_bench.sample_event(i, "ps")


async def get_json(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(url) as response:
        return await response.json()


async def wait_until(check: object, what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            if await check():  # type: ignore[operator]
                return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{what} not within {within:g}s")


# Where a delivery's CPU goes, by what the sampled stack is doing (first matching rule wins; "idle"
# looks only at the innermost frames). On uvloop py-spy sees no Python frame for the loop's own C code
# and charges it to the last one: run with HOOKLINE_EVENT_LOOP=asyncio for this split.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("idle (waiting in the loop)", ("_get_loop", "EpollSelector.select")),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("NATS acks and NAKs", ("Msg.ack", "Msg.nak", "Client.publish", "Client._flusher", "_flush_pending")),
    (
        "NATS reads (parser, messages, feed)",
        ("Client._read_loop", "Parser.parse", "_process_msg", "MessageFeed"),
    ),
    ("HTTP client (sender/transport, its socket I/O)", ("SafeHTTPClient", "http1.py", "_Connection")),
    ("signing and headers (Delivery.build)", ("Delivery.build",)),
    ("event decoding (Event.from_bytes)", ("Event.from_bytes",)),
    ("engine bookkeeping (the rest of delivery/)", ("sender/delivery/", "deliveryhealth")),
)


def categorize(stack: list[str]) -> str:
    idle_keys = CATEGORIES[0][1]
    if any(k in frame for frame in stack[-3:] for k in idle_keys):
        return CATEGORIES[0][0]
    for name, keys in CATEGORIES[1:]:
        if any(k in frame for frame in stack for k in keys):
            return name
    return "event loop and the rest"


def summarize_py_spy(raw_file: Path, top: int) -> str:
    """Self and total samples per function from py-spy's collapsed-stack output."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw_file.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        samples += count
        kinds[categorize(stack.split(";"))] += count
        frames = [f.split(" (", 1)[0] + " " + f.rsplit("/", 1)[-1].split(":")[0] for f in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples; self time:"]
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("total time (including callees):")
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in total.most_common(top)]
    lines.append("by what the sender is doing:")
    lines += [f"  {100 * n / samples:5.1f}%  {name}" for name, n in kinds.most_common()]
    return "\n".join(lines)


async def measure(args: argparse.Namespace, tmp: Path, nats: EmbeddedNats, receiver_port: int) -> int:
    base = f"http://127.0.0.1:{receiver_port}"
    config, listen, _ = run_bench.write_sender_config(
        tmp, nats.url, f"{base}/hooks/copernica.php", args.concurrency, args.format, "profile"
    )
    nc = await bus.connect(nats.url)
    js = nc.jetstream()
    await bus.ensure_stream(js)
    await bus.ensure_consumer(js, load_sender_config(config))
    events = [parse_event(sample_event(i)) for i in range(args.events)]
    for start in range(0, len(events), 500):
        await bus.publish_events(nc, js, events[start : start + 500], ack_timeout=30)
    await nc.close()
    log = args.sender_log
    command = [sys.executable, "-m", "hookline.cli", "sender", "--config", str(config)]
    if args.cprofile:
        command = [sys.executable, __file__, "--profiled-sender", args.cprofile, *command[3:]]
    # cwd: never the project root, whose operator/ folder would shadow the standard library module.
    sender = subprocess.Popen(command, stdout=log, stderr=log, cwd=tmp)  # noqa: ASYNC220 (a one-off start)
    spy: subprocess.Popen[bytes] | None = None
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/reset") as response:
                await response.read()

            async def ready() -> bool:
                if sender.poll() is not None:
                    raise RuntimeError(f"sender exited with {sender.returncode}; see {tmp / 'sender.log'}")
                async with http.get(f"http://{listen}/readyz") as response:
                    return response.status == 200

            await wait_until(ready, "sender ready", 60)
            if args.py_spy:
                spy_bin = Path(sys.executable).parent / "py-spy"
                spy = subprocess.Popen(  # noqa: ASYNC220
                    [
                        *(str(spy_bin), "record", "--pid", str(sender.pid), "--rate", str(args.rate)),
                        *("--format", "raw", "--gil", "--output", args.py_spy),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            if args.cprofile:
                sender.send_signal(signal.SIGUSR1)  # start profiling now that the sender is ready
            # Deliveries start as the sender gets ready; CPU counts from here, over the ones still to come.
            pids = {"sender": sender.pid, "nats-server": nats.proc.pid, "receiver": args.receiver_pid}
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            already = (await get_json(http, f"{base}/stats"))["count"]

            async def all_received() -> bool:
                return (await get_json(http, f"{base}/stats"))["count"] >= args.events

            await wait_until(all_received, f"{args.events} deliveries", 300)
            cpu_after = {name: cpu_seconds(pid) for name, pid in pids.items()}
            stats = await get_json(http, f"{base}/stats")
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        terminate(sender, timeout=30)
    n = args.events - already
    span = stats["last"] - stats["first"]
    print(f"{n} signed {args.format} deliveries, maxInFlight {args.concurrency}:")
    print(f"  rate at the receiver: {(stats['count'] - 1) / span:.0f}/s")
    print(f"  connections the sender opened: {stats['connections']}")
    for name in pids:
        user, system = (1e6 * (a - b) / n for a, b in zip(cpu_after[name], cpu_before[name], strict=True))
        print(
            f"  {name:12} {user + system:6.1f} us CPU per delivery ({user:5.1f} user, {system:5.1f} system)"
        )
    if args.py_spy:
        print(summarize_py_spy(Path(args.py_spy), args.top))
    if args.cprofile:
        out = io.StringIO()
        pstats.Stats(args.cprofile, stream=out).sort_stats(args.sort).print_stats(args.top)
        print(out.getvalue())
    return 0


def run_profiled_sender(output: str, argv: list[str]) -> int:
    """The sender under cProfile, from SIGUSR1 until it exits (cProfile's own clock: a CPU-time clock
    costs a syscall per call, which swamps what it measures)."""
    from hookline.cli import main as cli_main

    profiler = cProfile.Profile()
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    try:
        return cli_main(argv)
    finally:
        profiler.disable()
        profiler.dump_stats(output)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--profiled-sender"]:
        return run_profiled_sender(argv[1], argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--format", choices=("json", "form"), default="json")
    parser.add_argument("--py-spy", metavar="FILE", help="sample the sender into FILE (collapsed stacks)")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--cprofile", metavar="FILE", help="profile the sender's CPU time with cProfile")
    parser.add_argument("--sort", default="tottime", help="pstats sort key for --cprofile")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    receiver_port = free_port()
    receiver = subprocess.Popen([sys.executable, str(PROFILE_HTTP), "--serve", str(receiver_port)])
    args.receiver_pid = receiver.pid
    try:
        with tempfile.TemporaryDirectory(prefix="hookline-profile-") as tmp_name:
            tmp = Path(tmp_name)
            with (
                EmbeddedNats(tmp / "nats", log_file=tmp / "nats.log") as nats,
                open(tmp / "sender.log", "wb") as args.sender_log,
            ):
                return asyncio.run(measure(args, tmp, nats, receiver_port))
    finally:
        receiver.terminate()
        receiver.wait(30)


if __name__ == "__main__":
    sys.exit(main())
