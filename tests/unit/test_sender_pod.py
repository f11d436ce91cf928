"""The installation's sender pod settings (chart values sender.*) in the desired Deployment. Pure."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from hookline.api import parse_webhook_spec
from hookline.operator.rules import desired
from hookline.operator.rules.senderpod import SenderPodTemplate, parse_pod_template
from hookline.operator.settings import OperatorConfig, config_from_env

OWNER = {
    "apiVersion": "hookline.io/v1alpha1",
    "kind": "Webhook",
    "metadata": {"name": "orders", "namespace": "shop", "uid": "u-1"},
}
TEMPLATE = {
    "imagePullPolicy": "Always",
    "imagePullSecrets": [{"name": "regcred"}],
    "nodeSelector": {"pool": "senders"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "senders", "effect": "NoSchedule"}],
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
    "priorityClassName": "webhooks",
    "podLabels": {"team": "crm"},
    "podAnnotations": {"sidecar.istio.io/inject": "false"},
    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
}


def spec(**fields):
    return parse_webhook_spec({"url": "https://shop.example.com/hook", "events": ["open"], **fields})


def build(template: dict, **fields) -> dict:
    config = OperatorConfig(sender_pod=parse_pod_template(json.dumps(template)))
    return desired.deployment(OWNER, spec(**fields), "h", config)


def test_the_desired_deployment_holds_every_sender_pod_setting():
    deployment = build(TEMPLATE)
    pod = deployment["spec"]["template"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["nodeSelector"] == {"pool": "senders"}
    assert pod["spec"]["tolerations"] == TEMPLATE["tolerations"]
    assert pod["spec"]["affinity"] == TEMPLATE["affinity"]
    assert pod["spec"]["priorityClassName"] == "webhooks"
    assert pod["metadata"]["labels"]["team"] == "crm"
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert pod["metadata"]["annotations"][desired.CONFIG_HASH_ANNOTATION] == "h"
    (container,) = pod["spec"]["containers"]
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == TEMPLATE["resources"]
    # Every field the operator writes is one Kubernetes declares (strict: unknown fields fail).
    kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_the_webhook_wins_over_the_default_resources_key_by_key():
    deployment = build(TEMPLATE, sender={"resources": {"limits": {"memory": "1Gi", "cpu": "1"}}})
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"memory": "1Gi", "cpu": "1"},
    }


def test_the_operators_labels_stay_its_own():
    with pytest.raises(ValueError, match=r"app\.kubernetes\.io/name: labels under"):
        parse_pod_template(json.dumps({"podLabels": {"app.kubernetes.io/name": "other"}}))
    with pytest.raises(ValueError, match=r"HOOKLINE_SENDER_POD_TEMPLATE.*nodeSelectors"):
        parse_pod_template(json.dumps({"nodeSelectors": {"a": "b"}}))
    with pytest.raises(ValueError, match="imagePullPolicy"):
        config_from_env({"HOOKLINE_SENDER_POD_TEMPLATE": '{"imagePullPolicy": "always"}'})


def test_without_a_template_the_deployment_is_what_it_was():
    """An operator upgrade must not roll every sender of an installation that sets nothing."""
    plain = desired.deployment(OWNER, spec(), "h", OperatorConfig())
    assert plain == build({})
    assert plain == build({"imagePullPolicy": "IfNotPresent"})
    pod = plain["spec"]["template"]["spec"]
    assert not {"imagePullSecrets", "nodeSelector", "tolerations", "affinity", "priorityClassName"} & set(pod)
    assert "env" not in pod["containers"][0]
    assert SenderPodTemplate() == parse_pod_template("")


def test_a_changed_template_changes_the_desired_hash():
    before = build({})
    after = build({"priorityClassName": "webhooks"})
    annotation = desired.DESIRED_HASH_ANNOTATION
    assert before["metadata"]["annotations"][annotation] != after["metadata"]["annotations"][annotation]


def test_json_logs_reach_the_sender_container():
    deployment = desired.deployment(OWNER, spec(), "h", OperatorConfig(log_format="json"))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["env"] == [{"name": "HOOKLINE_LOG_FORMAT", "value": "json"}]
