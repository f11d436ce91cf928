"""operator.watchNamespaces on a real kube-apiserver (issue 19, item 5): the chart rendered with two
namespaces gives the operator's ServiceAccount Roles in those (and the release namespace) and only
cluster-scoped reads cluster-wide. The real RBAC authorizer is asked (SubjectAccessReview, as
`kubectl auth can-i --as` does) and the ServiceAccount's own token is refused outside; an operator
started with those namespaces and that token reconciles a Webhook in one of them."""

from __future__ import annotations

import contextlib
import ssl
import uuid
from typing import Any

import kopf
from operator_helpers import DEPLOYMENTS, SECRETS, WEBHOOKS, RunningOperator, api_path, operator_config
from realapi_helpers import KubeClient, OperatorComplaints, apply_server_side, eventually, operator_rbac
from strict_api import render_chart
from test_operator_lifecycle import verified_webhook


async def can_i(
    admin: KubeClient, user: str, verb: str, resource: str, namespace: str = "", group: str = ""
) -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": {
                "verb": verb,
                "resource": resource,
                "group": group,
                "namespace": namespace,
            },
        },
    }
    answer = await admin.call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    return bool(answer["status"].get("allowed"))


async def test_watch_namespaces_gives_roles_there_and_nothing_namespaced_elsewhere(
    real_cluster, admin, nats_server, site
):
    suffix = uuid.uuid4().hex[:5]
    release, a, b, c = (f"{n}-{suffix}" for n in ("scoped", "team-a", "team-b", "team-c"))
    for ns in (release, a, b, c):
        await admin.call("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    docs = render_chart(
        "--set-json", f'operator.watchNamespaces=["{a}","{b}"]', release=release, namespace=release
    )
    rbac = operator_rbac(docs)
    roles = sorted(
        (d["kind"], d["metadata"].get("namespace", "")) for d in rbac if d["kind"].endswith("Role")
    )
    assert roles == sorted(
        [("ClusterRole", ""), ("Role", a), ("Role", b), ("Role", release), ("Role", release)]  # + the Lease's
    )
    (cluster_role,) = [d for d in rbac if d["kind"] == "ClusterRole"]
    assert {r for rule in cluster_role["rules"] for r in rule["resources"]} == {
        "customresourcedefinitions",
        "namespaces",
        "webhookpolicies",
        "webhookpolicies/status",
    }
    apply_server_side(real_cluster.kubeconfig, rbac)
    (account,) = [d for d in rbac if d["kind"] == "ServiceAccount"]
    name = account["metadata"]["name"]
    user = f"system:serviceaccount:{release}:{name}"

    async def bound() -> bool:
        return await can_i(admin, user, "get", "secrets", a)

    await eventually(bound, "the Roles in force")
    for ns in (a, b):
        assert await can_i(admin, user, "get", "secrets", ns)
        assert await can_i(admin, user, "create", "deployments", ns, "apps")
        assert await can_i(admin, user, "watch", "webhooks", ns, "hookline.io")
        assert await can_i(admin, user, "patch", "webhooks/status", ns, "hookline.io")
    for verb, resource, group in (
        ("get", "secrets", ""),
        ("list", "secrets", ""),
        ("get", "deployments", "apps"),
        ("create", "deployments", "apps"),
        ("get", "webhooks", "hookline.io"),
        ("create", "events", ""),
    ):
        assert not await can_i(admin, user, verb, resource, c, group), (verb, resource, c)
        assert not await can_i(admin, user, verb, resource, "", group), (verb, resource, "all namespaces")
    assert await can_i(admin, user, "list", "customresourcedefinitions", "", "apiextensions.k8s.io")
    assert await can_i(admin, user, "list", "webhookpolicies", "", "hookline.io")

    # The token itself: a Secret in c is refused (403 naming the ServiceAccount), one in a is read.
    token = real_cluster.plane.service_account_token(release, name)
    for ns in (a, c):
        await admin.call(
            "POST", api_path(SECRETS, ns), {"metadata": {"name": "hook-secret"}, "stringData": {"k": "v"}}
        )
    async with KubeClient(
        real_cluster.url, ssl.create_default_context(cafile=str(real_cluster.ca)), token=token
    ) as scoped:
        status, _ = await scoped.request("GET", api_path(SECRETS, a, "hook-secret"))
        assert status == 200
        status, answer = await scoped.request("GET", api_path(SECRETS, c, "hook-secret"))
        assert status == 403 and f'User "{user}" cannot get resource "secrets"' in answer["message"]
        status, _ = await scoped.request("GET", api_path(DEPLOYMENTS, c))
        assert status == 403

    # The operator with those namespaces and that token reconciles a Webhook in a, and never asks
    # for what its Roles do not give (a refusal would be logged and fail the test).
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=real_cluster.url, ca_path=str(real_cluster.ca), token=token, default_namespace=a
        )

    handle = RunningOperator(operator_config(nats_server.url, namespaces=(a, b, release)), login)
    with OperatorComplaints() as complaints:
        try:
            await handle.start()
            await verified_webhook(admin, a, site, "clicks")
            sender = await eventually(
                lambda: admin.get(DEPLOYMENTS, "clicks-sender", a), "the sender Deployment in a"
            )
            assert sender["metadata"]["namespace"] == a
            # a Webhook in c is not served: no status appears on it
            body = {"apiVersion": "hookline.io/v1alpha1", "kind": "Webhook", "metadata": {"name": "outside"}}
            body["spec"] = {"url": site.url("/hooks/outside.php"), "events": ["click"]}
            await admin.call("POST", api_path(WEBHOOKS, c), body)
            body["metadata"]["name"] = "later"  # made after it in a: once this one has a status ...
            await admin.call("POST", api_path(WEBHOOKS, a), body)

            async def later_seen() -> bool:
                return bool(((await admin.get(WEBHOOKS, "later", a)) or {}).get("status"))

            await eventually(later_seen, "a status on the Webhook made later in a")
            outside = await admin.get(WEBHOOKS, "outside", c)
            assert not (outside or {}).get("status")  # ... the one in c has none
        finally:
            with contextlib.suppress(Exception):
                await handle.stop()
            # Nothing left for the next test's cluster-wide operator: the Webhooks and namespaces go.
            for ns in (a, b, c, release):
                with contextlib.suppress(AssertionError):
                    for webhook in (await admin.call("GET", api_path(WEBHOOKS, ns)))["items"]:
                        path = api_path(WEBHOOKS, ns, webhook["metadata"]["name"])
                        patch = {"metadata": {"finalizers": None}}
                        await admin.request("PATCH", path, patch, "application/merge-patch+json")
                    await admin.request("DELETE", api_path(WEBHOOKS, ns))
                    await admin.request("DELETE", f"/api/v1/namespaces/{ns}")
    assert not complaints.records, "the real API server refused the operator:\n" + "\n".join(
        complaints.lines()
    )
