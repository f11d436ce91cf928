"""The real API server tier for bench/operator_scale.py --real-api: etcd, kube-apiserver v1.36 and
kube-controller-manager (garbage collector on, Deployment controller off) on loopback, the CRDs from
crds/ and the chart's RBAC, the operator logged in with a TokenRequest token of the chart's
ServiceAccount (tests/realapi does the same in-process; here the operator is a process of its own).

Objects are as large as a real cluster makes them: the server writes managedFields on every write,
and the bench creates each Webhook as `kubectl apply` (client-side) would, with the
`kubectl.kubernetes.io/last-applied-configuration` annotation. The bench plays the Deployment
controller through the status subresource and follows Ready with one watch of the namespace's
Webhooks (no polling of 10,000 objects).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from controlplane import ControlPlane
from kubecerts import kubeconfig
from operator_helpers import DEPLOYMENTS, WEBHOOKS, api_path
from realapi_helpers import BUSY_STATUSES, MERGE, KubeClient, kubectl, start_cluster

from hookline.operator.adapters.apisession import LAST_APPLIED

TOKEN_SECONDS = 24 * 3600  # a 10,000-Webhook run takes longer than an hour


def as_kubectl_applies(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with the annotation client-side `kubectl apply` adds: the object as applied, in JSON."""
    applied = json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"
    meta = body.setdefault("metadata", {})
    meta.setdefault("annotations", {})[LAST_APPLIED] = applied
    return body


class RealApi:
    """One control plane for a bench run; the admin's aiohttp session; what the bench waits for."""

    def __init__(self, workdir: Path, namespace: str) -> None:
        self.workdir = workdir
        self.namespace = namespace
        self.plane = ControlPlane(workdir / "k8s")
        self.ready: set[str] = set()
        self.client: KubeClient | None = None  # requests
        self.session: aiohttp.ClientSession | None = None  # watches and /metrics: no total timeout
        self.tasks: list[asyncio.Task[None]] = []
        self.patching = asyncio.Semaphore(20)
        self.patches: set[asyncio.Task[None]] = set()

    # -- starting and stopping

    def start(self) -> Path:
        """Start the control plane as tests/realapi does, and the bench's namespace; return the
        operator's kubeconfig."""
        self.plane.workdir.mkdir(parents=True, exist_ok=True)
        cluster = start_cluster(self.plane, token_seconds=TOKEN_SECONDS)
        kubectl(self.plane.admin_kubeconfig, "create", "namespace", self.namespace)
        target = self.workdir / "operator.kubeconfig"
        return kubeconfig(target, self.plane.url, self.plane.certs.ca, token=cluster.operator_token)

    async def __aenter__(self) -> RealApi:
        await asyncio.to_thread(self.start)
        self.client = await KubeClient(self.plane.url, self.plane.admin_ssl()).__aenter__()
        connector = aiohttp.TCPConnector(ssl=self.plane.admin_ssl(), limit=64)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        return self

    async def __aexit__(self, *_: object) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.client is not None:
            await self.client.__aexit__()
        if self.session is not None:
            await self.session.close()
        self.plane.stop()

    # -- requests

    async def call(self, method: str, path: str, body: Any = None, *, tries: int = 20) -> Any:
        """One admin request that must succeed; retried while the server is busy (BUSY_STATUSES)."""
        assert self.client is not None
        content_type = MERGE if method == "PATCH" else "application/json"
        for attempt in range(tries):
            status, answer = await self.client.request(method, path, body, content_type)
            if status < 400:
                return answer
            if status not in BUSY_STATUSES or attempt == tries - 1:
                raise RuntimeError(f"{method} {path} answered {status}: {str(answer)[:500]}")
            await asyncio.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    async def metric_sum(self, name: str, keep: Callable[[str], bool]) -> float:
        """The sum of the API server's own counter ``name`` over the series whose labels ``keep``."""
        assert self.session is not None
        async with self.session.get(f"{self.plane.url}/metrics") as answer:
            text = await answer.text()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and keep(line):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def writes(self) -> float:
        """Every write the API server answered (all clients: at steady state the operator's)."""

        def is_write(line: str) -> bool:
            return any(f'verb="{verb}"' in line for verb in ("POST", "PUT", "PATCH", "DELETE", "APPLY"))

        return await self.metric_sum("apiserver_request_total", is_write)

    # -- what the bench plays and follows

    def follow(self, resource: str, on_event: Callable[[str, dict[str, Any]], Awaitable[None]]) -> None:
        self.tasks.append(asyncio.create_task(self._watch(resource, on_event)))

    async def _watch(self, resource: str, on_event: Callable[[str, dict[str, Any]], Awaitable[None]]) -> None:
        """List, then watch from there; relist on 410 Gone; each event to ``on_event``."""
        assert self.session is not None
        path = api_path(resource, self.namespace)
        while True:
            listed = await self.call("GET", path)
            for item in listed.get("items", []):
                await on_event("ADDED", item)
            version = listed["metadata"]["resourceVersion"]
            gone = False
            while not gone:
                params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true"}
                params["timeoutSeconds"] = "300"
                try:
                    async with self.session.get(f"{self.plane.url}{path}", params=params) as answer:
                        if answer.status == 410:
                            break
                        if answer.status >= 400:
                            await asyncio.sleep(0.5)
                            continue
                        async for line in answer.content:
                            if not line.strip():
                                continue
                            event = json.loads(line)
                            obj = event.get("object") or {}
                            if event.get("type") == "ERROR":
                                gone = obj.get("code") == 410
                                break
                            version = (obj.get("metadata") or {}).get("resourceVersion", version)
                            if event.get("type") != "BOOKMARK":
                                await on_event(event["type"], obj)
                except (TimeoutError, aiohttp.ClientError):
                    await asyncio.sleep(0.5)

    async def track_ready(self, event: str, webhook: dict[str, Any]) -> None:
        name = webhook["metadata"]["name"]
        conditions = (webhook.get("status") or {}).get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        (self.ready.add if ready and event != "DELETED" else self.ready.discard)(name)

    async def play_deployment_controller(self, event: str, deployment: dict[str, Any]) -> None:
        """Report a new sender Deployment available, as the controller would once its pods run."""
        status = deployment.get("status") or {}
        if event == "DELETED" or status.get("availableReplicas"):
            return
        replicas = (deployment.get("spec") or {}).get("replicas", 1)
        name = deployment["metadata"]["name"]
        new = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }
        path = api_path(DEPLOYMENTS, self.namespace, name, "status")

        async def patch() -> None:
            async with self.patching:
                try:
                    await self.call("PATCH", path, {"status": new})
                except RuntimeError as exc:
                    if "404" not in str(exc):
                        raise

        task = asyncio.create_task(patch())  # the watch goes on meanwhile
        self.patches.add(task)
        task.add_done_callback(self.patches.discard)

    def start_playing(self, pool: bool) -> None:
        self.follow(WEBHOOKS, self.track_ready)
        if not pool:
            self.follow(DEPLOYMENTS, self.play_deployment_controller)
