"""Tenancy on a real kube-apiserver: the chart's ValidatingAdmissionPolicy (CEL, run by the API server
itself) and its tenant roles, with the operator compiling the WebhookPolicies it reads.

Two tenant namespaces, each with a ServiceAccount bound to hookline-edit there: team A's is granted
database newsletter by name, team B's by a label selector. A tenant creates a Webhook inside its grant;
one outside it is refused with a message naming the field and the missing grant; it cannot create or
change a WebhookPolicy, and cannot read the other namespace's Webhooks. The admission policy and its
binding are removed afterwards, so the other tests of the session create Webhooks as before.
"""

from __future__ import annotations

import contextlib
import ssl
import uuid

import pytest
from operator_helpers import WEBHOOKS, api_path, condition
from realapi_helpers import KubeClient, apply_server_side, eventually, kubectl
from strict_api import render_chart

RELEASE, RELEASE_NS = "tenancy", "hookline-tenancy"
POLICIES = "/apis/hookline.io/v1alpha1/webhookpolicies"
KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ConfigMap", "ClusterRole")


def policy(name: str, **spec) -> dict:
    body = {"apiVersion": "hookline.io/v1alpha1", "kind": "WebhookPolicy", "metadata": {"name": name}}
    return {**body, "spec": {"egress": {"allowHttp": True, "allowNetworks": ["127.0.0.0/8"]}, **spec}}


def webhook(name: str, url: str, **spec) -> dict:
    body = {"apiVersion": "hookline.io/v1alpha1", "kind": "Webhook", "metadata": {"name": name}}
    return {**body, "spec": {"url": url, "events": ["open"], **spec}}


async def tenant(real_cluster, admin: KubeClient, namespace: str) -> KubeClient:
    """A ServiceAccount of the team in ``namespace`` with hookline-edit there, as its client."""
    await admin.call(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "team"}}
    )
    binding = {
        "metadata": {"name": "team-hookline-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "hookline-edit"},
        "subjects": [{"kind": "ServiceAccount", "name": "team", "namespace": namespace}],
    }
    await admin.call(
        "POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings", binding
    )
    token = real_cluster.plane.service_account_token(namespace, "team")
    return KubeClient(real_cluster.url, ssl.create_default_context(cafile=str(real_cluster.ca)), token=token)


@pytest.mark.slow
async def test_tenants_are_held_to_their_grants_by_the_api_server(
    real_cluster, admin, namespace, site, start_operator
):
    docs = [
        d
        for d in render_chart("--set", "tenancy.enforce=true", release=RELEASE, namespace=RELEASE_NS)
        if d["kind"] in KINDS
        and (d["kind"] != "ClusterRole" or d["metadata"]["name"].startswith("hookline-"))
        and (d["kind"] != "ConfigMap" or d["metadata"]["name"].endswith("-grants"))
    ]
    assert {d["kind"] for d in docs} == set(KINDS)
    (grants,) = [d for d in docs if d["kind"] == "ConfigMap"]
    other = f"tenant-b-{uuid.uuid4().hex[:5]}"
    config = real_cluster.kubeconfig
    with contextlib.suppress(AssertionError):
        kubectl(config, "create", "namespace", RELEASE_NS)
    await admin.call("POST", "/api/v1/namespaces", {"metadata": {"name": other, "labels": {"team": "b"}}})
    for role in ("hookline-edit", "hookline-view"):  # another test's release may have made them
        kubectl(config, "delete", "--ignore-not-found", "clusterrole", role)
    running = []
    try:
        applied = apply_server_side(config, docs, namespace=RELEASE_NS, field_manager="tenancy-test")
        (vap,) = [o for o in applied if o["kind"] == "ValidatingAdmissionPolicy"]

        async def type_checked():
            found = await admin.call(
                "GET",
                f"/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/{vap['metadata']['name']}",
            )
            status = found.get("status") or {}
            return status if "typeChecking" in status else None

        checked = await eventually(type_checked, "the admission policy type-checked")
        assert not checked["typeChecking"].get("expressionWarnings"), checked  # every CEL expression typed

        await admin.call(
            "POST",
            POLICIES,
            policy(
                "team-a",
                namespaces=[namespace],
                databases=[{"name": "newsletter", "collections": ["*"]}],
                eventTypes=["open", "click"],
            ),
        )
        await admin.call(
            "POST",
            POLICIES,
            policy(
                "team-b",
                namespaceSelector={"matchLabels": {"team": "b"}},
                databases=[{"name": "crm", "collections": ["orders"]}],
            ),
        )
        running.append(
            await start_operator(  # only the tenants' namespaces: other tests' leftovers are not its
                tenancy_enforce=True,
                grants_configmap=f"{RELEASE_NS}/{grants['metadata']['name']}",
                namespaces=(namespace, other),
            )
        )

        async def compiled():
            found = await admin.call(
                "GET", f"/api/v1/namespaces/{RELEASE_NS}/configmaps/{grants['metadata']['name']}"
            )
            data = found.get("data") or {}
            return data if f"{namespace}.scopes" in data and f"{other}.scopes" in data else None

        data = await eventually(compiled, "the operator compiled both grants")
        assert data[f"{other}.scopes"].startswith(";crm/orders/")

        team_a = await tenant(real_cluster, admin, namespace)
        team_b = await tenant(real_cluster, admin, other)
        async with team_a as a, team_b as b:
            url = site.url("/hooks/news.php")

            async def created():
                """The API server reads params through its own cache: a ConfigMap made a moment ago
                may not be in it yet ("no params found"); anything else is the answer."""
                status, answer = await a.request(
                    "POST", api_path(WEBHOOKS, namespace), webhook("news", url, database="newsletter")
                )
                return None if "no params found" in str(answer.get("message")) else (status, answer)

            async def enforcing():
                """The API server loads a new policy, its binding and params through its own informers:
                until then it admits everything. A dry-run create outside the grant tells when it
                refuses (it goes through admission and stores nothing)."""
                status, answer = await a.request(
                    "POST",
                    api_path(WEBHOOKS, namespace) + "?dryRun=All",
                    webhook("probe", url, database="crm"),
                )
                return status in (403, 422) and "is not granted" in str(answer.get("message"))

            await eventually(enforcing, "the admission policy enforcing team-a's grant")
            status, answer = await eventually(created, "the admission policy's params cached")
            assert status == 201, answer.get("message")
            status, answer = await b.request(
                "POST", api_path(WEBHOOKS, other), webhook("orders", url, database="crm", collection="orders")
            )
            assert status == 201, answer  # granted by its namespace's label
            for ns, name in ((namespace, "news"), (other, "orders")):  # their owners place the files

                async def token(ns=ns, name=name):
                    found = await admin.get(WEBHOOKS, name, ns) or {}
                    return ((found.get("status") or {}).get("verification") or {}).get("content")

                value = await eventually(token, f"{name}'s verification token")
                site.files[f"/hooks/hookline-{value}.txt"] = value

            refusals = [
                (
                    webhook("crm", url, database="crm"),
                    "spec.database: 'crm' is not granted to namespace "
                    f"'{namespace}' (WebhookPolicy team-a); missing grant: databases[].name 'crm'",
                ),
                (webhook("all", url), "spec.database: is required"),
                (
                    webhook("bounces", url, database="newsletter", events=["open", "bounce"]),
                    "spec.events: bounce not granted",
                ),
            ]
            for body, message in refusals:
                status, answer = await a.request("POST", api_path(WEBHOOKS, namespace), body)
                assert status in (403, 422), answer
                assert message in answer["message"], answer["message"]
            # Changing a granted Webhook's spec out of the grant is refused the same way.
            status, answer = await a.request(
                "PATCH",
                api_path(WEBHOOKS, namespace, "news"),
                {"spec": {"database": "crm"}},
                "application/merge-patch+json",
            )
            assert status in (403, 422) and "spec.database: 'crm'" in answer["message"], answer
            # B's collection is exact.
            status, answer = await b.request(
                "POST", api_path(WEBHOOKS, other), webhook("inv", url, database="crm", collection="invoices")
            )
            assert status in (403, 422) and "spec.collection: 'invoices'" in answer["message"], answer

            # The grant itself is out of a tenant's reach, and so is the other team's namespace.
            for method, path, body in [
                (
                    "POST",
                    POLICIES,
                    policy("mine", namespaces=[namespace], databases=[{"name": "*", "collections": ["*"]}]),
                ),
                (
                    "PATCH",
                    f"{POLICIES}/team-a",
                    {"spec": {"databases": [{"name": "*", "collections": ["*"]}]}},
                ),
                ("GET", api_path(WEBHOOKS, other), None),
                ("GET", api_path(WEBHOOKS, other, "orders"), None),
            ]:
                content = "application/merge-patch+json" if method == "PATCH" else "application/json"
                status, answer = await a.request(method, path, body, content)
                assert status == 403 and answer["reason"] == "Forbidden", (method, path, answer)
            status, _ = await a.request("GET", api_path(WEBHOOKS, namespace))
            assert status == 200  # its own, it may read

        # The admin withdraws team A's grant: the operator stops its Webhook (Ready says why).
        databases = [{"name": "other", "collections": ["*"]}]
        await admin.call("PATCH", f"{POLICIES}/team-a", {"spec": {"databases": databases}})

        async def stopped():
            found = condition(await admin.get(WEBHOOKS, "news", namespace) or {}, "Ready")
            return found if found.get("reason") == "ScopeNotAllowed" else None

        ready = await eventually(stopped, "news: Ready=False ScopeNotAllowed")
        assert ready["message"].startswith("spec.database: 'newsletter' is not granted"), ready
    finally:
        for operator in running:  # before the grants and namespace B go, so it writes nothing there
            await operator.stop()
        for doc in docs:
            if doc["kind"].startswith("ValidatingAdmissionPolicy") or doc["kind"] == "ClusterRole":
                kubectl(config, "delete", "--ignore-not-found", doc["kind"].lower(), doc["metadata"]["name"])
        for name in ("team-a", "team-b"):
            await admin.request("DELETE", f"{POLICIES}/{name}")
        for webhook_name in ("orders",):
            await admin.request(
                "PATCH",
                api_path(WEBHOOKS, other, webhook_name),
                {"metadata": {"finalizers": None}},
                "application/merge-patch+json",
            )
        await admin.request("DELETE", f"/api/v1/namespaces/{other}")
