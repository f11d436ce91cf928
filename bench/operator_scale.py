"""Scale of the operator: N Webhooks (default 500) from creation to Ready, and the operator's peak RSS.

The operator runs as a real `hookline operator` process whose kubeconfig points at the strict API
emulator the operator tests use (tests/support/strict_api.py: kube-apiserver's refusals, the CRDs'
schemas, the chart's RBAC for the operator's ServiceAccount); one loopback site serves
every Webhook's verification file; a real nats-server holds the consumers. The emulator has no
Deployment controller, so this script plays it: each sender Deployment that appears gets the status a
controller reports once its pods are up. Prints the time until all Webhooks are Ready and the
operator's peak resident memory (VmHWM). Bounded by --timeout.

With --pool-replicas N the Webhooks run in a sender pool instead (the chart's StatefulSet with N
replicas, HOOKLINE_DEFAULT_SENDER_MODE=Pool): no Deployments; this script plays the replicas'
side, writing each replica's roster for what the operator assigned to it (bench/pool.py measures the
replicas themselves).

With --real-api the same runs against a real kube-apiserver v1.36, etcd and kube-controller-manager
(bench/operator_realapi.py; `make k8s-assets`). Either way the objects weigh what real ones do: the
server (or the emulator, tests/support/strict_api.py managed_fields) writes managedFields, and each
Webhook carries kubectl's last-applied annotation. --restart then starts a new operator among them all
(it lists and resumes every Webhook) and reports its peak RSS too.

    .venv/bin/python bench/operator_scale.py [--webhooks 500] [--timeout 900] [--pool-replicas 4]
        [--real-api] [--restart] [--progress FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import kmock
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))

from kmock._internal import enums  # noqa: E402
from operator_helpers import (  # noqa: E402
    DEPLOYMENTS,
    EVENTS,
    STATEFULSETS,
    WEBHOOKS,
    api_path,
    declare_resources,
    start_operator_process,
    start_token_site,
    stop_operator_process,
    write_kubeconfig,
)
from operator_realapi import RealApi, as_kubectl_applies  # noqa: E402
from strict_api import StrictCluster  # noqa: E402

from hookline.operator.loops.poolsync import POOL_LABEL, POOL_SELECTOR  # noqa: E402
from hookline.sender import bus  # noqa: E402
from hookline.sender.bus.natsserver import EmbeddedNats  # noqa: E402
from hookline.sender.bus.poolproto import (  # noqa: E402
    ROSTER_INTERVAL,
    PoolKey,
    Roster,
    parse_assignment_key,
    pool_bucket,
    roster_key,
)

NS = "bench"
POOL_KEY = "a pool key for the operator bench, 32+ characters"


class BenchCluster(StrictCluster):
    """The test emulator, noting what the bench waits for as requests pass (no polling of objects:
    the emulator's lookups are linear in the number of objects, and polling would measure that)."""

    def __init__(self) -> None:
        super().__init__(managed_fields=True)  # objects as heavy as on a real API server

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.created_deployments: asyncio.Queue[tuple[str, str, int]] = asyncio.Queue()
        self.ready: set[str] = set()
        self.requests: dict[str, int] = {}  # by action (CREATE, UPDATE, ...), events included

    async def writes(self) -> int:
        return sum(n for action, n in self.requests.items() if action in ("CREATE", "UPDATE", "DELETE"))

    async def _handle(self, request: kmock.Request) -> web.StreamResponse:
        action = str(getattr(request.action, "value", request.action))
        self.requests[action] = self.requests.get(action, 0) + 1
        if request.action == enums.action.CREATE and request.resource == kmock.resource(EVENTS):
            return web.json_response(request.data, status=201)  # accepted, not kept: nobody reads them
        response = await super()._handle(request)
        data = request.data if isinstance(request.data, dict) else {}
        if request.action == enums.action.CREATE and request.resource == kmock.resource(DEPLOYMENTS):
            meta = data.get("metadata", {})
            replicas = data.get("spec", {}).get("replicas", 1)
            self.created_deployments.put_nowait((meta.get("namespace"), meta.get("name"), replicas))
        elif request.resource == kmock.resource(WEBHOOKS) and request.subresource == "status":
            for condition in (data.get("status") or {}).get("conditions") or []:
                if condition.get("type") == "Ready":
                    (self.ready.add if condition.get("status") == "True" else self.ready.discard)(
                        request.name
                    )
        return response


async def play_deployment_controller(cluster: BenchCluster) -> None:
    """Report every sender Deployment as available, as the real controller would once pods run."""
    while True:
        namespace, name, replicas = await cluster.created_deployments.get()
        status = {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}
        await cluster.call("PATCH", api_path(DEPLOYMENTS, namespace, name, "status"), {"status": status})


async def play_pool_replicas(nats_url: str, pool: str, replicas: int) -> None:
    """Report every assigned Webhook as running in its replica, as `hookline pool` replicas would."""
    key = PoolKey(POOL_KEY)
    nc = await bus.connect(nats_url)
    try:
        kv = await pool_bucket(nc.jetstream())
        running: dict[int, set[str]] = {r: set() for r in range(replicas)}
        dirty: set[int] = set()

        async def write() -> None:
            last = 0.0
            while True:
                await asyncio.sleep(0.5)
                if (
                    time.time() - last >= ROSTER_INTERVAL
                ):  # a replica's heartbeat, as `hookline pool` writes it
                    dirty.update(running)
                    last = time.time()
                for replica in list(dirty):
                    dirty.discard(replica)
                    roster = Roster(pool, replica, time.time(), sorted(running[replica]))
                    at = roster_key(pool, replica)
                    await kv.put(at, key.sign_record(at, roster.to_bytes()))

        writer = asyncio.create_task(write())
        try:
            watcher = await kv.watch(f"a.{pool}.>")
            async for entry in watcher:
                if entry is None:
                    continue
                parsed = parse_assignment_key(entry.key)
                if parsed is None or parsed[1] not in running:
                    continue
                deleted = entry.operation is not None or entry.value is None
                (running[parsed[1]].discard if deleted else running[parsed[1]].add)(parsed[2])
                dirty.add(parsed[1])
        finally:
            writer.cancel()
    finally:
        await nc.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_sockets(pid: int) -> int:
    """The process's open sockets (its API server connections, mostly: each TLS one costs memory)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    count = 0
    for fd in fds:
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    return count


def peak_rss_mib(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def bench(
    count: int,
    limit_seconds: float,
    steady_seconds: float = 0.0,
    as_json: bool = False,
    pool_replicas: int = 0,
    real_api: bool = False,
    progress: Path | None = None,
    restart: bool = False,
) -> int:
    timeout = limit_seconds
    tmpdir = tempfile.TemporaryDirectory(prefix="hookline-bench-")
    with tmpdir as tmp, EmbeddedNats(Path(tmp) / "nats") as nats, contextlib.ExitStack() as files:
        async with contextlib.AsyncExitStack() as stack:
            target: BenchCluster | RealApi
            if real_api:
                target = await stack.enter_async_context(RealApi(Path(tmp), NS))
                kubeconfig = Path(tmp) / "operator.kubeconfig"
            else:
                target = await stack.enter_async_context(BenchCluster())
                await stack.enter_async_context(kmock.Server(target))
                declare_resources(target)
                kubeconfig = write_kubeconfig(Path(tmp) / "kubeconfig", target)
            runner, base, hits = await start_token_site()
            env = {
                **os.environ,
                "KUBECONFIG": str(kubeconfig),
                "HOOKLINE_NATS_URL": nats.url,
                "HOOKLINE_SENDER_IMAGE": "ghcr.io/hookline/hookline:bench",
            }
            controller: asyncio.Task[None] | None = None
            if pool_replicas:
                key_file = Path(tmp) / "pool-key"
                key_file.write_text(POOL_KEY)
                env |= {"HOOKLINE_DEFAULT_SENDER_MODE": "Pool", "HOOKLINE_POOL_KEY_FILE": str(key_file)}
                labels = {**POOL_SELECTOR, POOL_LABEL: "default"}
                statefulset = {
                    "apiVersion": "apps/v1",
                    "kind": "StatefulSet",
                    "metadata": {"name": "hookline-pool-default", "namespace": NS, "labels": labels},
                    "spec": {"replicas": pool_replicas, "selector": {"matchLabels": labels}},
                }
                if real_api:  # a real StatefulSet needs a pod template
                    container = {"name": "pool", "image": "ghcr.io/hookline/hookline:bench"}
                    template = {"metadata": {"labels": labels}, "spec": {"containers": [container]}}
                    statefulset["spec"] |= {"serviceName": "hookline-pool-default", "template": template}
                await target.call("POST", api_path(STATEFULSETS, NS), statefulset)
                controller = asyncio.create_task(play_pool_replicas(nats.url, "default", pool_replicas))
            elif not real_api:
                assert isinstance(target, BenchCluster)
                controller = asyncio.create_task(play_deployment_controller(target))
            if isinstance(target, RealApi):
                target.start_playing(pool=bool(pool_replicas))
            operator, log = start_operator_process(env, Path(tmp) / "operator.log")
            report = files.enter_context(progress.open("a")) if progress else None
            names = [f"wh-{i:05d}" for i in range(count)]
            try:
                started = time.perf_counter()
                limit = asyncio.Semaphore(50)

                async def create(name: str) -> None:
                    async with limit:
                        body = {
                            "apiVersion": "hookline.io/v1alpha1",
                            "kind": "Webhook",
                            "metadata": {"name": name, "namespace": NS},
                            "spec": {"url": f"{base}/hooks/{name}.php", "events": ["open", "click"]},
                        }
                        await target.call("POST", api_path(WEBHOOKS, NS), as_kubectl_applies(body))

                await asyncio.gather(*(create(n) for n in names))
                created = time.perf_counter() - started
                deadline = started + timeout
                ready, said, sockets = 0, 0.0, 0
                while ready < count:
                    if operator.poll() is not None:
                        tail = (Path(tmp) / "operator.log").read_text(errors="replace").splitlines()[-30:]
                        print("\n".join(tail), file=sys.stderr)
                        print(f"the operator exited with {operator.returncode}", file=sys.stderr)
                        return 1
                    if time.perf_counter() > deadline:
                        print(f"timeout: {ready}/{count} Ready after {timeout:.0f} s", file=sys.stderr)
                        return 1
                    await asyncio.sleep(0.5)
                    ready = len(target.ready)
                    sockets = max(sockets, open_sockets(operator.pid))
                    if report is not None and time.perf_counter() - said >= 30:
                        said = time.perf_counter()
                        report.write(
                            f"{time.strftime('%H:%M:%S')} {ready}/{count} Ready after "
                            f"{said - started:.0f} s; operator RSS {peak_rss_mib(operator.pid, 'VmRSS'):.0f} "
                            f"MiB, peak {peak_rss_mib(operator.pid):.0f} MiB; "
                            f"sockets {open_sockets(operator.pid)}, peak {sockets}\n"
                        )
                        report.flush()
                elapsed = time.perf_counter() - started
                rss = peak_rss_mib(operator.pid)
                cpu = cpu_seconds(operator.pid)
                # Steady state: every Webhook Ready, nothing changing; what does the operator still
                # write (status, events, Deployments) and how much memory does it keep?
                writes_before, steady_started = await target.writes(), time.perf_counter()
                steady_rss = peak_rss_mib(operator.pid, "VmRSS")
                if steady_seconds > 0:
                    await asyncio.sleep(steady_seconds)  # a measurement window, not a wait for a condition
                    steady_rss = peak_rss_mib(operator.pid, "VmRSS")
                window = max(1e-9, time.perf_counter() - steady_started)
                writes_per_minute = (await target.writes() - writes_before) * 60 / window
                final_peak = peak_rss_mib(operator.pid)
                restarted: tuple[float, float] | None = None
                if restart:
                    # A new operator among all of them: it lists them (in pages) and resumes each.
                    stop_operator_process(operator, log)
                    operator, log = start_operator_process(env, Path(tmp) / "operator-restarted.log")
                    restarted = await settle(operator.pid, deadline)
            finally:
                if controller is not None:
                    controller.cancel()
                stop_operator_process(operator, log)
                await runner.cleanup()
            tier = "real kube-apiserver" if real_api else "emulator"
            if as_json:
                print(
                    json.dumps(
                        {
                            "webhooks": count,
                            "tier": tier,
                            "pool_replicas": pool_replicas,
                            "ready_seconds": round(elapsed, 1),
                            "peak_rss_mib": round(max(rss, final_peak), 1),
                            "steady_rss_mib": round(steady_rss, 1),
                            "steady_seconds": steady_seconds,
                            "api_writes_per_minute": round(writes_per_minute, 1),
                            "operator_cpu_seconds": round(cpu, 1),
                            "operator_peak_sockets": sockets,
                            "restart_peak_rss_mib": round(restarted[1], 1) if restarted else None,
                            "restart_settled_seconds": round(restarted[0], 1) if restarted else None,
                            "api_requests_by_action": getattr(target, "requests", {}),
                        }
                    )
                )
            print(
                f"webhooks: {count} on the {tier}"
                + (f" (in a pool of {pool_replicas} replicas)" if pool_replicas else "")
            )
            print(f"created in: {created:.1f} s")
            print(f"all Ready after: {elapsed:.1f} s (from the first create)")
            print(f"verification requests at the site: {hits[0]}")
            print(f"operator peak RSS: {max(rss, final_peak):.0f} MiB")
            print(f"operator CPU time: {cpu:.1f} s (the rest of the wall time is the API server's)")
            print(f"operator's open sockets at most: {sockets} (sampled every 0.5 s)")
            if steady_seconds > 0:
                print(
                    f"steady state over {window:.0f} s: RSS {steady_rss:.0f} MiB, "
                    f"{writes_per_minute:.1f} API writes/min"
                )
            if restarted:
                print(
                    f"a restarted operator among all {count}: peak RSS {restarted[1]:.0f} MiB, "
                    f"quiet again after {restarted[0]:.0f} s"
                )
            faults = (
                target.operator_faults()
                if isinstance(target, BenchCluster)
                else operator_refusals(Path(tmp) / "operator.log")
            )
            if faults:
                print(f"the API refused or pruned the operator {len(faults)} times:", file=sys.stderr)
                print("\n".join(faults[:20]), file=sys.stderr)
                return 1
            return 0


async def settle(pid: int, deadline: float, quiet: float = 10.0) -> tuple[float, float]:
    """Wait until the process used under 5 % of a core over ``quiet`` seconds (a restarted operator
    done resuming); (seconds it took, its peak RSS in MiB)."""
    started = time.perf_counter()
    await asyncio.sleep(quiet)  # at least one window: it starts by logging in and listing
    before = cpu_seconds(pid)
    while time.perf_counter() < deadline:
        await asyncio.sleep(quiet)
        now = cpu_seconds(pid)
        if now - before < 0.05 * quiet:
            break
        before = now
    return time.perf_counter() - started, peak_rss_mib(pid)


def operator_refusals(log_path: Path) -> list[str]:
    """Lines of the operator's log that say the real API server refused it (as tests/realapi reads)."""
    signs = ("inconsistencies", "Forbidden", " 403", " 422", "UnprocessableEntity")
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    return [line for line in lines if any(sign in line for sign in signs)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webhooks", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    parser.add_argument(
        "--steady-seconds",
        type=float,
        default=0.0,
        help="after all are Ready, count the operator's API writes and read its RSS over this window",
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument(
        "--pool-replicas", type=int, default=0, help="run the Webhooks in a sender pool of this many replicas"
    )
    parser.add_argument(
        "--real-api",
        action="store_true",
        help="a real kube-apiserver, etcd and kube-controller-manager (make k8s-assets), not the emulator",
    )
    parser.add_argument("--progress", type=Path, help="append the Ready count and RSS every 30 s here")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="then stop the operator, start a new one among all the Webhooks and report its peak RSS",
    )
    args = parser.parse_args()
    return asyncio.run(
        bench(
            args.webhooks,
            args.timeout,
            args.steady_seconds,
            args.json,
            args.pool_replicas,
            args.real_api,
            args.progress,
            args.restart,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
