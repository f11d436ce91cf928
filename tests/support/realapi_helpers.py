"""Clients for the real API server of tests/realapi: kubectl, an async REST client, the chart's RBAC.

The control plane itself (processes, certificates, assets) is kubeassets.py; the operator runs
in-process as in the emulator flow tests (operator_helpers.RunningOperator), here logged in with a
TokenRequest token of the chart's ServiceAccount, so every request it makes is checked by real RBAC.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import yaml
from controlplane import ControlPlane
from kubeassets import ROOT
from operator_helpers import api_path
from strict_api import render_chart

KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
FIELD_MANAGER = "hookline-tests"
MERGE = "application/merge-patch+json"
TIMEOUT = 60.0
T = TypeVar("T")


# --- kubectl and the chart --------------------------------------------------------------------------------


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    """Run .tools/bin/kubectl (`make tools`); fail with its stderr."""
    command = [str(KUBECTL), "--kubeconfig", str(kubeconfig), *args]
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
    return result.stdout


def apply_server_side(
    kubeconfig: Path,
    docs: Iterable[dict[str, Any]],
    *,
    namespace: str | None = None,
    field_manager: str = FIELD_MANAGER,
) -> list[dict[str, Any]]:
    """`kubectl apply --server-side` of ``docs``; returns the objects as the server stored them."""
    text = yaml.safe_dump_all(list(docs))
    args = [
        "apply",
        "--server-side",
        f"--field-manager={field_manager}",
        "--show-managed-fields",
        "-o",
        "json",
    ]
    args += ["-f", "-"]
    if namespace:
        args += ["-n", namespace]
    out = json.loads(kubectl(kubeconfig, *args, stdin=text))
    return list(out.get("items", [out])) if out.get("kind") == "List" else [out]


OPERATOR_RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


def operator_rbac(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator's ServiceAccount, its (Cluster)Roles and their bindings from rendered manifests."""
    return [
        d
        for d in docs
        if d["kind"] in OPERATOR_RBAC_KINDS
        and d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "operator"
    ]


def service_account_of(rbac: Iterable[dict[str, Any]]) -> tuple[str, str]:
    """(namespace, name) of the one ServiceAccount in ``rbac``."""
    (account,) = [d for d in rbac if d["kind"] == "ServiceAccount"]
    return account["metadata"]["namespace"], account["metadata"]["name"]


# --- the cluster a test gets ------------------------------------------------------------------------------


@dataclass
class RealCluster:
    """The session's API server: who the admin is, and the operator's ServiceAccount and token."""

    plane: ControlPlane
    operator_namespace: str
    operator_account: str
    operator_token: str

    @property
    def url(self) -> str:
        return self.plane.url

    @property
    def ca(self) -> Path:
        return self.plane.certs.ca

    @property
    def kubeconfig(self) -> Path:
        return self.plane.admin_kubeconfig

    @property
    def operator_user(self) -> str:
        return f"system:serviceaccount:{self.operator_namespace}:{self.operator_account}"

    def admin(self) -> KubeClient:
        return KubeClient(self.url, self.plane.admin_ssl())

    def as_operator(self) -> KubeClient:
        return KubeClient(
            self.url, ssl.create_default_context(cafile=str(self.ca)), token=self.operator_token
        )


CRDS = ROOT / "crds"


def list_path(crd: dict[str, Any]) -> str:
    """Where the API server lists a CRD's objects in all namespaces."""
    spec = crd["spec"]
    return f"/apis/{spec['group']}/{spec['versions'][0]['name']}/{spec['names']['plural']}"


def start_cluster(plane: ControlPlane, token_seconds: int = 3600) -> RealCluster:
    """Start ``plane`` as the real-API tier and the bench use it: the CRDs established and in the API
    server's cache, then the controllers (the garbage collector discovers resources when it starts),
    the chart's RBAC for the operator and a TokenRequest token of its ServiceAccount. The caller
    stops the plane."""
    plane.start()
    config = plane.admin_kubeconfig
    crds = [doc for path in sorted(CRDS.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())]
    apply_server_side(config, crds)
    names = [f"crd/{crd['metadata']['name']}" for crd in crds]
    kubectl(config, "wait", "--for=condition=Established", "--timeout=60s", *names)
    plane.wait_cached([list_path(crd) for crd in crds])
    plane.start_controllers()
    rbac = operator_rbac(render_chart())
    namespace, account = service_account_of(rbac)
    kubectl(config, "create", "namespace", namespace)
    apply_server_side(config, rbac)
    token = plane.service_account_token(namespace, account, token_seconds)
    return RealCluster(plane, namespace, account, token)


class KubeClient:
    """A few REST calls against the real API server (aiohttp; an admin certificate or a bearer token)."""

    def __init__(self, url: str, context: ssl.SSLContext, token: str | None = None) -> None:
        self.url = url
        self._context = context
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        connector = aiohttp.TCPConnector(ssl=self._context)
        self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        """(status, decoded body) of one request; never raises on an HTTP error status."""
        assert self._session is not None, "use `async with` first"
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self._session.request(method, f"{self.url}{path}", data=data, headers=headers) as answer:
            text = await answer.text()
            try:
                return answer.status, json.loads(text) if text else {}
            except ValueError:
                return answer.status, text

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """A request that must succeed; PATCH is a merge patch. Fails with the server's Status."""
        content_type = MERGE if method == "PATCH" else "application/json"
        status, payload = await self.request(method, path, body, content_type)
        assert status < 400, f"{method} {path} answered {status}: {payload}"
        return payload

    async def get(self, resource: str, name: str, namespace: str) -> dict[str, Any] | None:
        """The object, or None when it is not there (404)."""
        status, payload = await self.request("GET", api_path(resource, namespace, name))
        if status == 404:
            return None
        if status in BUSY_STATUSES:
            raise NotAnswering(f"GET {resource} {namespace}/{name} answered {status}: {payload}")
        assert status < 400, f"GET {resource} {namespace}/{name} answered {status}: {payload}"
        return payload


# A real kube-apiserver answers these while it is busy (429 "storage is (re)initializing" right after
# CRDs are established, 5xx during a restart of its etcd watch): a wait polls again, it does not fail.
BUSY_STATUSES = frozenset({429, 500, 502, 503, 504})


class NotAnswering(Exception):
    """The API server did not answer this time (busy, or the connection dropped): not yet, not a no."""


async def eventually(probe: Callable[[], Awaitable[T]], what: str, within: float = TIMEOUT) -> T:
    """Poll the async ``probe`` until it returns something truthy; fail naming ``what`` (and the last
    time the server did not answer, if it did not)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    silent: BaseException | None = None
    while True:
        try:
            value = await probe()
        except (NotAnswering, aiohttp.ClientConnectionError) as exc:
            value, silent = None, exc
        if value:
            return value
        if loop.time() > deadline:
            last = f" (last: the server did not answer: {silent})" if silent is not None else ""
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}{last}")
        await asyncio.sleep(0.1)


# --- what the operator logged -----------------------------------------------------------------------------


class OperatorComplaints(logging.Handler):
    """Log records that mean the API server refused the operator: a handler that raised, a patch the
    server answered with something else than what was sent (Kopf's "inconsistencies"), 4xx errors."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(("kopf", "hookline")):
            return
        message = record.getMessage()
        if record.levelno >= logging.ERROR or any(
            sign in message for sign in ("inconsistencies", "Forbidden", "403", "422", "UnprocessableEntity")
        ):
            self.records.append(record)

    def lines(self) -> list[str]:
        return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in self.records]

    def __enter__(self) -> OperatorComplaints:
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        logging.getLogger().removeHandler(self)
