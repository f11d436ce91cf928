"""The strict emulator refuses (or prunes) what kube-apiserver refuses (or prunes), over HTTP.

Each test sends what a client (the operator, kubectl) would send, through aiohttp, and checks the
answer against kube-apiserver's: the status code, the Status reason and the message where the real
one's wording matters to a client (Kopf and the operator read `code`, `reason` and `details`).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from operator_helpers import (
    ADMIN_TOKEN,
    CONFIGMAPS,
    DEPLOYMENTS,
    NS,
    OPERATOR_TOKEN,
    SECRETS,
    TESTS,
    WEBHOOKS,
    api_path,
    condition,
    create_webhook,
    wait_for,
)
from strict_api import (
    JSON_PATCH,
    STRATEGIC,
    Identity,
    Rule,
    StrictCluster,
    chart_identity,
    identity_of,
    render_chart,
)

URL = "https://shop.example.com/hooks/copernica.php"


def webhook_body(name: str = "orders", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "hookline.io/v1alpha1",
        "kind": "Webhook",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"url": URL, "events": ["click"], **spec},
    }


async def watch_lines(
    cluster: StrictCluster, path: str, token: str = ADMIN_TOKEN, **params: str
) -> list[Any]:
    """A watch read to its end (the test bounds it with timeoutSeconds); each line decoded."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.get(str(cluster.url).rstrip("/") + path, params=params, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        return [json.loads(line) for line in (await response.text()).splitlines() if line.strip()]


def cause_fields(body: dict[str, Any]) -> list[str]:
    return [c["field"] for c in body["details"]["causes"]]


# --- 1. query parameters ------------------------------------------------------------------------------------


async def test_a_float_timeout_is_refused_as_kube_apiserver_does(cluster):
    """The issue's first finding: Kopf sent timeoutSeconds=300.0 and every watch got this 400."""
    params = {"watch": "true", "timeoutSeconds": "300.0"}
    status, body = await cluster.send("GET", api_path(WEBHOOKS), token=OPERATOR_TOKEN, params=params)
    assert status == 400
    assert (body["kind"], body["status"], body["reason"], body["code"]) == (
        "Status",
        "Failure",
        "BadRequest",
        400,
    )
    assert body["message"] == 'strconv.ParseInt: parsing "300.0": invalid syntax'
    cluster.refusals.clear()  # refused on purpose: not an operator fault


@pytest.mark.parametrize(
    ("param", "value"),
    [("limit", "1.5"), ("limit", "ten"), ("timeoutSeconds", " 5"), ("timeoutSeconds", "5_0")],
)
async def test_integer_parameters_are_parsed_as_int64(cluster, param, value):
    status, body = await cluster.send("GET", api_path(WEBHOOKS), params={param: value})
    assert (status, body["message"]) == (400, f'strconv.ParseInt: parsing "{value}": invalid syntax')


async def test_an_integer_timeout_is_honoured_and_ends_the_watch(cluster):
    await create_webhook(cluster, "orders", url=URL, events=["click"])
    lines = await watch_lines(cluster, api_path(WEBHOOKS), watch="true", timeoutSeconds="1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == [("ADDED", "orders")]


async def test_watch_is_a_bool_as_apimachinery_reads_it(cluster):
    """`watch=1` is a watch (kmock alone only knows `true` and would answer a list)."""
    await create_webhook(cluster, "orders", url=URL, events=["click"])
    lines = await watch_lines(cluster, api_path(WEBHOOKS), watch="1", timeoutSeconds="1")
    assert lines[0]["type"] == "ADDED"
    status, body = await cluster.send("GET", api_path(WEBHOOKS), params={"watch": "false"})
    assert status == 200 and body["kind"] == "WebhookList"


async def test_selectors_are_parsed_and_applied(cluster):
    labelled = webhook_body("a")
    labelled["metadata"]["labels"] = {"hookline.io/database": "newsletter"}
    await cluster.call("POST", api_path(WEBHOOKS), labelled)
    await cluster.call("POST", api_path(WEBHOOKS), webhook_body("b"))

    async def names(**params: str) -> list[str]:
        body = await cluster.call(
            "GET", api_path(WEBHOOKS) + "?" + "&".join(f"{k}={v}" for k, v in params.items())
        )
        return [i["metadata"]["name"] for i in body["items"]]

    assert await names(labelSelector="hookline.io/database=newsletter") == ["a"]
    assert await names(labelSelector="hookline.io/database!=newsletter") == ["b"]
    assert await names(labelSelector="hookline.io/database%20in%20(newsletter,x)") == ["a"]
    assert await names(labelSelector="!hookline.io/database") == ["b"]
    assert await names(fieldSelector="metadata.name=b") == ["b"]
    status, body = await cluster.send("GET", api_path(WEBHOOKS), params={"labelSelector": "a b c"})
    assert status == 400 and body["reason"] == "BadRequest"
    status, body = await cluster.send("GET", api_path(WEBHOOKS), params={"fieldSelector": "spec.url=x"})
    assert (status, body["message"]) == (400, "field label not supported: spec.url")


async def test_limit_pages_a_list_with_continue(cluster):
    for name in ("a", "b", "c"):
        await cluster.call("POST", api_path(WEBHOOKS), webhook_body(name))
    first = await cluster.call("GET", api_path(WEBHOOKS) + "?limit=2")
    assert [i["metadata"]["name"] for i in first["items"]] == ["a", "b"]
    rest = await cluster.call(
        "GET", api_path(WEBHOOKS) + f"?limit=2&continue={first['metadata']['continue']}"
    )
    assert [i["metadata"]["name"] for i in rest["items"]] == ["c"] and "continue" not in rest["metadata"]


# --- 2. pruning ---------------------------------------------------------------------------------------------


async def test_undeclared_fields_are_pruned_on_create(cluster):
    body = webhook_body(retries=3)
    body["metadata"]["bogus"] = "x"
    body["extra"] = {"a": 1}
    status, stored = await cluster.send("POST", api_path(WEBHOOKS), body)
    assert status == 201  # the API server prunes silently, it does not refuse
    assert "retries" not in stored["spec"] and "bogus" not in stored["metadata"] and "extra" not in stored
    assert cluster.pruned[-1].fields == ["metadata.bogus", "spec.retries", "extra"]


async def test_undeclared_status_fields_are_pruned_on_merge_patch_json_patch_and_put(cluster):
    await create_webhook(cluster, "orders", url=URL, events=["click"])
    status_path = api_path(WEBHOOKS, name="orders", sub="status")
    patch = {"status": {"verification": {"checks": 1, "notInTheCrd": "x"}, "kopf": {"progress": {}}}}
    stored = await cluster.call("PATCH", status_path, patch)
    assert stored["status"] == {"verification": {"checks": 1}}
    ops = [
        {"op": "add", "path": "/spec/retries", "value": 3},
        {"op": "replace", "path": "/spec/paused", "value": True},
    ]
    status, stored = await cluster.send(
        "PATCH", api_path(WEBHOOKS, name="orders"), ops, content_type=JSON_PATCH
    )
    assert status == 200 and stored["spec"]["paused"] is True and "retries" not in stored["spec"]
    replaced = {**stored, "spec": {**stored["spec"], "retriesAgain": 1}}
    status, stored = await cluster.send("PUT", api_path(WEBHOOKS, name="orders"), replaced)
    assert status == 200 and "retriesAgain" not in stored["spec"]
    assert [p.fields for p in cluster.pruned] == [
        ["status.verification.notInTheCrd", "status.kopf"],
        ["spec.retries"],
        ["spec.retriesAgain"],
    ]


async def test_preserve_unknown_fields_keeps_them(cluster):
    body = {
        "apiVersion": "hookline.io/v1alpha1",
        "kind": "WebhookTest",
        "metadata": {"name": "t1", "namespace": NS},
        "spec": {"webhook": "orders", "event": "click", "data": {"fields": {"email": "a@b"}, "x": [1]}},
    }
    stored = await cluster.call("POST", api_path(TESTS), body)
    assert stored["spec"]["data"] == {"fields": {"email": "a@b"}, "x": [1]}
    assert cluster.pruned == []


async def test_strict_field_validation_refuses_unknown_fields(cluster):
    status, body = await cluster.send(
        "POST", api_path(WEBHOOKS), webhook_body(retries=3), params={"fieldValidation": "Strict"}
    )
    assert (status, body["reason"]) == (400, "BadRequest")
    assert body["message"] == (
        'Webhook in version "v1alpha1" cannot be handled as a Webhook: '
        'strict decoding error: unknown field "spec.retries"'
    )


# --- 3. schema, CEL, defaults -------------------------------------------------------------------------------


async def test_schema_violation_is_a_422_naming_the_field(cluster):
    status, body = await cluster.send(
        "POST", api_path(WEBHOOKS), webhook_body("bad", url="ftp://shop.example.com/x")
    )
    assert status == 422
    assert (body["kind"], body["status"], body["reason"], body["code"]) == (
        "Status",
        "Failure",
        "Invalid",
        422,
    )
    assert body["details"]["name"] == "bad" and body["details"]["group"] == "hookline.io"
    assert body["details"]["kind"] == "Webhook"
    assert cause_fields(body) == ["spec.url"]
    assert body["message"].startswith(
        'Webhook.hookline.io "bad" is invalid: spec.url: Invalid value: "ftp://'
    )
    assert cluster.get(WEBHOOKS, "bad") is None


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"events": ["open", "unsubscribe"]}, "spec.events[1]"),  # enum
        ({"events": []}, "spec.events"),  # minItems
        ({"delivery": {"maxAttempts": 51}}, "spec.delivery.maxAttempts"),  # maximum
        ({"delivery": {"maxRequestsPerSecond": 0}}, "spec.delivery.maxRequestsPerSecond"),  # exclusiveMinimum
        ({"database": "news letter"}, "spec.database"),  # pattern
        ({"paused": "yes"}, "spec.paused"),  # type
        ({"events": ["open", "click", "open"]}, "spec.events"),  # CEL
        ({"collection": "orders"}, "spec.collection"),  # CEL with fieldPath
        ({"headers": {"Host": "evil.example"}}, "spec.headers"),  # CEL over a map
    ],
)
async def test_every_write_is_validated(cluster, spec, field):
    await create_webhook(cluster, "orders", url=URL, events=["click"])
    status, body = await cluster.send("PATCH", api_path(WEBHOOKS, name="orders"), {"spec": spec})
    assert status == 422, body
    assert field in cause_fields(body), body


async def test_a_missing_required_field_is_refused(cluster):
    body = webhook_body()
    del body["spec"]["url"]
    status, answer = await cluster.send("POST", api_path(WEBHOOKS), body)
    assert status == 422 and answer["details"]["causes"][0]["reason"] == "FieldValueRequired"
    assert cause_fields(answer) == ["spec.url"]


async def test_status_is_validated_too(cluster):
    await create_webhook(cluster, "orders", url=URL, events=["click"])
    conditions = [{"type": "Ready", "status": "Maybe"}]
    status, body = await cluster.send(
        "PATCH", api_path(WEBHOOKS, name="orders", sub="status"), {"status": {"conditions": conditions}}
    )
    assert status == 422 and cause_fields(body) == ["status.conditions[0].status"]
    status, body = await cluster.send(
        "PATCH",
        api_path(WEBHOOKS, name="orders", sub="status"),
        {"status": {"verification": {"lastCheckedAt": "now"}}},
    )
    assert status == 422 and cause_fields(body) == ["status.verification.lastCheckedAt"]


async def test_transition_rules_compare_with_the_stored_object(cluster):
    body = {
        "apiVersion": "hookline.io/v1alpha1",
        "kind": "WebhookTest",
        "metadata": {"name": "t1", "namespace": NS},
        "spec": {"webhook": "orders", "event": "click"},
    }
    await cluster.call("POST", api_path(TESTS), body)
    status, answer = await cluster.send("PATCH", api_path(TESTS, name="t1"), {"spec": {"event": "open"}})
    assert status == 422 and cause_fields(answer) == ["spec"]
    assert "create a new WebhookTest" in answer["message"]


async def test_defaults_are_applied_on_write(cluster):
    stored = await cluster.call("POST", api_path(WEBHOOKS), webhook_body())
    spec = stored["spec"]
    assert (spec["format"], spec["paused"], spec["headers"]) == ("form", False, {})
    assert spec["delivery"] == {
        "timeoutSeconds": 10,
        "maxAttempts": 10,
        "maxRequestsPerSecond": 50,
        "maxInFlight": 10,
    }
    assert spec["sender"] == {"replicas": 1, "resources": {}}


async def test_bad_metadata_is_refused(cluster):
    body = webhook_body("Not_A_Name")
    status, answer = await cluster.send("POST", api_path(WEBHOOKS), body)
    assert status == 422 and cause_fields(answer) == ["metadata.name"]
    body = webhook_body()
    body["metadata"]["labels"] = {"hookline.io/database": "news letter"}
    status, answer = await cluster.send("POST", api_path(WEBHOOKS), body)
    assert status == 422 and cause_fields(answer) == ["metadata.labels"]


# --- 4. the status subresource ------------------------------------------------------------------------------


async def test_status_is_ignored_on_create_and_on_the_main_resource(cluster):
    body = webhook_body()
    body["status"] = {"observedGeneration": 7}
    stored = await cluster.call("POST", api_path(WEBHOOKS), body)
    assert "status" not in stored and stored["metadata"]["generation"] == 1
    await cluster.call(
        "PATCH", api_path(WEBHOOKS, name="orders", sub="status"), {"status": {"observedGeneration": 1}}
    )
    stored = await cluster.call(
        "PATCH", api_path(WEBHOOKS, name="orders"), {"status": {"observedGeneration": 9}}
    )
    assert stored["status"] == {"observedGeneration": 1}


async def test_only_status_changes_on_the_status_subresource(cluster):
    await create_webhook(cluster, "orders", url=URL, events=["click"])
    patch = {
        "metadata": {"labels": {"x": "y"}, "annotations": {"a": "b"}},
        "spec": {"paused": True},
        "status": {"observedGeneration": 1},
    }
    stored = await cluster.call("PATCH", api_path(WEBHOOKS, name="orders", sub="status"), patch)
    assert stored["spec"]["paused"] is False and stored["status"] == {"observedGeneration": 1}
    assert "labels" not in stored["metadata"] and "annotations" not in stored["metadata"]
    assert stored["metadata"]["generation"] == 1


async def test_generation_follows_spec_changes_only(cluster):
    created = await cluster.call("POST", api_path(WEBHOOKS), webhook_body())
    labelled = await cluster.call(
        "PATCH", api_path(WEBHOOKS, name="orders"), {"metadata": {"labels": {"x": "y"}}}
    )
    assert labelled["metadata"]["generation"] == 1
    assert int(labelled["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    paused = await cluster.call("PATCH", api_path(WEBHOOKS, name="orders"), {"spec": {"paused": True}})
    assert paused["metadata"]["generation"] == 2
    status = {"status": {"observedGeneration": 2}}
    observed = await cluster.call("PATCH", api_path(WEBHOOKS, name="orders", sub="status"), status)
    assert observed["metadata"]["generation"] == 2


async def test_a_write_that_changes_nothing_is_a_no_op(cluster):
    created = await cluster.call("POST", api_path(WEBHOOKS), webhook_body())
    same = await cluster.call("PATCH", api_path(WEBHOOKS, name="orders"), {"spec": {"events": ["click"]}})
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


# --- 5. resourceVersion conflicts ---------------------------------------------------------------------------


async def test_a_stale_resource_version_is_a_409(cluster):
    created = await cluster.call("POST", api_path(WEBHOOKS), webhook_body())
    stale = created["metadata"]["resourceVersion"]
    await cluster.call("PATCH", api_path(WEBHOOKS, name="orders"), {"spec": {"paused": True}})
    replaced = {**created, "spec": {**created["spec"], "events": ["open"]}}
    status, body = await cluster.send("PUT", api_path(WEBHOOKS, name="orders"), replaced)
    assert (status, body["reason"]) == (409, "Conflict")
    assert body["message"] == (
        'Operation cannot be fulfilled on webhooks.hookline.io "orders": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    patch = {"metadata": {"resourceVersion": stale}, "spec": {"paused": False}}
    status, body = await cluster.send("PATCH", api_path(WEBHOOKS, name="orders"), patch)
    assert status == 409
    status, body = await cluster.send(
        "PATCH",
        api_path(WEBHOOKS, name="orders", sub="status"),
        {**patch, "status": {"observedGeneration": 1}},
    )
    assert status == 409
    current = cluster.get(WEBHOOKS, "orders")
    assert current is not None
    fresh = {**current, "spec": {**current["spec"], "events": ["open"]}}
    status, body = await cluster.send("PUT", api_path(WEBHOOKS, name="orders"), fresh)
    assert status == 200 and body["spec"]["events"] == ["open"]


async def test_a_put_of_a_custom_resource_needs_a_resource_version(cluster):
    created = await cluster.call("POST", api_path(WEBHOOKS), webhook_body())
    del created["metadata"]["resourceVersion"]
    status, body = await cluster.send("PUT", api_path(WEBHOOKS, name="orders"), created)
    assert status == 422 and cause_fields(body) == ["metadata.resourceVersion"]


# --- 6. expired watches -------------------------------------------------------------------------------------


async def test_a_watch_from_a_compacted_version_gets_410_gone(cluster):
    created = await cluster.call("POST", api_path(WEBHOOKS), webhook_body())
    old = created["metadata"]["resourceVersion"]
    await cluster.call("PATCH", api_path(WEBHOOKS, name="orders"), {"spec": {"paused": True}})
    # Within the window the watch replays what happened since `old`.
    lines = await watch_lines(
        cluster, api_path(WEBHOOKS), watch="true", resourceVersion=old, timeoutSeconds="1"
    )
    assert [(e["type"], e["object"]["spec"]["paused"]) for e in lines] == [("MODIFIED", True)]
    cluster.compact()
    lines = await watch_lines(
        cluster, api_path(WEBHOOKS), watch="true", resourceVersion=old, timeoutSeconds="5"
    )
    assert len(lines) == 1 and lines[0]["type"] == "ERROR"
    error = lines[0]["object"]
    assert (error["kind"], error["code"], error["reason"]) == ("Status", 410, "Expired")
    assert error["message"].startswith(f"too old resource version: {old} (")
    assert cluster.expired == 1


@pytest.mark.parametrize("watch_window", [2])
async def test_the_watch_window_expires_old_versions_by_itself(cluster, watch_window):
    created = await cluster.call("POST", api_path(WEBHOOKS), webhook_body())
    for paused in (True, False, True):
        await cluster.call("PATCH", api_path(WEBHOOKS, name="orders"), {"spec": {"paused": paused}})
    params = {
        "watch": "true",
        "resourceVersion": created["metadata"]["resourceVersion"],
        "timeoutSeconds": "5",
    }
    lines = await watch_lines(cluster, api_path(WEBHOOKS), **params)
    assert [e["object"]["code"] for e in lines] == [410]


def verification_of(cluster: StrictCluster, name: str) -> dict[str, Any]:
    return ((cluster.get(WEBHOOKS, name) or {}).get("status") or {}).get("verification") or {}


async def verified_token(cluster, site, name: str) -> str:
    await create_webhook(cluster, name, url=site.url(f"/hooks/{name}.php"), events=["click"])
    token = await wait_for(lambda: verification_of(cluster, name).get("content"), "a token in status")
    site.files[f"/hooks/hookline-{token}.txt"] = token
    await wait_for(
        lambda: condition(cluster.get(WEBHOOKS, name), "Verified").get("status") == "True", "Verified"
    )
    return str(token)


async def test_kopf_relists_after_410_gone_and_keeps_working(cluster, site, start_operator):
    await start_operator()
    await verified_token(cluster, site, "orders")
    deployment = await wait_for(lambda: cluster.get(DEPLOYMENTS, "orders-sender"), "the sender Deployment")
    assert deployment["spec"]["replicas"] == 1
    user = chart_identity().user
    lists_before = cluster.served[user, "list", "webhooks"]
    # etcd compacted, then the watch connections dropped: Kopf resumes from its resourceVersion,
    # gets 410 Gone, and must list again to see anything that happens afterwards.
    cluster.compact()
    cluster.close_watches()
    await wait_for(lambda: cluster.expired >= 1, "a watch answered 410 Gone")
    await wait_for(
        lambda: cluster.served[user, "list", "webhooks"] > lists_before, "the operator listing again"
    )
    await cluster.call("PATCH", api_path(WEBHOOKS, name="orders"), {"spec": {"paused": True}})
    await wait_for(
        lambda: (cluster.get(DEPLOYMENTS, "orders-sender") or {}).get("spec", {}).get("replicas") == 0,
        "the paused Webhook's sender scaled to 0 after the relist",
    )


# --- 7. RBAC ------------------------------------------------------------------------------------------------


def test_the_operator_identity_is_the_charts_service_account():
    identity = chart_identity()
    assert identity.user == "system:serviceaccount:hookline:hookline-operator"
    assert identity.allows("patch", "hookline.io", "webhooks/status", "x", NS)
    assert not identity.allows("create", "hookline.io", "webhooks", None, NS)
    # Bindings decide scope: a Role bound in one namespace does not reach another.
    account = {"kind": "ServiceAccount", "name": "op", "namespace": "a"}
    docs = [
        {
            "kind": "ServiceAccount",
            "metadata": {
                "name": "op",
                "namespace": "a",
                "labels": {"app.kubernetes.io/component": "operator"},
            },
        },
        {
            "kind": "Role",
            "metadata": {"name": "r", "namespace": "a"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
        {
            "kind": "RoleBinding",
            "metadata": {"name": "b", "namespace": "a"},
            "roleRef": {"kind": "Role", "name": "r"},
            "subjects": [account],
        },
    ]
    scoped = identity_of(docs)
    assert scoped.allows("get", "", "configmaps", "x", "a")
    assert not scoped.allows("get", "", "configmaps", "x", "b")
    assert any(d["kind"] == "ClusterRole" for d in render_chart())


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        (
            "DELETE",
            api_path(WEBHOOKS, name="orders"),
            None,
            'webhooks.hookline.io "orders" is forbidden: '
            'User "system:serviceaccount:hookline:hookline-operator" cannot delete resource "webhooks" '
            'in API group "hookline.io" in the namespace "shop"',
        ),
        (
            # Secrets: get/list/watch/create/update (credentials, the Secret watch), never delete.
            "DELETE",
            api_path(SECRETS, name="hook-secret"),
            None,
            'secrets "hook-secret" is forbidden: User "system:serviceaccount:hookline:hookline-operator" '
            'cannot delete resource "secrets" in API group "" in the namespace "shop"',
        ),
        (
            "PATCH",
            api_path(DEPLOYMENTS, name="orders-sender", sub="status"),
            {"status": {"replicas": 1}},
            'deployments.apps "orders-sender" is forbidden: '
            'User "system:serviceaccount:hookline:hookline-operator" cannot patch resource '
            '"deployments/status" in API group "apps" in the namespace "shop"',
        ),
        (
            "POST",
            api_path(WEBHOOKS),
            webhook_body(),
            'webhooks.hookline.io is forbidden: User "system:serviceaccount:hookline:hookline-operator" '
            'cannot create resource "webhooks" in API group "hookline.io" in the namespace "shop"',
        ),
    ],
)
async def test_what_the_chart_does_not_allow_is_403_forbidden(cluster, method, path, body, message):
    await create_webhook(cluster, "orders", url=URL, events=["click"])
    status, answer = await cluster.send(method, path, body, token=OPERATOR_TOKEN)
    assert (status, answer["reason"], answer["message"]) == (403, "Forbidden", message)
    assert cluster.get(WEBHOOKS, "orders") is not None
    cluster.refusals.clear()


async def test_what_the_chart_allows_passes(cluster):
    await create_webhook(cluster, "orders", url=URL, events=["click"])
    status, _ = await cluster.send(
        "PATCH",
        api_path(WEBHOOKS, name="orders", sub="status"),
        {"status": {"observedGeneration": 1}},
        token=OPERATOR_TOKEN,
    )
    assert status == 200
    status, _ = await cluster.send("GET", api_path(SECRETS, name="hook-secret"), token=OPERATOR_TOKEN)
    assert status == 404  # allowed to get, and there is none
    status, _ = await cluster.send("GET", "/apis/hookline.io/v1alpha1/webhooks", token=OPERATOR_TOKEN)
    assert status == 200  # cluster-wide: the chart binds a ClusterRole


async def test_requests_without_a_known_token_are_401(cluster):
    status, body = await cluster.send("GET", api_path(WEBHOOKS), token=None)
    assert (status, body["reason"]) == (401, "Unauthorized")
    status, body = await cluster.send("GET", api_path(WEBHOOKS), token="guessed")
    assert status == 401


async def test_a_permission_the_chart_lacked_would_fail_the_flow(cluster, site, start_operator):
    """The operator runs as the chart's ServiceAccount: take one rule away and the flow stops with
    a 403 that operator_faults() (which fails every flow test at teardown) reports."""
    chart = chart_identity()
    without = tuple(
        Rule(r.api_groups, r.resources - {"configmaps"}, r.verbs, r.resource_names, r.namespace)
        for r in chart.rules or ()
    )
    cluster.identities[OPERATOR_TOKEN] = Identity(chart.user, without)
    running = await start_operator()
    await create_webhook(cluster, "orders", url=site.url("/hooks/orders.php"), events=["click"])
    token = await wait_for(lambda: verification_of(cluster, "orders").get("content"), "a token in status")
    site.files[f"/hooks/hookline-{token}.txt"] = token
    await wait_for(
        lambda: any(r.code == 403 and "configmaps" in r.message for r in cluster.refusals),
        "the operator refused its ConfigMap",
    )
    assert (
        cluster.get(CONFIGMAPS, "orders-sender") is None and cluster.get(DEPLOYMENTS, "orders-sender") is None
    )
    assert any("403" in fault and "configmaps" in fault for fault in cluster.operator_faults())
    await running.stop()  # it keeps retrying; refused on purpose, so not a fault for the teardown
    cluster.refusals.clear()


async def test_the_flow_operator_authenticates_as_the_service_account(cluster, site, start_operator):
    await start_operator()
    await verified_token(cluster, site, "orders")
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "orders-sender"), "the sender Deployment")
    users = {user for user, _, _ in cluster.served}
    assert users == {"kubernetes-admin", chart_identity().user}
    operator_verbs = {(verb, res) for user, verb, res in cluster.served if user == chart_identity().user}
    assert {("watch", "webhooks"), ("patch", "webhooks/status"), ("create", "deployments")} <= operator_verbs


# --- the rest of the API server's object handling -----------------------------------------------------------


async def test_finalizers_hold_a_deletion_and_cannot_be_added_during_it(cluster):
    body = webhook_body()
    body["metadata"]["finalizers"] = ["hookline.io/sender"]
    await cluster.call("POST", api_path(WEBHOOKS), body)
    deleting = await cluster.call("DELETE", api_path(WEBHOOKS, name="orders"))
    assert deleting["metadata"]["deletionTimestamp"]
    patch = {"metadata": {"finalizers": ["hookline.io/sender", "other"]}}
    status, answer = await cluster.send("PATCH", api_path(WEBHOOKS, name="orders"), patch)
    assert status == 422 and cause_fields(answer) == ["metadata.finalizers"]
    await cluster.call("PATCH", api_path(WEBHOOKS, name="orders"), {"metadata": {"finalizers": None}})
    assert cluster.get(WEBHOOKS, "orders") is None


async def test_create_conflicts_and_unsupported_patches(cluster):
    await cluster.call("POST", api_path(WEBHOOKS), webhook_body())
    status, body = await cluster.send("POST", api_path(WEBHOOKS), webhook_body())
    assert (status, body["reason"], body["message"]) == (
        409,
        "AlreadyExists",
        'webhooks.hookline.io "orders" already exists',
    )
    status, body = await cluster.send(
        "PATCH", api_path(WEBHOOKS, name="orders"), {"spec": {}}, content_type=STRATEGIC
    )
    assert (status, body["reason"]) == (
        415,
        "UnsupportedMediaType",
    )  # custom resources have no strategic merge
    wrong = webhook_body("other")
    wrong["metadata"]["namespace"] = "elsewhere"
    status, body = await cluster.send("POST", api_path(WEBHOOKS), wrong)
    assert status == 400
    status, body = await cluster.send("GET", "/apis/hookline.io/v1alpha1/namespaces/shop/nothings")
    assert status == 404
