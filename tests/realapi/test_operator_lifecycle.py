"""A Webhook's life on a real kube-apiserver: verified, Ready, moved, paused, tested, deleted.

The operator runs as the chart's ServiceAccount (real RBAC, real CRD validation and pruning), NATS is
a real nats-server, the customer's site a real aiohttp server on loopback. There is no kubelet and
no Deployment controller: the test reports the sender's pods up through the Deployment's status
subresource, as the controller would. The garbage collector is real.
"""

from __future__ import annotations

import base64

from operator_helpers import CONFIGMAPS, DEPLOYMENTS, SECRETS, TESTS, WEBHOOKS, api_path, condition
from realapi_helpers import KubeClient, eventually

from hookline.sender.model.signing import verify
from hookline.sender.model.wire import decode_form

SECRET = "whsec_" + base64.b64encode(b"r" * 32).decode()


async def create_webhook(admin: KubeClient, namespace: str, name: str, **spec):
    body = {"apiVersion": "hookline.io/v1alpha1", "kind": "Webhook", "metadata": {"name": name}}
    body["spec"] = spec
    return await admin.call("POST", api_path(WEBHOOKS, namespace), body)


async def webhook_of(admin: KubeClient, namespace: str, name: str) -> dict:
    return await admin.get(WEBHOOKS, name, namespace) or {}


async def verification_of(admin: KubeClient, namespace: str, name: str) -> dict:
    return ((await webhook_of(admin, namespace, name)).get("status") or {}).get("verification") or {}


async def condition_of(admin: KubeClient, namespace: str, name: str, type_: str) -> dict:
    return condition(await webhook_of(admin, namespace, name), type_)


async def verified_webhook(admin, namespace, site, name, *, at_root=False, **spec) -> str:
    """Create a Webhook, put its verification file where the customer would, wait for Verified."""
    await create_webhook(admin, namespace, name, url=site.url(f"/hooks/{name}.php"), events=["click"], **spec)

    async def token():
        return (await verification_of(admin, namespace, name)).get("content")

    value = await eventually(token, f"{name}: a verification token in status")
    site.files[f"/hookline-{value}.txt" if at_root else f"/hooks/hookline-{value}.txt"] = value + "\n"

    async def verified():
        found = await condition_of(admin, namespace, name, "Verified")
        return found if found.get("status") == "True" else None

    assert (await eventually(verified, f"{name} Verified"))["reason"] == "FileMatched"
    return value


async def make_available(admin: KubeClient, namespace: str, name: str, replicas: int) -> None:
    """What the Deployment controller would write once the pods are up (the status subresource)."""
    status = {"replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas}
    status["availableReplicas"] = replicas
    path = api_path(DEPLOYMENTS, namespace, name, "status")
    await admin.call("PATCH", path, {"status": status})


async def replicas_of(admin: KubeClient, namespace: str, name: str) -> int | None:
    deployment = await admin.get(DEPLOYMENTS, name, namespace)
    return None if deployment is None else deployment["spec"]["replicas"]


async def test_webhook_verifies_gets_ready_moves_and_pauses(admin, namespace, site, start_operator):
    await start_operator()

    # Verified with the file next to the script, and another one with the file in the web root.
    token = await verified_webhook(admin, namespace, site, "clicks")
    status = (await webhook_of(admin, namespace, "clicks"))["status"]
    assert status["verification"]["verifiedURL"] == site.url(f"/hooks/hookline-{token}.txt")
    rooted = await verified_webhook(admin, namespace, site, "rooted", at_root=True)
    status = (await webhook_of(admin, namespace, "rooted"))["status"]
    assert status["verification"]["verifiedURL"] == site.url(f"/hookline-{rooted}.txt")

    # Its sender: a Deployment and a ConfigMap owned by the Webhook; Ready once the pods are up.
    webhook = await webhook_of(admin, namespace, "clicks")
    deployment = await eventually(
        lambda: admin.get(DEPLOYMENTS, "clicks-sender", namespace), "the sender Deployment"
    )
    config_map = await admin.get(CONFIGMAPS, "clicks-sender", namespace)
    assert config_map is not None
    for owned in (deployment, config_map):
        (owner,) = owned["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "Webhook",
            "clicks",
            webhook["metadata"]["uid"],
        )
    ready = await condition_of(admin, namespace, "clicks", "Ready")
    assert ready.get("status") != "True"
    await make_available(admin, namespace, "clicks-sender", 1)

    async def ready_now():
        found = await condition_of(admin, namespace, "clicks", "Ready")
        return found if found.get("status") == "True" else None

    assert (await eventually(ready_now, "clicks Ready"))["reason"] == "SenderAvailable"
    sender = (await webhook_of(admin, namespace, "clicks"))["status"]["sender"]
    assert (sender["deployment"], sender["availableReplicas"]) == ("clicks-sender", 1)

    # A new URL is verified again (same file, new place); nothing is sent meanwhile.
    new_url = site.url("/v2/clicks.php")
    await admin.call("PATCH", api_path(WEBHOOKS, namespace, "clicks"), {"spec": {"url": new_url}})

    async def checking_again():
        found = await condition_of(admin, namespace, "clicks", "Verified")
        return found if found.get("status") == "False" else None

    assert (await eventually(checking_again, "clicks verified again"))["reason"] == "FileNotFound"
    await eventually(
        lambda: _equals(replicas_of(admin, namespace, "clicks-sender"), 0), "the sender held at 0 replicas"
    )
    site.files[f"/v2/hookline-{token}.txt"] = token

    async def verified_at_new_place():
        verification = await verification_of(admin, namespace, "clicks")
        return verification.get("verifiedURL") == site.url(f"/v2/hookline-{token}.txt")

    await eventually(verified_at_new_place, "clicks verified at the new URL")
    await eventually(lambda: _equals(replicas_of(admin, namespace, "clicks-sender"), 1), "the sender back")
    config = (await admin.get(CONFIGMAPS, "clicks-sender", namespace))["data"]["sender.yaml"]
    assert new_url in config

    # Paused: zero replicas, and Ready says why.
    await admin.call("PATCH", api_path(WEBHOOKS, namespace, "clicks"), {"spec": {"paused": True}})
    await eventually(lambda: _equals(replicas_of(admin, namespace, "clicks-sender"), 0), "paused at 0")

    async def paused():
        found = await condition_of(admin, namespace, "clicks", "Ready")
        return found if found.get("reason") == "Paused" else None

    ready = await eventually(paused, "Ready=False/Paused")
    assert ready["status"] == "False" and "spec.paused" in ready["message"]


async def _equals(value, expected) -> bool:
    return (await value) == expected


async def test_webhooktest_posts_signed_to_the_site_and_reports_the_answer(
    admin, namespace, site, start_operator
):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook-secret"}}
    secret["data"] = {"secret": base64.b64encode(SECRET.encode()).decode()}
    await admin.call("POST", api_path(SECRETS, namespace), secret)
    await start_operator()
    signing = {"secretRef": {"name": "hook-secret", "key": "secret"}}
    await verified_webhook(admin, namespace, site, "tested", signing=signing)
    site.post_body = "got it"

    test = {"apiVersion": "hookline.io/v1alpha1", "kind": "WebhookTest", "metadata": {"name": "try"}}
    test["spec"] = {"webhook": "tested", "event": "click", "data": {"recipient": "a@b.example"}}
    await admin.call("POST", api_path(TESTS, namespace), test)

    async def finished():
        status = ((await admin.get(TESTS, "try", namespace)) or {}).get("status") or {}
        return status if status.get("phase") in ("Succeeded", "Failed") else None

    status = await eventually(finished, "the WebhookTest to finish")
    assert status["phase"] == "Succeeded" and status["signed"] is True, status
    assert (status["response"]["statusCode"], status["response"]["body"]) == (200, "got it")
    (post,) = site.posts()
    assert post["path"] == "/hooks/tested.php"
    form = decode_form(post["body"])
    assert (form["type"], form["recipient"]) == ("click", "a@b.example")
    assert form["id"] == status["eventId"] == post["headers"]["webhook-id"]
    verify(SECRET, post["headers"], post["body"])  # raises when the signature is wrong


async def test_delete_removes_the_webhook_and_the_garbage_collector_its_sender(
    admin, namespace, site, start_operator
):
    await start_operator()
    await verified_webhook(admin, namespace, site, "leaving")
    await eventually(lambda: admin.get(DEPLOYMENTS, "leaving-sender", namespace), "the sender Deployment")
    assert await admin.get(CONFIGMAPS, "leaving-sender", namespace) is not None

    await admin.call("DELETE", api_path(WEBHOOKS, namespace, "leaving"))

    async def gone(resource, name):
        return await admin.get(resource, name, namespace) is None

    await eventually(lambda: gone(WEBHOOKS, "leaving"), "the Webhook gone (the operator released it)")
    await eventually(lambda: gone(DEPLOYMENTS, "leaving-sender"), "the Deployment garbage-collected")
    await eventually(lambda: gone(CONFIGMAPS, "leaving-sender"), "the ConfigMap garbage-collected")
