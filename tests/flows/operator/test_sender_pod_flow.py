"""The installation's sender pod settings (chart values sender.*, HOOKLINE_SENDER_POD_TEMPLATE) on the
Deployments the operator creates, through the real operator and the strict API emulator."""

from __future__ import annotations

import json

import kubernetes_validate
from operator_helpers import DEPLOYMENTS, condition, create_webhook, wait_for

from hookline.operator.settings import config_from_env

POD_TEMPLATE = {
    "imagePullPolicy": "Always",
    "imagePullSecrets": [{"name": "regcred"}],
    "nodeSelector": {"pool": "senders"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "senders", "effect": "NoSchedule"}],
    "priorityClassName": "webhooks",
    "podLabels": {"team": "crm"},
    "podAnnotations": {"sidecar.istio.io/inject": "false"},
    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
}


async def test_the_operator_creates_sender_pods_with_the_installations_settings(
    cluster, site, start_operator
):
    # As the chart hands it over: JSON in the operator's environment.
    from_env = config_from_env({"HOOKLINE_SENDER_POD_TEMPLATE": json.dumps(POD_TEMPLATE)})
    await start_operator(sender_pod=from_env.sender_pod, log_format="json")
    await create_webhook(cluster, "tenant", url=site.url("/hooks/tenant.php"), events=["open"])
    status = await wait_for(
        lambda: ((cluster.get("hookline.io/v1alpha1/webhooks", "tenant") or {}).get("status") or {}).get(
            "verification"
        ),
        "a token in status",
    )
    site.files[f"/hooks/{status['fileName']}"] = status["content"]
    deployment = await wait_for(
        lambda: (
            condition(cluster.get("hookline.io/v1alpha1/webhooks", "tenant"), "Verified").get("status")
            == "True"
            and cluster.get(DEPLOYMENTS, "tenant-sender")
        ),
        "Verified and the sender Deployment",
    )

    pod = deployment["spec"]["template"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["nodeSelector"] == {"pool": "senders"}
    assert pod["spec"]["tolerations"] == POD_TEMPLATE["tolerations"]
    assert pod["spec"]["priorityClassName"] == "webhooks"
    assert pod["metadata"]["labels"]["team"] == "crm"
    assert pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "hookline-operator"
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    (sender,) = pod["spec"]["containers"]
    assert sender["imagePullPolicy"] == "Always"
    assert sender["resources"] == POD_TEMPLATE["resources"]
    assert sender["env"] == [{"name": "HOOKLINE_LOG_FORMAT", "value": "json"}]
    # What the emulator stored is a Deployment kube-apiserver accepts field for field.
    stored = {k: v for k, v in deployment.items() if k != "status"}
    kubernetes_validate.validate(stored, kubernetes_validate.latest_version(), strict=True)
