"""The attacker's side: what a stolen operator token can NOT do on a real cluster.

The token is a TokenRequest token of the chart's operator ServiceAccount, checked by the real RBAC
authorizer against the chart's ClusterRole. Each attempt below is something the operator never
needs; the API server must answer 403 Forbidden naming the ServiceAccount. A first request proves
the token itself works, so a 403 is RBAC speaking, not a bad token (that would be 401).
"""

from __future__ import annotations

import pytest
from operator_helpers import SECRETS, WEBHOOKS, api_path

# (what, method, path, body, the verb and resource kube-apiserver names in its refusal)
ATTEMPTS = [
    ("delete a namespace", "DELETE", "/api/v1/namespaces/{namespace}", None, "delete", '"namespaces"'),
    # Secrets may be read, listed and watched (a changed Secret a Webhook names reaches its sender),
    # created (signing.generate, senders' NATS users) and updated (NATS users); never deleted or patched.
    (
        "delete a Secret",
        "DELETE",
        "/api/v1/namespaces/{namespace}/secrets/anything",
        None,
        "delete",
        '"secrets"',
    ),
    (
        "patch a Secret",
        "PATCH",
        "/api/v1/namespaces/{namespace}/secrets/anything",
        {"stringData": {"k": "v"}},
        "patch",
        '"secrets"',
    ),
    (
        "run a Pod",
        "POST",
        "/api/v1/namespaces/{namespace}/pods",
        {"metadata": {"name": "miner"}, "spec": {"containers": [{"name": "m", "image": "evil"}]}},
        "create",
        '"pods"',
    ),
    (
        "bind itself to cluster-admin",
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "metadata": {"name": "takeover"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "x", "namespace": "default"}],
        },
        "create",
        '"clusterrolebindings"',
    ),
    (
        "delete a Webhook",
        "DELETE",
        "/apis/hookline.io/v1alpha1/namespaces/{namespace}/webhooks/x",
        None,
        "delete",
        '"webhooks"',
    ),
]


@pytest.mark.parametrize(
    ("what", "method", "path", "body", "verb", "resource"), ATTEMPTS, ids=[a[0] for a in ATTEMPTS]
)
async def test_operator_token_is_refused(
    real_cluster, admin, namespace, what, method, path, body, verb, resource
):
    async with real_cluster.as_operator() as operator:
        status, listed = await operator.request("GET", api_path(WEBHOOKS, namespace))
        assert status == 200, listed  # the token is good: what follows is RBAC
        status, answer = await operator.request(method, path.format(namespace=namespace), body)
    assert status == 403, f"the operator's token could {what}: {status} {answer}"
    assert answer["reason"] == "Forbidden"
    expected = f'User "{real_cluster.operator_user}" cannot {verb} resource {resource}'
    assert expected in answer["message"], answer["message"]
    if method == "DELETE" and "namespaces/" in path and "webhooks" not in path:
        assert (await admin.call("GET", f"/api/v1/namespaces/{namespace}"))["status"]["phase"] == "Active"


async def test_operator_token_may_read_and_watch_secrets_for_the_webhooks_credentials(
    real_cluster, admin, namespace
):
    """Secrets: get (key ids, WebhookTests, pool entries) and list/watch (the Secret watch that brings a
    changed key to its sender within seconds): the cost the README names under "still broad"."""
    secret = {"metadata": {"name": "hook-secret"}, "stringData": {"secret": "s"}}
    await admin.call("POST", api_path(SECRETS, namespace), secret)
    async with real_cluster.as_operator() as operator:
        status, _ = await operator.request("GET", api_path(SECRETS, namespace, "hook-secret"))
        assert status == 200
        status, answer = await operator.request("GET", api_path(SECRETS, namespace))
    assert status == 200 and any(i["metadata"]["name"] == "hook-secret" for i in answer["items"]), answer
