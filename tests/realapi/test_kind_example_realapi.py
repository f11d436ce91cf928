"""examples/kind/ against a real API server, as docs/install.md's kind walkthrough applies it: the chart
rendered with examples/kind/values.yaml, then the namespace shop, the demo receiver (Secret,
Deployment, Service) and its Webhook, all with server-side apply. (No kubelet here: the objects are
admitted and stored, not run; a second apply changes nothing.)"""

from __future__ import annotations

import yaml
from realapi_helpers import apply_server_side
from strict_api import render_chart

from hookline.manifests import EXAMPLES

KIND = EXAMPLES / "kind"
MANAGER = "kind-walkthrough"


def load(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((KIND / name).read_text()) if d]


def test_the_kind_example_is_accepted_as_the_walkthrough_applies_it(real_cluster):
    config = real_cluster.kubeconfig
    # The CRDs are the session's (crds/); the walkthrough's helm install ships the same ones.
    # No operator runs here to compile the grants the admission policy reads (test_tenancy_realapi.py
    # runs one): without it the policy would refuse every Webhook, so it is left out, and so are the
    # tenant ClusterRoles (test_chart_apply.py's release applies them under the same names).
    chart = render_chart(
        "-f",
        str(KIND / "values.yaml"),
        "--set",
        "crds.install=false",
        "--set",
        "tenancy.admission=false",
        "--set",
        "tenancy.installRoles=false",  # cluster-wide names another release of the session owns
        release="kind",
        namespace="kind",
    )
    namespaces = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in ("kind", "shop")
    ]
    apply_server_side(config, namespaces, field_manager=MANAGER)
    apply_server_side(config, chart, namespace="kind", field_manager=MANAGER)

    example = load("receiver.yaml") + load("policy.yaml") + load("webhook.yaml")
    stored = {
        (o["kind"], o["metadata"]["name"]): o
        for o in apply_server_side(config, example, field_manager=MANAGER)
    }
    assert set(stored) == {
        ("Secret", "demo-signing"),
        ("Deployment", "demo-receiver"),
        ("Service", "demo-receiver"),
        ("Webhook", "shop-demo"),
        ("WebhookPolicy", "shop"),
    }
    assert {o["metadata"].get("namespace") for o in stored.values()} == {"shop", None}  # the grant: cluster
    webhook = stored[("Webhook", "shop-demo")]
    assert webhook["spec"]["url"] == "http://demo-receiver.shop.svc.cluster.local/hooks/shop.php"
    assert stored[("Service", "demo-receiver")]["spec"]["clusterIP"]  # allocated from the service network

    again = apply_server_side(config, example, field_manager=MANAGER)
    moved = [
        (o["kind"], o["metadata"]["name"])
        for o in again
        if o["metadata"]["resourceVersion"]
        != stored[(o["kind"], o["metadata"]["name"])]["metadata"]["resourceVersion"]
        and o["kind"]
        != "Webhook"  # an operator would write its status; none runs here, but do not rely on it
    ]
    assert moved == []
