"""The chart's objects, as `helm template` renders them, are accepted by a real API server.

Applied with server-side apply (what `helm upgrade` and GitOps tools converge on): every object is
validated by the real server's schemas, defaulting and admission, and applying the same manifests a
second time changes nothing (no resourceVersion moves), so a GitOps tool never sees a perpetual diff.
Monitoring objects that need the Prometheus Operator's CRDs are not rendered (monitoring.checkAPI and no
--api-versions; without checkAPI this server, which lacks those CRDs, would refuse them by kind); the
dashboard ConfigMap is.
"""

from __future__ import annotations

import pytest
import yaml
from realapi_helpers import apply_server_side, kubectl
from strict_api import render_chart

POOLS_AND_MONITORING = {
    # A second release next to the first: the CRDs are the first one's (values.yaml says so).
    "crds": {"install": False},
    "tenancy": {"installRoles": False},  # hookline-edit/-view are cluster-wide names, like the CRDs
    "operator": {"defaultSenderMode": "Pool", "defaultSenderPool": "bulk"},
    "senderPools": [
        {"name": "bulk", "replicas": 3, "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}}},
        {"name": "quiet", "replicas": 0, "nodeSelector": {"kubernetes.io/os": "linux"}},
    ],
    "monitoring": {"enabled": True, "checkAPI": True, "dashboard": {"enabled": True}},
    "ingest": {"ingress": {"enabled": True, "className": "nginx", "tls": []}},
    "nats": {"persistence": {"enabled": False}},
}


def identity(obj):
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


@pytest.mark.parametrize(
    ("release", "values"), [("shipped", None), ("pooled", POOLS_AND_MONITORING)], ids=["defaults", "pools"]
)
def test_chart_is_accepted_by_server_side_apply_and_a_second_apply_is_a_no_op(
    real_cluster, tmp_path, release, values
):
    # The tenancy admission policy, once bound, judges every Webhook of the cluster (the session's other
    # tests make theirs without WebhookPolicies), and deleting a binding afterwards left kube-apiserver
    # 1.36 without its ConfigMap params for later ones: test_tenancy_realapi.py applies it instead.
    flags = ["--set", "tenancy.admission=false"]
    if values is not None:
        (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
        flags += ["-f", str(tmp_path / "values.yaml")]
    docs = render_chart(*flags, release=release, namespace=release)
    config = real_cluster.kubeconfig
    kubectl(config, "create", "namespace", release)

    first = apply_server_side(config, docs, namespace=release, field_manager=f"chart-{release}")
    assert sorted(map(identity, first)) == sorted(
        (d["kind"], d["metadata"].get("namespace", release if _namespaced(d) else ""), d["metadata"]["name"])
        for d in docs
    )
    second = apply_server_side(config, docs, namespace=release, field_manager=f"chart-{release}")
    before = {identity(o): applied(o, f"chart-{release}") for o in first}
    changed = [identity(o) for o in second if applied(o, f"chart-{release}") != before[identity(o)]]
    assert changed == [], f"a second apply of the same manifests changed {changed}"


def applied(obj, manager):
    """What an apply can change: everything but status and the server's bookkeeping, and the time the
    manager last changed the object. (Controllers write status meanwhile, which moves resourceVersion.)"""
    meta = {k: v for k, v in obj["metadata"].items() if k not in ("resourceVersion", "managedFields")}
    mine = [
        e for e in obj["metadata"]["managedFields"] if e["manager"] == manager and e["operation"] == "Apply"
    ]
    rest = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    return meta, mine, rest


CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"}


def _namespaced(doc) -> bool:
    return doc["kind"] not in CLUSTER_SCOPED
