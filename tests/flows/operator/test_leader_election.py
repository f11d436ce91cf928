"""Two `hookline operator` processes with leader election against the strict API emulator.

Each logs in with its own token (the same RBAC rules, the chart's, under two user names), so every
request the emulator serves is known to come from one of them. The leader is SIGKILLed in the middle
of a reconcile (its ownership check hangs at the customer's site): the standby takes the Lease once it
has expired and finishes the Webhook, and the emulator's record shows that the two never worked at the
same time (the standby touched nothing but the Lease while the leader lived). A clean stop hands the
Lease over at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import kubernetes_validate
import pytest
import yaml
from aiohttp import web
from operator_helpers import (
    CONFIGMAPS,
    DEPLOYMENTS,
    LEASES,
    NS,
    OPERATOR_TOKEN,
    WEBHOOKS,
    api_path,
    condition,
    serve_on_loopback,
    start_operator_process,
    wait_for,
)
from strict_api import RELEASE_NAMESPACE, Identity, StrictCluster, chart_identity

LEASE = "hookline-operator"  # the chart's <fullname>-operator for the release "hookline"
STANDBY_TOKEN = "emulator-hookline-operator-b"
TOKEN_FILE = re.compile(r"/hookline-([0-9a-f]{32})\.txt$")
TIMING = {  # seconds: a dead leader is replaced within lease + retry
    "HOOKLINE_LEASE_DURATION_SECONDS": "3",
    "HOOKLINE_LEASE_RENEW_DEADLINE_SECONDS": "2",
    "HOOKLINE_LEASE_RETRY_PERIOD_SECONDS": "0.25",
}


@dataclass
class Request:
    at: float
    user: str
    verb: str
    resource: str


@dataclass
class Timeline:
    """Every request the emulator authorized, in order, by user."""

    requests: list[Request] = field(default_factory=list)

    def of(self, user: str, *, leases: bool = False) -> list[Request]:
        return [r for r in self.requests if r.user == user and (r.resource == "leases") == leases]


def record(cluster: StrictCluster) -> Timeline:
    timeline = Timeline()
    authorize = cluster._authorize

    def recording(identity: Identity, verb: str, resource: Any, name: Any, sub: Any, namespace: Any) -> None:
        authorize(identity, verb, resource, name, sub, namespace)
        timeline.requests.append(Request(time.monotonic(), identity.user, verb, str(resource.plural)))

    cluster._authorize = recording  # type: ignore[method-assign]
    return timeline


class HangingSite:
    """A customer site serving every verification file; the first check hangs until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.hanging = asyncio.Event()
        self.base = ""

    async def handle(self, request: web.Request) -> web.Response:
        match = TOKEN_FILE.search(request.path)
        if not match:
            return web.Response(status=404)
        if not self.hanging.is_set():
            self.hanging.set()
            await self.release.wait()
        return web.Response(text=match.group(1))


@pytest.fixture
async def hanging_site() -> AsyncIterator[HangingSite]:
    site = HangingSite()
    runner, site.base = await serve_on_loopback(site.handle)
    yield site
    site.release.set()
    await runner.cleanup()


@dataclass
class Replica:
    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    log_path: Path

    def entries(self) -> list[dict[str, Any]]:
        """The process's log lines (JSON, HOOKLINE_LOG_FORMAT=json)."""
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def said(self, text: str) -> bool:
        return any(text in e["message"] for e in self.entries())

    async def stop(self) -> int:
        """SIGTERM, waited for off the event loop: the emulator runs on it and must keep answering
        (a replica stopping releases its Lease through it)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, 10)
        self.log.close()
        return self.process.returncode


@pytest.fixture
async def replicas(cluster: StrictCluster, nats_server: Any, tmp_path: Path) -> AsyncIterator[Any]:
    """Start operator replicas as processes, each with its own token (the chart's RBAC rules)."""
    rules = chart_identity().rules
    tokens = {"op-a": OPERATOR_TOKEN, "op-b": STANDBY_TOKEN}
    cluster.identities[STANDBY_TOKEN] = Identity("system:serviceaccount:hookline:hookline-operator-b", rules)
    started: list[Replica] = []

    def start(name: str) -> Replica:
        kubeconfig = tmp_path / f"{name}.kubeconfig"
        server = str(cluster.url).rstrip("/")
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "e", "cluster": {"server": server}}],
                    "users": [{"name": "e", "user": {"token": tokens[name]}}],
                    "contexts": [{"name": "e", "context": {"cluster": "e", "user": "e"}}],
                    "current-context": "e",
                }
            )
        )
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "HOOKLINE_NATS_URL": nats_server.url,
            "HOOKLINE_SENDER_IMAGE": "ghcr.io/hookline/hookline:test",
            "HOOKLINE_LEADER_ELECTION_LEASE": LEASE,
            "HOOKLINE_POD_NAMESPACE": RELEASE_NAMESPACE,
            "HOOKLINE_POD_NAME": name,
            "HOOKLINE_LOG_FORMAT": "json",
            **TIMING,
        }
        log_path = tmp_path / f"{name}.log"
        process, log = start_operator_process(env, log_path)
        replica = Replica(name, process, log, log_path)
        started.append(replica)
        return replica

    yield start
    for replica in started:
        await replica.stop()
    standby_user = cluster.identities[STANDBY_TOKEN].user
    refused = [
        f"{r.method} {r.path}: {r.code} {r.message}" for r in cluster.refusals if r.user == standby_user
    ]
    assert not [
        r for r in cluster.refusals if r.user == standby_user and r.code in (400, 401, 403, 415, 422)
    ], refused


def holder(cluster: StrictCluster) -> str | None:
    lease = cluster.get(LEASES, LEASE, namespace=RELEASE_NAMESPACE)
    return lease and lease["spec"].get("holderIdentity")


async def create_webhook(cluster: StrictCluster, name: str, url: str) -> None:
    body = {
        "apiVersion": "hookline.io/v1alpha1",
        "kind": "Webhook",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"url": url, "events": ["click"]},
    }
    await cluster.call("POST", api_path(WEBHOOKS), body)


async def test_the_standby_takes_over_a_leader_killed_mid_reconcile(cluster, replicas, hanging_site):
    timeline = record(cluster)
    leader = replicas("op-a")
    await wait_for(lambda: holder(cluster) == "op-a", "op-a leading", 30)
    standby = replicas("op-b")
    await wait_for(lambda: standby.said("holds Lease"), "op-b waiting as a standby", 30)

    await create_webhook(cluster, "handover", f"{hanging_site.base}/hooks/handover.php")
    # The leader is in the middle of the Webhook's reconcile: its ownership check waits at the site.
    await asyncio.wait_for(hanging_site.hanging.wait(), 30)
    killed_at = time.monotonic()
    leader.process.send_signal(signal.SIGKILL)
    leader.process.wait(10)

    await wait_for(lambda: holder(cluster) == "op-b", "op-b taking the Lease", 15)
    taken_at = min(
        r.at
        for r in timeline.of(standby_user(cluster), leases=True)
        if r.verb == "update" and r.at > killed_at
    )
    # Within the lease duration (3 s) and a few retries of the standby: seconds, not minutes.
    assert taken_at - killed_at < 3 + 2, f"took over {taken_at - killed_at:.1f} s after the kill"

    webhook = await wait_for(
        lambda: (
            (w := cluster.get(WEBHOOKS, "handover"))
            and condition(w, "Verified").get("status") == "True"
            and cluster.get(DEPLOYMENTS, "handover-sender")
        ),
        "the new leader verifying the Webhook and creating its sender",
        30,
    )
    assert webhook
    deployment = cluster.get(DEPLOYMENTS, "handover-sender")
    kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)
    assert cluster.get(CONFIGMAPS, "handover-sender")

    # Never two at once: the standby touched nothing but the Lease while the leader lived, and all the
    # leader's work reached the API before the standby's began. (Not "before killed_at": a request the
    # leader sent just before the SIGKILL may be read by the API a few milliseconds after it.)
    leader_work = timeline.of(cluster.identities[OPERATOR_TOKEN].user)
    standby_work = timeline.of(standby_user(cluster))
    assert leader_work and standby_work
    assert max(r.at for r in leader_work) < min(r.at for r in standby_work)
    assert min(r.at for r in standby_work) >= taken_at
    assert standby.said("leads (Lease")
    assert standby.process.poll() is None


async def test_a_clean_stop_hands_the_lease_over_at_once(cluster, replicas):
    timeline = record(cluster)
    leader = replicas("op-a")
    await wait_for(lambda: holder(cluster) == "op-a", "op-a leading", 30)
    standby = replicas("op-b")
    await wait_for(lambda: standby.said("holds Lease"), "op-b waiting as a standby", 30)
    stopped_at = time.monotonic()
    assert await leader.stop() == 0
    assert leader.said("released Lease")
    await wait_for(lambda: holder(cluster) == "op-b", "op-b taking the released Lease", 10)
    taken_at = min(
        r.at
        for r in timeline.of(standby_user(cluster), leases=True)
        if r.verb == "update" and r.at > stopped_at
    )
    # A released Lease is taken at the standby's next look, not after the lease duration.
    stop_seconds = max(r.at for r in timeline.of(cluster.identities[OPERATOR_TOKEN].user, leases=True))
    assert taken_at - stop_seconds < 1.5
    lease = cluster.get(LEASES, LEASE, namespace=RELEASE_NAMESPACE)
    assert lease["spec"]["leaseTransitions"] == 1


def standby_user(cluster: StrictCluster) -> str:
    return cluster.identities[STANDBY_TOKEN].user
