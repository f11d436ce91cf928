"""examples/kind/: the chart values, the in-cluster demo receiver and its Webhook that docs/install.md's
kind walkthrough applies. The chart renders with the values; every object of the receiver is valid
Kubernetes (kubernetes-validate, strict); the pieces fit: the receiver runs the chart's image, the
Webhook's URL is the receiver's Service, and the chart lets the operator and the senders reach it
(kind's service network allowed, plain http allowed). The real API server takes them in
tests/realapi/test_kind_example_realapi.py; the receiver's own behaviour is
tests/integration/test_demo_receiver.py.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from strict_api import render_chart

from hookline.api import parse_webhook_spec
from hookline.manifests import EXAMPLES

KIND = EXAMPLES / "kind"
KIND_SERVICE_NETWORK = ipaddress.ip_network("10.96.0.0/16")  # kind's default serviceSubnet


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((KIND / name).read_text()) if d]


def by_kind(items: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [found] = [d for d in items if d["kind"] == kind]
    return found


def rendered() -> list[dict[str, Any]]:
    return render_chart("-f", str(KIND / "values.yaml"), release="hookline", namespace="hookline")


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_the_chart_renders_with_the_kind_values_and_runs_the_loaded_image():
    chart = rendered()
    deployments = {d["metadata"]["name"]: d for d in chart if d["kind"] == "Deployment"}
    values = yaml.safe_load((KIND / "values.yaml").read_text())
    image = f"{values['image']['repository']}:{values['image']['tag']}"
    for name in ("hookline-operator", "hookline-ingest"):
        [container] = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["image"] == image
        assert container["imagePullPolicy"] == "IfNotPresent"  # kind load puts it on the node
    assert deployments["hookline-ingest"]["spec"]["replicas"] == 1
    operator_env = env_of(deployments["hookline-operator"])  # it hands the same to the senders
    assert KIND_SERVICE_NETWORK in [
        ipaddress.ip_network(n) for n in operator_env["HOOKLINE_ALLOW_NETWORKS"].split(",")
    ]
    assert operator_env["HOOKLINE_ALLOW_HTTP"] == "1"
    [receiver] = by_kind(docs("receiver.yaml"), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert receiver["image"] == image


def test_the_webhook_points_at_the_receiver_service_and_signs_with_its_secret():
    receiver = docs("receiver.yaml")
    service, secret = by_kind(receiver, "Service"), by_kind(receiver, "Secret")
    webhook = by_kind(docs("webhook.yaml"), "Webhook")
    spec = parse_webhook_spec(webhook["spec"])
    url = urlsplit(spec.url)
    namespace = webhook["metadata"]["namespace"]
    assert url.scheme == "http"
    assert url.hostname == f"{service['metadata']['name']}.{namespace}.svc.cluster.local"
    assert (url.port or 80) == service["spec"]["ports"][0]["port"]
    assert {d["metadata"]["namespace"] for d in receiver} == {namespace}
    assert spec.signing is not None
    assert (spec.signing.secret_ref.name, spec.signing.secret_ref.key) == (
        secret["metadata"]["name"],
        "secret",
    )
    deployment = by_kind(receiver, "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "demo-receiver"
    assert "--secret-file=/secret/secret" in container["args"]
    assert "--files=/files" in container["args"]


@pytest.mark.parametrize("version", ["1.28.0", kubernetes_validate.latest_version()])
def test_every_receiver_object_is_valid_kubernetes(version):
    for doc in docs("receiver.yaml"):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} invalid for Kubernetes {version}: {error}")
