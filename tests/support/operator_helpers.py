"""The operator, running in-process against kmock's Kubernetes API emulator.

Parts are real: Kopf runs the operator's own registry and settings, NATS is a real nats-server, the
customer's site is a real aiohttp server on 127.0.0.1. The emulator is kmock's, with the few API
server behaviours Kopf and the operator rely on added on top (`Cluster` below): resourceVersion,
generation, uid and creationTimestamp are stamped on writes, `generateName` is honoured, creation
answers 201, a watch that names a resourceVersion starts after it instead of replaying old objects,
and PUT replaces an object (409 Conflict when its resourceVersion is not the current one). There is no
Deployment controller: tests that need Ready patch the Deployment's status the way the controller
would (`make_available`).

`Cluster` is the lenient base. What the tests, tests/integration/test_monitoring.py and
bench/operator_scale.py run on is `strict_api.StrictCluster`, built on it: kube-apiserver's refusals
(typed query parameters, CRD pruning, schema and CEL validation, status-subresource rules, 409s, 410
Gone) and the chart's RBAC for the operator, which authenticates with OPERATOR_TOKEN; `call` uses
ADMIN_TOKEN.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import kmock
import yaml
from aiohttp import web
from kmock._internal import enums
from kmock._internal import parsing as kmock_parsing

from hookline.operator.main import serve
from hookline.operator.settings import OperatorConfig, VerificationSchedule
from hookline.sender.bus.natsserver import terminate
from hookline.sender.transport.egress import EgressPolicy

WEBHOOKS = "hookline.io/v1alpha1/webhooks"
TESTS = "hookline.io/v1alpha1/webhooktests"
DOMAINS = "hookline.io/v1alpha1/webhookdomains"
DEPLOYMENTS = "apps/v1/deployments"
STATEFULSETS = "apps/v1/statefulsets"
CONFIGMAPS = "v1/configmaps"
SECRETS = "v1/secrets"
EVENTS = "v1/events"
LEASES = "coordination.k8s.io/v1/leases"
NS = "shop"
TIMEOUT = 60.0
REQUEST_LOG = 64
# Bearer tokens the strict emulator (strict_api.py) knows: a cluster-admin user (the test, kubectl,
# the hookline CLI) and the operator's ServiceAccount, which has the chart's RBAC rules and no more.
ADMIN_TOKEN = "emulator-admin"
OPERATOR_TOKEN = "emulator-hookline-operator"


_kmock_parse_path = kmock_parsing.parse_path


def _parse_path(path: str) -> Any:
    """kmock reads /api/v1/namespaces[/NAME] as a namespace prefix with nothing after it and fails (a
    500); an API server serves the Namespace objects there (the operator watches their labels)."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        name = parts[3] if len(parts) == 4 else None
        return kmock_parsing.ParsedPath("", "v1", "namespaces", None, name, None)
    return _kmock_parse_path(path)


kmock_parsing.parse_path = _parse_path


class Cluster(kmock.KubernetesEmulator):
    """kmock's emulator plus the object metadata an API server maintains."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._versions = itertools.count(1)

    async def _handle(self, request: kmock.Request) -> web.StreamResponse:
        # kmock logs every request for assertions and matches each new one against the whole log,
        # which grows quadratic with hundreds of objects. Nothing here asserts on that log.
        del self._requests[:-REQUEST_LOG]
        if request.method == kmock.method.PUT and request.resource is not None and request.name:
            return await self._replace(request)
        if request.resource is not None and isinstance(request.data, (dict, list)):
            version = str(next(self._versions))
            if request.action == enums.action.CREATE and isinstance(request.data, dict):
                self._stamp_new(request, version)
            elif request.action == enums.action.UPDATE:
                self._stamp_change(request, version)
        response = await super()._handle(request)
        if request.action == enums.action.CREATE and response.status == 200 and not response.prepared:
            response.set_status(201)  # what an API server answers; some clients expect exactly that
        return response

    async def _replace(self, request: kmock.Request) -> web.StreamResponse:
        """PUT as an API server does it: the whole object replaced; status, uid and creation time kept."""
        if request.subresource is not None or not isinstance(request.data, dict):
            return _status(405, "MethodNotAllowed", "the emulator replaces whole objects only")
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            obj = self.objects[key] if key in self.objects else None  # noqa: SIM401 (no .get here)
            if obj is None or obj.deleted:
                return _status(404, "NotFound", f"{request.name} not found")
            current = copy.deepcopy(obj.raw)
            old_meta = current.get("metadata", {})
            new = copy.deepcopy(request.data)
            meta = new.setdefault("metadata", {})
            sent = meta.get("resourceVersion")
            if sent and sent != old_meta.get("resourceVersion"):
                message = f"the object has been modified ({sent} is not {old_meta.get('resourceVersion')})"
                return _status(409, "Conflict", message)
            for system in ("uid", "creationTimestamp", "namespace", "name"):
                if system in old_meta:
                    meta[system] = old_meta[system]
            meta["resourceVersion"] = str(next(self._versions))
            spec_changed = new.get("spec") != current.get("spec")
            meta["generation"] = old_meta.get("generation", 1) + int(spec_changed)
            new.pop("status", None)
            if "status" in current:
                new["status"] = current["status"]
            obj.create(new)
            raw = obj.raw
            await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
        return web.json_response(raw)

    def _stamp_new(self, request: kmock.Request, version: str) -> None:
        meta = request.data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta.setdefault("namespace", request.namespace)
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = version
        meta["generation"] = 1
        meta["creationTimestamp"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _stamp_change(self, request: kmock.Request, version: str) -> None:
        key = (request.resource, request.namespace, request.name)
        obj = self.objects[key] if key in self.objects else None  # noqa: SIM401 (no .get here)
        generation = 1 if obj is None or obj.deleted else obj.get("metadata", {}).get("generation", 1)
        if isinstance(request.data, dict):
            spec_changed = (
                request.subresource is None
                and "spec" in request.data
                and (obj is None or obj.deleted or dict(obj).get("spec") != request.data["spec"])
            )
            meta = request.data.get("metadata")
            if meta is None:
                meta = request.data["metadata"] = {}
            meta["resourceVersion"] = version
            meta["generation"] = generation + (1 if spec_changed else 0)
        else:
            touches_spec = any(op.get("path", "").startswith("/spec") for op in request.data)
            request.data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
            request.data.append(
                {"op": "add", "path": "/metadata/generation", "value": generation + int(touches_spec)}
            )

    async def _serve_list(self, request: kmock.Request) -> Any:
        result = await super()._serve_list(request)
        result["metadata"]["resourceVersion"] = str(next(self._versions))
        return result

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        since_text = request.params.get("resourceVersion", "")
        since = int(since_text) if since_text.isdigit() else None
        async for event in super()._serve_watch(request):
            if since is not None and isinstance(event, dict) and event.get("type") == "ADDED":
                version = event["object"].get("metadata", {}).get("resourceVersion", "")
                if version.isdigit() and int(version) <= since:
                    continue
            yield event

    # --- what a test (or a controller) does through the API -------------------------------------

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        if method == "PATCH":
            headers["Content-Type"] = "application/merge-patch+json"
        async with self.request(method, path, json=body, headers=headers) as response:
            payload = await response.json()
            assert response.status < 400, payload
            return payload

    def get(self, resource: str, name: str, namespace: str = NS) -> dict[str, Any] | None:
        try:
            obj = self.objects[kmock.resource(resource), namespace, name]
        except KeyError:
            return None
        return None if obj.deleted else obj.raw

    def events_for(self, name: str) -> list[dict[str, Any]]:
        return [
            obj.raw
            for (res, _, _), obj in self.objects.items()
            if res == kmock.resource(EVENTS) and not obj.deleted
            if obj.raw.get("involvedObject", {}).get("name") == name
        ]


def _status(code: int, reason: str, message: str) -> web.Response:
    """A Kubernetes Status object, as the API server answers errors."""
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason}
    return web.json_response({**body, "message": message, "code": code}, status=code)


def api_path(resource: str, namespace: str = NS, name: str | None = None, sub: str | None = None) -> str:
    group_version, plural = resource.rsplit("/", 1)
    base = f"/api/{group_version}" if group_version == "v1" else f"/apis/{group_version}"
    out = f"{base}/namespaces/{namespace}/{plural}"
    return out + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


# --- the customer's site ----------------------------------------------------------------------------------


@dataclass
class Site:
    """A customer's web server: serves files, records every request, answers POSTs with ``post_status``."""

    files: dict[str, str] = field(default_factory=dict)
    post_status: int = 200
    post_body: str = "thanks"
    requests: list[dict[str, Any]] = field(default_factory=list)
    base: str = ""

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def gets(self) -> list[str]:
        return [r["path"] for r in self.requests if r["method"] == "GET"]

    def posts(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["method"] == "POST"]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(
            {"method": request.method, "path": request.path, "headers": dict(request.headers), "body": body}
        )
        if request.method == "POST":
            return web.Response(status=self.post_status, text=self.post_body)
        if request.path in self.files:
            return web.Response(text=self.files[request.path])
        return web.Response(status=404, text="not found")


# --- the operator -----------------------------------------------------------------------------------------


class RunningOperator:
    """The operator in a thread with its own event loop.

    Kopf treats the loop as its own: when it stops, it cancels every task started after it (the
    test's too). A loop of its own keeps the test's loop, the emulator and the site out of reach.
    """

    def __init__(self, config: OperatorConfig, login: Callable[..., Any]) -> None:
        self.config = config
        self.runtime: Any = None
        self._login = login
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="operator", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by stop()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        ready = asyncio.Event()
        waiter = asyncio.create_task(ready.wait())
        waiter.add_done_callback(lambda _: self._ready.set())

        def keep(runtime: Any) -> None:
            self.runtime = runtime

        await serve(self.config, stop=self._stop, ready=ready, login=self._login, runtime_hook=keep)

    async def start(self, *, wait_ready: bool = True) -> RunningOperator:
        """Start it; with ``wait_ready``, until Kopf is ready (a standby under leader election never is)."""
        self._thread.start()
        if not wait_ready:
            await asyncio.to_thread(lambda: self._ready.wait(0.2))
            return self
        await asyncio.to_thread(self._ready.wait, TIMEOUT)
        if self._error is not None:
            raise self._error
        assert self._ready.is_set(), "the operator did not start"
        return self

    def freeze(self) -> threading.Event:
        """Stop its event loop dead, as SIGSTOP or a stalled node would (nothing runs, nothing is
        released); it runs on from where it was once the returned event is set."""
        assert self._loop is not None
        thawed = threading.Event()
        self._loop.call_soon_threadsafe(thawed.wait)
        return thawed

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    async def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join, TIMEOUT)
        assert not self._thread.is_alive(), "the operator did not stop"
        if self._error is not None:
            raise self._error


StartOperator = Callable[..., Awaitable[RunningOperator]]


def operator_config(nats_url: str, **overrides: Any) -> OperatorConfig:
    base = OperatorConfig(
        nats_url=nats_url,
        sender_nats_url=nats_url,
        sender_image="ghcr.io/hookline/hookline:test",
        # The customer's site is on loopback, over http: allowed explicitly, as DESIGN.md asks.
        egress=EgressPolicy(["127.0.0.0/8"], allow_http=True),
        verification=VerificationSchedule(first_delay=1.0, factor=2.0, max_delay=2.0),
        check_timeout=5.0,
        consumer_delete_attempts=2,
        consumer_delete_delay=0.5,
        nats_connect_timeout=2.0,
        health_port=None,
        metrics_port=None,
        # The operator's flow tests create Webhooks without WebhookPolicies: tenancy is off unless a
        # test turns it on (tests/flows/operator/test_tenancy_flow.py), as the chart has it.
        tenancy_enforce=False,
    )
    return replace(base, **overrides)


async def wait_for(condition: Callable[[], Any], what: str, within: float = TIMEOUT) -> Any:
    """Poll until ``condition()`` is truthy; fail naming ``what`` after ``within`` seconds."""
    timeout = within
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


async def create_webhook(cluster: Cluster, name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "hookline.io/v1alpha1",
        "kind": "Webhook",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }
    return await cluster.call("POST", api_path(WEBHOOKS), body)


async def make_available(cluster: Cluster, name: str, replicas: int) -> None:
    """What the Deployment controller would report once the pods are up."""
    status = {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}
    await cluster.call("PATCH", api_path(DEPLOYMENTS, name=name, sub="status"), {"status": status})


# --- the operator as a process (bench/operator_scale.py, tests/integration/test_monitoring.py) -------

TOKEN_FILE = re.compile(r"/hookline-([0-9a-f]{32})\.txt$")


def declare_resources(cluster: Cluster) -> None:
    """The API resources `hookline operator` lists and watches, with the verbs and subresources it uses."""
    info = kmock.ResourceInfo
    every = {"get", "list", "watch", "create", "update", "patch", "delete"}
    for resource, kind, namespaced, sub in [
        (WEBHOOKS, "Webhook", True, {"status"}),
        (TESTS, "WebhookTest", True, {"status"}),
        (DOMAINS, "WebhookDomain", True, {"status"}),
        (DEPLOYMENTS, "Deployment", True, {"status"}),
        (STATEFULSETS, "StatefulSet", True, {"status"}),
        (CONFIGMAPS, "ConfigMap", True, set()),
        (SECRETS, "Secret", True, set()),
        (EVENTS, "Event", True, set()),
        ("v1/namespaces", "Namespace", False, set()),
        ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", False, set()),
        (LEASES, "Lease", True, set()),  # leader election (operator replicas)
    ]:
        cluster.resources[resource] = info(kind=kind, namespaced=namespaced, verbs=every, subresources=sub)


def write_kubeconfig(path: Path, cluster: Cluster) -> Path:
    """A kubeconfig whose current context is the emulator, for an operator running as a process: its
    user is the operator's ServiceAccount (the chart's RBAC rules on the strict emulator)."""
    server = str(cluster.url).rstrip("/")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "emulator", "user": {"token": OPERATOR_TOKEN}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator"}}],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def start_token_site() -> tuple[web.AppRunner, str, list[int]]:
    """A customer site on loopback that serves every verification file with the token its name carries;
    returns its runner, base URL and a one-item list counting the requests it answered."""
    hits = [0]

    async def handle(request: web.Request) -> web.Response:
        hits[0] += 1
        match = TOKEN_FILE.search(request.path)
        return web.Response(text=match.group(1)) if match else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", hits


def start_operator_process(
    env: Mapping[str, str], log_path: Path, *, health_port: int = 0, metrics_port: int = 0, keys_port: int = 0
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """`hookline operator` allowed to reach loopback over http; a port of 0 turns that server off (the
    JWKS one too: its default, 8082 on every address, would collide between two runs)."""
    log = log_path.open("wb")
    env = {"HOOKLINE_TENANCY_ENFORCE": "false", **env}  # no WebhookPolicies in these tests
    command = [str(Path(sys.executable).parent / "hookline"), "operator", "--allow-network", "127.0.0.0/8"]
    command += ["--allow-http", "--health-port", str(health_port), "--metrics-port", str(metrics_port)]
    command += ["--keys-port", str(keys_port)]
    return subprocess.Popen(command, env=dict(env), stdout=log, stderr=subprocess.STDOUT), log


def stop_operator_process(process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    """SIGTERM, and a kill if it has not stopped within 30 s."""
    terminate(process, timeout=30)
    log.close()


async def serve_on_loopback(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, str]:
    """An aiohttp server on 127.0.0.1 and a free port answering every method and path with
    ``handle``: a customer's site. Returns the runner (clean it up) and the base URL."""
    from hookline.sender.observe.health import bound_port, start_site

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = await start_site(app, "127.0.0.1", 0)
    return runner, f"http://127.0.0.1:{bound_port(runner)}"


def token_of(cluster: Cluster, name: str) -> str | None:
    """The verification token in a Webhook's status, once there is one (never raises)."""
    status = (cluster.get(WEBHOOKS, name) or {}).get("status") or {}
    return (status.get("verification") or {}).get("content")
