"""One test per operator flow, against the API emulator, a real nats-server and a real site."""

from __future__ import annotations

import asyncio

from operator_helpers import (
    CONFIGMAPS,
    DEPLOYMENTS,
    NS,
    WEBHOOKS,
    api_path,
    condition,
    create_webhook,
    make_available,
    wait_for,
)

from hookline.sender.model.config import consumer_name


def webhook_of(cluster, name):
    return cluster.get(WEBHOOKS, name)


def labels_of(cluster, name):
    """The Webhook's labels; none yet is an empty dict (a wait condition must not raise)."""
    return ((webhook_of(cluster, name) or {}).get("metadata") or {}).get("labels") or {}


def verification_of(cluster, name):
    return ((webhook_of(cluster, name) or {}).get("status") or {}).get("verification") or {}


async def verified_token(cluster, site, name, *, at_root=False, **spec):
    """Create a Webhook whose site serves the right file; wait until Verified; return its token."""
    await create_webhook(cluster, name, url=site.url(f"/hooks/{name}.php"), events=["open", "click"], **spec)
    info = await wait_for(lambda: verification_of(cluster, name).get("content"), "a token in status")
    file_name = verification_of(cluster, name)["fileName"]
    site.files[f"/{file_name}" if at_root else f"/hooks/{file_name}"] = info + "\n"
    await wait_for(
        lambda: condition(webhook_of(cluster, name), "Verified").get("status") == "True", f"{name} Verified"
    )
    return info


async def test_create_puts_file_name_and_content_in_status_at_once(cluster, site, start_operator):
    await start_operator()
    await create_webhook(cluster, "orders", url=site.url("/hooks/copernica.php"), events=["click"])
    verification = await wait_for(lambda: verification_of(cluster, "orders").get("fileName"), "fileName")
    info = verification_of(cluster, "orders")
    token = info["content"]
    assert len(token) == 32 and int(token, 16) >= 0
    assert info["fileName"] == verification == f"hookline-{token}.txt"
    assert info["locations"] == [site.url(f"/hooks/hookline-{token}.txt"), site.url(f"/hookline-{token}.txt")]
    verified = await wait_for(lambda: condition(webhook_of(cluster, "orders"), "Verified"), "Verified")
    assert verified["status"] == "False"
    assert cluster.get(DEPLOYMENTS, "orders-sender") is None  # nothing runs before verification


async def test_file_in_script_directory_verifies_and_creates_the_sender(cluster, site, start_operator):
    await start_operator()
    token = await verified_token(
        cluster,
        site,
        "clicks",
        database="newsletter",
        signing={"secretRef": {"name": "hook-secret", "key": "secret"}},
        sender={"replicas": 2, "resources": {"limits": {"memory": "128Mi"}}},
    )
    webhook = webhook_of(cluster, "clicks")
    verified = condition(webhook, "Verified")
    assert verified["reason"] == "FileMatched"
    assert webhook["status"]["verification"]["verifiedURL"] == site.url(f"/hooks/hookline-{token}.txt")

    deployment = await wait_for(lambda: cluster.get(DEPLOYMENTS, "clicks-sender"), "the sender Deployment")
    owner = deployment["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Webhook", "clicks", webhook["metadata"]["uid"])
    assert deployment["metadata"]["labels"] == {
        "app.kubernetes.io/name": "hookline",
        "app.kubernetes.io/component": "sender",
        "app.kubernetes.io/managed-by": "hookline-operator",
        "hookline.io/webhook": "clicks",
    }
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["annotations"]["hookline.io/config-hash"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "ghcr.io/hookline/hookline:test"
    assert container["resources"] == {"limits": {"memory": "128Mi"}}
    security = container["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"]
    assert security["capabilities"] == {"drop": ["ALL"]} and security["allowPrivilegeEscalation"] is False
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["livenessProbe"]["httpGet"]["port"] == "metrics"
    assert container["ports"] == [{"name": "metrics", "containerPort": 8081, "protocol": "TCP"}]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["signing"]["secret"]["secretName"] == "hook-secret"  # by reference, never read
    assert volumes["config"]["configMap"]["name"] == "clicks-sender"

    config_map = cluster.get(CONFIGMAPS, "clicks-sender")
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == webhook["metadata"]["uid"]
    assert "signingSecretFile: /var/run/secrets/hookline/signing/secret" in config_map["data"]["sender.yaml"]
    assert webhook["metadata"]["labels"]["hookline.io/database"] == "newsletter"

    # Ready follows the Deployment: the emulator has no controller, so the test reports pods up.
    assert condition(webhook_of(cluster, "clicks"), "Ready").get("status") != "True"
    await make_available(cluster, "clicks-sender", 2)
    await wait_for(
        lambda: condition(webhook_of(cluster, "clicks"), "Ready").get("reason") == "SenderAvailable", "Ready"
    )
    status = webhook_of(cluster, "clicks")["status"]
    assert status["sender"]["deployment"] == "clicks-sender"
    assert (status["sender"]["replicas"], status["sender"]["readyReplicas"]) == (2, 2)
    assert status["observedGeneration"] == webhook["metadata"]["generation"]
    # Kopf posts Events in the background, after the status patch: wait for them.
    await wait_for(
        lambda: (
            {"Verified", "SenderCreated", "SenderReady"}
            <= {e["reason"] for e in cluster.events_for("clicks")}
        ),
        "Events Verified, SenderCreated and SenderReady",
    )


async def test_file_only_at_root_verifies(cluster, site, start_operator):
    await start_operator()
    token = await verified_token(cluster, site, "rooted", at_root=True)
    status = webhook_of(cluster, "rooted")["status"]
    assert status["verification"]["verifiedURL"] == site.url(f"/hookline-{token}.txt")


async def test_wrong_content_is_content_mismatch(cluster, site, start_operator):
    await start_operator()
    await create_webhook(cluster, "wrong", url=site.url("/hooks/x.php"), events=["open"])
    name = await wait_for(lambda: verification_of(cluster, "wrong").get("fileName"), "fileName")
    site.files[f"/hooks/{name}"] = "not the token"
    verified = await wait_for(
        lambda: (
            condition(webhook_of(cluster, "wrong"), "Verified").get("reason") == "ContentMismatch"
            and condition(webhook_of(cluster, "wrong"), "Verified")
        ),
        "ContentMismatch",
    )
    assert verified["status"] == "False"
    assert "must contain exactly" in verified["message"]
    assert cluster.get(DEPLOYMENTS, "wrong-sender") is None


async def test_missing_file_is_file_not_found_and_checks_grow_apart(cluster, site, start_operator):
    await start_operator()
    await create_webhook(cluster, "missing", url=site.url("/hooks/x.php"), events=["open"])
    verified = await wait_for(
        lambda: (
            condition(webhook_of(cluster, "missing"), "Verified").get("reason") == "FileNotFound"
            and condition(webhook_of(cluster, "missing"), "Verified")
        ),
        "FileNotFound",
    )
    token = verification_of(cluster, "missing")["content"]
    assert token in verified["message"] and "Next check in" in verified["message"]
    await wait_for(lambda: verification_of(cluster, "missing").get("checks", 0) >= 3, "three checks")
    # The file appears later: a following check finds it without any change to the Webhook.
    site.files[f"/hooks/hookline-{token}.txt"] = token
    await wait_for(
        lambda: condition(webhook_of(cluster, "missing"), "Verified").get("status") == "True", "Verified"
    )


async def test_private_address_is_blocked_without_allow_list(cluster, site, start_operator):
    from hookline.sender.transport.egress import EgressPolicy

    await start_operator(egress=EgressPolicy([], allow_http=True))
    await create_webhook(cluster, "private", url=site.url("/hooks/x.php"), events=["open"])
    verified = await wait_for(
        lambda: (
            condition(webhook_of(cluster, "private"), "Verified").get("reason") == "Blocked"
            and condition(webhook_of(cluster, "private"), "Verified")
        ),
        "Blocked",
    )
    assert "--allow-network" in verified["message"]
    assert site.requests == []  # nothing was sent to the refused address


async def test_url_change_is_checked_again_with_the_same_file(cluster, site, start_operator):
    await start_operator()
    token = await verified_token(cluster, site, "moving")
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "moving-sender"), "the sender")
    new_url = site.url("/v2/hook.php")
    await cluster.call("PATCH", api_path(WEBHOOKS, name="moving"), {"spec": {"url": new_url}})
    await wait_for(
        lambda: verification_of(cluster, "moving").get("locations", [""])[0].startswith(site.url("/v2/")),
        "new locations",
    )
    assert verification_of(cluster, "moving")["content"] == token  # same file, new place
    verified = await wait_for(
        lambda: (
            condition(webhook_of(cluster, "moving"), "Verified").get("status") == "False"
            and condition(webhook_of(cluster, "moving"), "Verified")
        ),
        "re-verification pending",
    )
    assert verified["reason"] == "FileNotFound"  # the root copy is not there either
    # Nothing goes to the old URL nor the new one meanwhile; events wait in the stream.
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "moving-sender")["spec"]["replicas"] == 0, "sender held")
    site.files[f"/v2/hookline-{token}.txt"] = token
    await wait_for(
        lambda: (
            verification_of(cluster, "moving").get("verifiedURL") == site.url(f"/v2/hookline-{token}.txt")
        ),
        "verified at the new place",
    )
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "moving-sender")["spec"]["replicas"] == 1, "sender back")
    config = cluster.get(CONFIGMAPS, "moving-sender")["data"]["sender.yaml"]
    assert new_url in config


async def test_paused_webhook_runs_zero_replicas(cluster, site, start_operator):
    await start_operator()
    await verified_token(cluster, site, "paused", paused=True)
    deployment = await wait_for(lambda: cluster.get(DEPLOYMENTS, "paused-sender"), "the sender")
    assert deployment["spec"]["replicas"] == 0
    ready = await wait_for(lambda: condition(webhook_of(cluster, "paused"), "Ready"), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Paused")
    await cluster.call("PATCH", api_path(WEBHOOKS, name="paused"), {"spec": {"paused": False}})
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "paused-sender")["spec"]["replicas"] == 1, "unpaused")


async def test_spec_change_updates_the_deployment_with_a_new_config_hash(cluster, site, start_operator):
    await start_operator()
    await verified_token(cluster, site, "changing")
    first = await wait_for(lambda: cluster.get(DEPLOYMENTS, "changing-sender"), "the sender")
    old_hash = first["spec"]["template"]["metadata"]["annotations"]["hookline.io/config-hash"]
    await cluster.call(
        "PATCH",
        api_path(WEBHOOKS, name="changing"),
        {"spec": {"format": "json", "database": "newsletter", "collection": "orders"}},
    )

    def new_hash():
        deployment = cluster.get(DEPLOYMENTS, "changing-sender")
        current = deployment["spec"]["template"]["metadata"]["annotations"]["hookline.io/config-hash"]
        return current != old_hash and current

    await wait_for(new_hash, "a new config hash")
    assert "format: json" in cluster.get(CONFIGMAPS, "changing-sender")["data"]["sender.yaml"]
    labels = await wait_for(
        lambda: "hookline.io/collection" in labels_of(cluster, "changing") and labels_of(cluster, "changing"),
        "scope labels",
    )
    assert (labels["hookline.io/database"], labels["hookline.io/collection"]) == ("newsletter", "orders")
    # Removing the scope removes the labels.
    await cluster.call(
        "PATCH", api_path(WEBHOOKS, name="changing"), {"spec": {"database": None, "collection": None}}
    )
    await wait_for(
        lambda: (
            not {"hookline.io/database", "hookline.io/collection"}
            & set(webhook_of(cluster, "changing")["metadata"].get("labels") or {})
        ),
        "labels removed",
    )


async def test_fields_removed_from_the_webhook_disappear_from_the_deployment(cluster, site, start_operator):
    await start_operator()
    await verified_token(
        cluster,
        site,
        "shrinking",
        signing={"secretRef": {"name": "hook-secret", "key": "secret"}},
        sender={"replicas": 1, "resources": {"limits": {"memory": "128Mi"}}},
    )
    first = await wait_for(lambda: cluster.get(DEPLOYMENTS, "shrinking-sender"), "the sender")
    pod = first["spec"]["template"]["spec"]
    assert "signing" in {v["name"] for v in pod["volumes"]}
    assert "signing" in {m["name"] for m in pod["containers"][0]["volumeMounts"]}
    # Something the Deployment controller or a person adds is kept; only what the operator set changes.
    await cluster.call(
        "PATCH",
        api_path(DEPLOYMENTS, name="shrinking-sender"),
        {"metadata": {"annotations": {"deployment.kubernetes.io/revision": "1"}}},
    )
    # Resource limits dropped: nothing else changes, so only the operator's record of what it set tells.
    patch = {"spec": {"sender": {"resources": None}}}
    await cluster.call("PATCH", api_path(WEBHOOKS, name="shrinking"), patch)

    def container():
        return cluster.get(DEPLOYMENTS, "shrinking-sender")["spec"]["template"]["spec"]["containers"][0]

    await wait_for(lambda: container()["resources"] == {}, "the resource limits removed")
    # Signing dropped: its Secret volume and mount go.
    await cluster.call("PATCH", api_path(WEBHOOKS, name="shrinking"), {"spec": {"signing": None}})

    def without_signing():
        deployment = cluster.get(DEPLOYMENTS, "shrinking-sender")
        volumes = {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
        return "signing" not in volumes and deployment

    deployment = await wait_for(without_signing, "the signing volume removed from the Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert {v["name"] for v in pod["volumes"]} == {"config", "tmp"}
    assert {m["name"] for m in container()["volumeMounts"]} == {"config", "tmp"}
    assert deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert deployment["metadata"]["ownerReferences"] == first["metadata"]["ownerReferences"]
    assert "signingSecretFile" not in cluster.get(CONFIGMAPS, "shrinking-sender")["data"]["sender.yaml"]


async def test_a_setting_the_operator_no_longer_applies_disappears_from_the_deployment(
    cluster, site, start_operator
):
    first = await start_operator(sender_service_account="hookline-sender")
    await verified_token(cluster, site, "accounted")

    def pod_spec():
        deployment = cluster.get(DEPLOYMENTS, "accounted-sender")
        return deployment and deployment["spec"]["template"]["spec"]

    await wait_for(lambda: (pod_spec() or {}).get("serviceAccountName") == "hookline-sender", "the account")
    await first.stop()
    # Restarted without HOOKLINE_SENDER_SERVICE_ACCOUNT: the key must go (a merge patch would keep it).
    await start_operator()
    await wait_for(lambda: "serviceAccountName" not in pod_spec(), "the service account removed")
    assert pod_spec()["automountServiceAccountToken"] is False


async def test_operator_restart_keeps_the_token_and_does_not_check_again(cluster, site, start_operator):
    first = await start_operator()
    token = await verified_token(cluster, site, "steady")
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "steady-sender"), "the sender")
    await first.stop()
    checks_before = len(site.gets())
    second = await start_operator()
    # Something the restarted operator does for every existing Webhook: mirror sender availability.
    await make_available(cluster, "steady-sender", 1)
    await wait_for(
        lambda: condition(webhook_of(cluster, "steady"), "Ready").get("status") == "True",
        "Ready after restart",
    )
    assert second.runtime is not None
    assert verification_of(cluster, "steady")["content"] == token
    assert len(site.gets()) == checks_before  # no verification request after the restart


async def test_delete_removes_the_consumer_from_nats(cluster, site, start_operator, nats_server):
    import nats

    await start_operator()
    await verified_token(cluster, site, "leaving")
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "leaving-sender"), "the sender")
    name = consumer_name(NS, "leaving")
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        info = await js.consumer_info("HOOKLINE_EVENTS", name)
        assert info.config.durable_name == name
        await cluster.call("DELETE", api_path(WEBHOOKS, name="leaving"))
        await wait_for(
            lambda: webhook_of(cluster, "leaving") is None, "the Webhook gone (finalizer released)"
        )
        names = [c.name for c in await js.consumers_info("HOOKLINE_EVENTS")]
        assert name not in names
    finally:
        await nc.close()


async def test_delete_with_nats_down_gives_up_with_a_warning(cluster, site, start_operator, nats_server):
    await start_operator()
    await verified_token(cluster, site, "stranded")
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "stranded-sender"), "the sender")
    nats_server.stop()
    await cluster.call("DELETE", api_path(WEBHOOKS, name="stranded"))
    await wait_for(lambda: webhook_of(cluster, "stranded") is None, "deletion not blocked forever", within=90)
    warnings = await wait_for(
        lambda: [e for e in cluster.events_for("stranded") if e["reason"] == "ConsumerNotRemoved"],
        "a ConsumerNotRemoved warning",
    )
    assert "nats consumer rm" in warnings[0]["message"]
    await asyncio.sleep(0)


async def test_metrics_name_each_webhook_and_forget_it_when_deleted(cluster, site, start_operator):
    from prometheus_client import generate_latest

    operator = await start_operator()
    await create_webhook(cluster, "counted", url=site.url("/hooks/x.php"), events=["open"], database="news")
    await wait_for(
        lambda: condition(webhook_of(cluster, "counted"), "Verified").get("reason") == "FileNotFound",
        "FileNotFound",
    )

    def scrape() -> str:
        return generate_latest(operator.runtime.metrics.registry).decode()

    series = (
        'hookline_webhook_condition{condition="Verified",database="news",'
        'namespace="shop",status="False",webhook="counted"} 1.0'
    )
    await wait_for(lambda: series in scrape(), "the Webhook's own Verified=False series")
    count = 'hookline_webhooks{condition="Verified",database="news",namespace="shop",status="False"} 1.0'
    assert count in scrape()
    await cluster.call("DELETE", api_path(WEBHOOKS, name="counted"))
    await wait_for(lambda: 'webhook="counted"' not in scrape(), "the Webhook's series removed")
    assert 'database="news"' not in scrape()
