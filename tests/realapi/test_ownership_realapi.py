"""Ownership by DNS and by verified domains on a real kube-apiserver: the WebhookDomain CRD (its CEL rule,
its status subresource, the chart's RBAC for it), a real DNS server on loopback (dnslib) the operator is
pointed at, and a domain proof that is honoured in its namespace and not in another one."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest
from dnsserver import LoopbackDNS
from operator_helpers import DOMAINS, WEBHOOKS, api_path, condition
from realapi_helpers import KubeClient, eventually


@pytest.fixture
def dns() -> Iterator[LoopbackDNS]:
    server = LoopbackDNS().start()
    yield server
    server.stop()


async def create(admin: KubeClient, resource: str, kind: str, namespace: str, name: str, **spec) -> None:
    body = {"apiVersion": "hookline.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    await admin.call("POST", api_path(resource, namespace), body)


async def verified(admin: KubeClient, resource: str, namespace: str, name: str) -> dict:
    return condition(await admin.get(resource, name, namespace) or {}, "Verified")


@pytest.mark.slow
async def test_a_domain_proof_by_dns_covers_its_namespace_only(admin, namespace, start_operator, dns):
    await start_operator(dns_nameservers=(dns.nameserver,), dns_timeout=2.0)
    # The CRD's rule: a file at the web root does not prove the names below it (either spelling).
    bad = {"apiVersion": "hookline.io/v1alpha1", "kind": "WebhookDomain", "metadata": {"name": "bad"},
           "spec": {"domain": "shop.example", "method": "file", "includeSubdomains": True}}  # fmt: skip
    code, refusal = await admin.request("POST", api_path(DOMAINS, namespace), bad)
    assert code == 422 and "includeSubdomains needs method DNS" in str(refusal)

    await create(admin, DOMAINS, "WebhookDomain", namespace, "shop-example", domain="shop.example",
                 method="dns", includeSubdomains=True)  # DESIGN.md's spelling  # fmt: skip

    async def domain_token() -> str | None:
        return ((await admin.get(DOMAINS, "shop-example", namespace) or {}).get("status") or {}).get("token")

    dns.zone["_hookline-challenge.shop.example"] = [await eventually(domain_token, "the domain's token")]

    async def domain_verified() -> bool:
        return (await verified(admin, DOMAINS, namespace, "shop-example")).get("status") == "True"

    await eventually(domain_verified, "the WebhookDomain verified")

    await create(admin, WEBHOOKS, "Webhook", namespace, "covered", url="https://api.shop.example/hook",
                 events=["open"], paused=True)  # fmt: skip

    async def covered() -> dict | None:
        found = await verified(admin, WEBHOOKS, namespace, "covered")
        return found if found.get("status") == "True" else None

    done = await eventually(covered, "the Webhook verified by the domain")
    assert done["reason"] == "DomainVerified" and "WebhookDomain shop-example" in done["message"]
    status = (await admin.get(WEBHOOKS, "covered", namespace))["status"]["verification"]
    assert (status["method"], status["record"]) == ("Domain", "shop-example")  # not pruned

    other = f"other-{uuid.uuid4().hex[:5]}"
    await admin.call("POST", "/api/v1/namespaces", {"metadata": {"name": other}})
    try:
        await create(admin, WEBHOOKS, "Webhook", other, "elsewhere", url="https://api.shop.example/hook",
                     events=["open"], paused=True, verification={"method": "DNS"})  # fmt: skip

        async def refused() -> dict | None:
            found = await verified(admin, WEBHOOKS, other, "elsewhere")
            return found if found.get("reason") == "RecordNotFound" else None

        assert (await eventually(refused, "the other namespace's Webhook not verified by it"))[
            "status"
        ] == "False"
    finally:
        with contextlib.suppress(AssertionError):
            patch = {"metadata": {"finalizers": None}}
            await admin.request(
                "PATCH", api_path(WEBHOOKS, other, "elsewhere"), patch, "application/merge-patch+json"
            )
            await admin.request("DELETE", f"/api/v1/namespaces/{other}")
