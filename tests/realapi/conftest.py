"""The real-API tier: the operator and the chart against a real kube-apiserver, not the emulator.

The emulator (tests/support/strict_api.py) is fast and runs everywhere, and it refuses what
kube-apiserver refuses as far as we know it. This tier is how we find out where we are wrong: one
etcd, kube-apiserver and kube-controller-manager (garbage collector on, Deployment controller off)
per test run on loopback, the CRDs from crds/ and the chart's RBAC applied, the operator logged in
with a TokenRequest token of the chart's ServiceAccount. Where the emulator and the real server
disagree, the real server wins: fix the emulator (or the code), never the test here.

Without the binaries (tests/support/kubeassets.py says where it looks) the tier is deselected with
one line saying how to get them; it is never skipped.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from controlplane import ControlPlane
from kubeassets import HOW_TO_GET, available
from operator_helpers import (
    WEBHOOKS,
    RunningOperator,
    Site,
    StartOperator,
    api_path,
    operator_config,
    serve_on_loopback,
)
from realapi_helpers import (
    KubeClient,
    OperatorComplaints,
    RealCluster,
    start_cluster,
)

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """No binaries, no tier: deselect it (CI must show no skips) and say so in one line."""
    if available():
        return
    mine = [item for item in items if HERE in item.path.parents]
    if not mine:
        return
    items[:] = [item for item in items if HERE not in item.path.parents]
    config.hook.pytest_deselected(items=mine)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(f"tests/realapi: {len(mine)} tests deselected, {HOW_TO_GET}")


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    """One control plane per run, with the CRDs and the operator's RBAC from the chart."""
    plane = ControlPlane(tmp_path_factory.mktemp("k8s"))
    try:
        yield start_cluster(plane)
    finally:
        plane.stop()


@pytest.fixture
async def admin(real_cluster: RealCluster) -> AsyncIterator[KubeClient]:
    """The test's own client: cluster-admin (system:masters)."""
    async with real_cluster.admin() as client:
        yield client


@pytest.fixture
async def namespace(request: pytest.FixtureRequest, admin: KubeClient) -> AsyncIterator[str]:
    """A fresh namespace per test. Afterwards its Webhooks lose their finalizers and go, so the next
    test's operator (cluster-wide, on a new NATS) never finds them."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:5]}"
    await admin.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    with contextlib.suppress(AssertionError):
        for webhook in (await admin.call("GET", api_path(WEBHOOKS, name)))["items"]:
            patch = {"metadata": {"finalizers": None}}
            await admin.request(
                "PATCH",
                api_path(WEBHOOKS, name, webhook["metadata"]["name"]),
                patch,
                "application/merge-patch+json",
            )
        await admin.request("DELETE", api_path(WEBHOOKS, name))
        await admin.request("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    """The customer's web server on loopback."""
    site = Site()
    runner, site.base = await serve_on_loopback(site.handle)
    yield site
    await runner.cleanup()


@pytest.fixture
async def start_operator(
    real_cluster: RealCluster, nats_server: Any, namespace: str
) -> AsyncIterator[StartOperator]:
    """The operator in-process, cluster-wide, as the chart's ServiceAccount. A test fails at teardown
    when the operator logged that the API server refused it, even if its own assertions passed."""
    running: list[RunningOperator] = []

    def login(**_: Any) -> Any:
        import kopf

        return kopf.ConnectionInfo(
            server=real_cluster.url,
            ca_path=str(real_cluster.ca),
            token=real_cluster.operator_token,
            default_namespace=namespace,
        )

    async def start(*, wait_ready: bool = True, **overrides: Any) -> RunningOperator:
        handle = RunningOperator(operator_config(nats_server.url, **overrides), login)
        running.append(handle)
        return await handle.start(wait_ready=wait_ready)

    with OperatorComplaints() as complaints:
        yield start
        for handle in running:
            with contextlib.suppress(Exception):
                await handle.stop()
    assert not complaints.records, "the real API server refused the operator:\n" + "\n".join(
        complaints.lines()
    )
