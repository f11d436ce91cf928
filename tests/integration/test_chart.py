"""The Helm chart, rendered by the real helm binary and checked against the Kubernetes schemas.

Each scenario switches one option; every scenario must produce valid, hardened, least-privilege objects
whose Services, monitors and Ingress actually point at the pods and ports that exist.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import subprocess
import time
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from hookline.api import POOL_NAME_PATTERN, SenderMode, parse_webhook_spec
from hookline.cli import build_parser
from hookline.operator.adapters.natsauth import auth_secret_data
from hookline.operator.loops.poolsync import POOL_LABEL, POOL_SELECTOR
from hookline.operator.rules import desired
from hookline.operator.settings import config_from_env
from hookline.sender.bus.natsaccounts import AuthKeys
from hookline.sender.bus.natsserver import find_nats_server, free_port
from hookline.sender.bus.poolproto import MIN_POOL_KEY_CHARS, PoolKey, replica_from_hostname
from hookline.sender.cmd.pool import DEFAULT_MAX_IN_FLIGHT_PER_ORIGIN

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "bin" / "helm"
CHART = ROOT / "charts" / "hookline"
RELEASE, NAMESPACE = "hk", "hookline"
MONITORING_API = ["--api-versions", "monitoring.coreos.com/v1"]
EXTERNAL_NATS = "nats://nats.messaging.svc:4222"
EMBEDDED_NATS = f"nats://hk-hookline-nats.{NAMESPACE}.svc.cluster.local:4222"
DIGEST = "sha256:" + "ab" * 32
# Oldest supported (Chart.yaml kubeVersion; the CRDs use CEL rules with reason and fieldPath, new in
# 1.28) and the newest schemas kubernetes-validate knows.
KUBE_VERSIONS = ["1.28.0", kubernetes_validate.latest_version()]

# Everything a cluster may need on every dedicated sender pod (chart values sender.*).
SENDER_VALUES: dict[str, Any] = {
    "imagePullPolicy": "Always",
    "imagePullSecrets": [{"name": "regcred"}],
    "nodeSelector": {"pool": "senders"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "senders", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["eu-1a"]}]}
                ]
            }
        }
    },
    "priorityClassName": "webhooks",
    "podLabels": {"team": "crm"},
    "podAnnotations": {"sidecar.istio.io/inject": "false"},
    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
}

SCENARIOS: dict[str, list[str]] = {
    "defaults": [],
    "external-nats": ["--set", f"nats.url={EXTERNAL_NATS}", "--set", "nats.auth.existingSecret=nats-creds"],
    "stream-limit": ["--set", "nats.streamMaxBytes=1073741824"],
    "nats-cluster": [
        "--set",
        f"nats.url={EXTERNAL_NATS}",
        "--set",
        "nats.auth.existingSecret=nats-creds",
        "--set",
        "nats.replicas=3",
        "--set",
        "nats.streamMaxConsumers=50000",
    ],
    "ingress": [
        "--set",
        "ingest.ingress.enabled=true",
        "--set",
        "ingest.ingress.className=nginx",
        "--set-json",
        'ingest.ingress.tls=[{"secretName":"hookline-tls","hosts":["hookline.example.com"]}]',
    ],
    "monitoring": [
        "--set",
        "monitoring.enabled=true",
        "--set",
        "monitoring.dashboard.enabled=true",
        # helm --set passes decimals as strings; the schema must take them.
        "--set",
        "monitoring.prometheusRule.failureRatio=0.2",
        *MONITORING_API,
    ],
    "monitoring-without-api": ["--set", "monitoring.enabled=true"],
    "monitoring-checked-without-api": [
        "--set",
        "monitoring.enabled=true",
        "--set",
        "monitoring.checkAPI=true",
    ],
    "alerts-tuned": [
        "--set",
        "monitoring.enabled=true",
        "--set",
        "monitoring.alerts.HooklineWebhookUnverified.enabled=false",
        "--set",
        "monitoring.alerts.HooklineDeadLetters.severity=critical",
        "--set-json",
        'monitoring.serviceMonitors.relabelings=[{"targetLabel":"cluster","replacement":"eu-1"}]',
        "--set-json",
        'monitoring.serviceMonitors.metricRelabelings=[{"sourceLabels":["__name__"],"regex":"go_.*",'
        '"action":"drop"}]',
        "--set-json",
        'monitoring.podMonitor.relabelings=[{"targetLabel":"cluster","replacement":"eu-1"}]',
        "--set-json",
        'monitoring.podMonitor.metricRelabelings=[{"sourceLabels":["__name__"],"regex":"go_.*",'
        '"action":"drop"}]',
    ],
    "sender-pod": [
        "--set-json",
        f"sender={json.dumps(SENDER_VALUES)}",
        "--set",
        "logFormat=json",
    ],
    "single-operator": [
        "--set",
        "operator.replicas=1",
        "--set",
        "operator.leaderElection.enabled=false",
    ],
    "crds-off": ["--set", "crds.install=false"],
    "existing-token": ["--set", "ingest.auth.existingSecret=producer-token"],
    "auth-off": ["--set", "ingest.auth.enabled=false"],
    "watch-namespaces": ["--set-json", 'operator.watchNamespaces=["shop","crm"]'],
    "ingest-producers-tls": [
        "--set",
        "ingest.auth.tokensSecret=producer-tokens",
        "--set",
        "ingest.auth.singleToken=false",
        "--set",
        "ingest.tls.secretName=ingest-tls",
        *MONITORING_API,
        "--set",
        "monitoring.enabled=true",
    ],
    "no-persistence": [
        "--set",
        "nats.persistence.enabled=false",
        "--set",
        "nats.networkPolicy.enabled=false",
    ],
    "egress": [
        "--set",
        "egress.allowHttp=true",
        "--set-json",
        'egress.allowNetworks=["10.0.0.0/8","fd00::/8"]',
    ],
    "single-ingest": ["--set", "ingest.replicas=1"],
    "images": [
        "--set",
        f"image.digest={DIGEST}",
        "--set",
        "operator.senderImage=registry.example.com/hookline-sender:custom",
    ],
    "no-service-accounts": [
        "--set",
        "operator.serviceAccount.create=false",
        "--set",
        "operator.serviceAccount.name=preexisting-operator",
        "--set",
        "ingest.serviceAccount.create=false",
    ],
    "two-pools": [
        "--set-json",
        'senderPools=[{"name":"default","replicas":3},'
        '{"name":"bulk","replicas":0,"extraArgs":["--allow-network","192.168.0.0/16"],"nodeSelector":{"pool":"bulk"},'
        '"maxInFlightPerOrigin":16,'
        '"podAnnotations":{"team":"mail"},"resources":{"requests":{"cpu":"1","memory":"1Gi"},'
        '"limits":{"memory":"2Gi"}}}]',
        "--set",
        "operator.defaultSenderMode=Pool",
        "--set",
        "operator.defaultSenderPool=bulk",
        "--set",
        "egress.allowHttp=true",
        "--set-json",
        'egress.allowNetworks=["10.0.0.0/8","fd00::/8"]',
        "--set",
        "monitoring.enabled=true",
        *MONITORING_API,
    ],
    "existing-pool-key": [
        "--set",
        "poolKey.existingSecret=hookline-pool-key-from-vault",
        "--set",
        "poolKey.secretKey=pool.key",
    ],
    "no-pools": ["--set-json", "senderPools=[]", "--set", "monitoring.enabled=true", *MONITORING_API],
    "nats-volume": ["--set", "nats.persistence.size=50Gi"],
    "small-nats-volume": [
        "--set",
        "nats.persistence.size=1.5Gi",
        "--set",
        "nats.streamMaxBytes=1073741824",
        "--set",
        "attempts.maxBytes=104857600",
        "--set",
        "nats.recoveryMaxBytes=209715200",
    ],
}


def _strict(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required or [],
        "additionalProperties": False,
    }


_STRING = {"type": "string", "minLength": 1}
_DURATION = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$"}
_LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = _strict(
    {"name": _STRING, "namespace": {"const": NAMESPACE}, "labels": _LABELS}, ["name", "namespace"]
)
_SELECTOR = _strict({"matchLabels": {**_LABELS, "minProperties": 1}}, ["matchLabels"])
_RELABELINGS = {"type": "array", "items": {"type": "object", "minProperties": 1}}
_ENDPOINT = _strict(
    {
        "port": _STRING,
        "path": _STRING,
        "interval": _DURATION,
        "honorLabels": {"type": "boolean"},
        "relabelings": _RELABELINGS,
        "metricRelabelings": _RELABELINGS,
        "scheme": {"enum": ["http", "https"]},
        "tlsConfig": _strict(
            {
                "serverName": _STRING,
                "ca": _strict(
                    {
                        "secret": _strict(
                            {"name": _STRING, "key": _STRING, "optional": {"type": "boolean"}},
                            ["name", "key"],
                        )
                    },
                    ["secret"],
                ),
            },
            [],
        ),
    },
    ["port"],
)
_RULE = _strict(
    {
        "alert": _STRING,
        "expr": _STRING,
        "for": _DURATION,
        "labels": _LABELS,
        "annotations": _LABELS,
    },
    ["alert", "expr"],
)


def _kind(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _strict(
        {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": _METADATA,
            "spec": spec,
        },
        ["apiVersion", "kind", "metadata", "spec"],
    )


PROMETHEUS_OPERATOR_SCHEMAS = {
    "ServiceMonitor": _kind(
        "ServiceMonitor",
        _strict(
            {
                "selector": _SELECTOR,
                "namespaceSelector": _strict({"matchNames": {"type": "array", "items": _STRING}}),
                "endpoints": {"type": "array", "items": _ENDPOINT, "minItems": 1},
            },
            ["selector", "endpoints"],
        ),
    ),
    "PodMonitor": _kind(
        "PodMonitor",
        _strict(
            {
                "selector": _SELECTOR,
                "namespaceSelector": _strict(
                    {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": _STRING}}
                ),
                "podMetricsEndpoints": {"type": "array", "items": _ENDPOINT, "minItems": 1},
            },
            ["selector", "podMetricsEndpoints"],
        ),
    ),
    "PrometheusRule": _kind(
        "PrometheusRule",
        _strict(
            {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": _strict(
                        {"name": _STRING, "rules": {"type": "array", "items": _RULE, "minItems": 1}},
                        ["name", "rules"],
                    ),
                }
            },
            ["groups"],
        ),
    ),
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stderr}"
    return result


@functools.cache
def render(scenario: str) -> tuple[dict[str, Any], ...]:
    out = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *SCENARIOS[scenario]).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def objects(scenario: str, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in render(scenario) if doc["kind"] == kind]


def one(scenario: str, kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in objects(scenario, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name} rendered {len(found)} times in {scenario}"
    return found[0]


def workloads(scenario: str) -> list[dict[str, Any]]:
    return [doc for doc in render(scenario) if doc["kind"] in ("Deployment", "StatefulSet")]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def env(workload: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(workload).get("env", [])}


def operator(scenario: str) -> dict[str, Any]:
    return one(scenario, "Deployment", "hk-hookline-operator")


def ingest(scenario: str) -> dict[str, Any]:
    return one(scenario, "Deployment", "hk-hookline-ingest")


def pools(scenario: str) -> list[dict[str, Any]]:
    """The StatefulSets the operator takes for sender pools: selected the way it selects them."""
    return [s for s in objects(scenario, "StatefulSet") if matches(POOL_SELECTOR, s["metadata"]["labels"])]


def pool(scenario: str, name: str) -> dict[str, Any]:
    (found,) = [s for s in pools(scenario) if s["metadata"]["labels"][POOL_LABEL] == name]
    return found


def pool_args(workload: dict[str, Any]) -> Any:
    """The pool container's args as `hookline pool` parses them."""
    args = container(workload)["args"]
    assert args[0] == "pool"
    return build_parser("pool").parse_args(args)


def volume(workload: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [v for v in workload["spec"]["template"]["spec"]["volumes"] if v["name"] == name]
    return found


def mounted_file(workload: dict[str, Any], volume_name: str) -> tuple[str, str, str]:
    """(secret name, secret key, path of the file in the container) of a one-key Secret volume."""
    secret = volume(workload, volume_name)["secret"]
    (item,) = secret["items"]
    (mount,) = [m for m in container(workload)["volumeMounts"] if m["name"] == volume_name]
    assert mount["readOnly"] is True
    assert secret["defaultMode"] == 0o440
    return secret["secretName"], item["key"], f"{mount['mountPath']}/{item['path']}"


def ingest_nats_url(scenario: str) -> str:
    args = container(ingest(scenario))["args"]
    return args[args.index("--nats-url") + 1]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- lint and schemas -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [[], ["--set", "monitoring.enabled=true", "--set", "monitoring.dashboard.enabled=true"]],
    ids=["defaults", "monitoring"],
)
def test_lint_strict(extra):
    result = helm("lint", "--strict", str(CHART), *extra)
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_is_valid_kubernetes(scenario):
    docs = render(scenario)
    assert docs
    for doc in docs:
        meta = doc["metadata"]
        assert meta.get("name"), doc
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            # Prometheus Operator kinds: their CRDs are not available offline, so a hand-written
            # subset of the monitoring.coreos.com/v1 fields the chart uses catches typos and wrong types.
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            jsonschema.validate(doc, PROMETHEUS_OPERATOR_SCHEMAS[doc["kind"]])
            continue
        for version in KUBE_VERSIONS:
            if doc["kind"].startswith("ValidatingAdmissionPolicy") and version == KUBE_VERSIONS[0]:
                continue  # GA in 1.30: rendered only there (test_admission_policy_needs_kubernetes_1_30)
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{doc['kind']} {meta['name']} invalid for Kubernetes {version}: {error}")


def test_admission_policy_needs_kubernetes_1_30():
    kinds = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    old = helm("template", RELEASE, str(CHART), "--kube-version", "1.29.0").stdout
    new = helm("template", RELEASE, str(CHART), "--kube-version", "1.30.0").stdout
    assert not kinds & {d["kind"] for d in yaml.safe_load_all(old) if d}
    assert kinds <= {d["kind"] for d in yaml.safe_load_all(new) if d}


def test_chart_installs_on_oldest_supported_kubernetes():
    helm("template", RELEASE, str(CHART), "--kube-version", KUBE_VERSIONS[0])
    too_old = helm("template", RELEASE, str(CHART), "--kube-version", "1.27.0", check=False)
    assert too_old.returncode != 0
    assert "kubeVersion" in too_old.stderr or "incompatible" in too_old.stderr


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--set", "operater.resources.limits.memory=1Gi"], "operater"),
        (["--set", "operator.resources.limits.memory=abc"], "/operator/resources/limits/memory"),
        (["--set", "ingest.resources.requests.cpu=lots"], "/ingest/resources/requests/cpu"),
        (["--set", "senderPools[0].resources.limits.memory=2 GB"], "/senderPools/0/resources/limits/memory"),
        (["--set", "sender.resources.requests.memory=64MB"], "/sender/resources/requests/memory"),
        (["--set", "sender.imagePullPolicy=always"], "/sender/imagePullPolicy"),
        (["--set", "sender.podLabels.hookline\\.io/webhook=x"], "/sender/podLabels/hookline.io~1webhook"),
        (["--set", "logFormat=yaml"], "/logFormat"),
        (["--set", "monitoring.alerts.HooklineDeadLetter.enabled=false"], "HooklineDeadLetter"),
        (
            ["--set", "monitoring.alerts.HooklineDeadLetters.severity=page"],
            "/monitoring/alerts/HooklineDeadLetters",
        ),
        (["--set", "operator.replicas=0"], "/operator/replicas"),
        (["--set", "operator.leaderElection.enabled=false"], "needs operator.leaderElection.enabled=true"),
        (
            ["--set", "operator.leaderElection.renewDeadlineSeconds=20"],
            "retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds",
        ),
        (["--set", "nats.persistense.enabled=false"], "persistense"),
        (["--set", "ingest.replicas=0"], "/ingest/replicas"),
        (["--set", "nats.url=nats.messaging.svc:4222"], "/nats/url"),
        (["--set", "nats.persistence.size=lots"], "/nats/persistence/size"),
        (["--set", "nats.streamMaxBytes=-2"], "/nats/streamMaxBytes"),
        (["--set", "nats.streamRetention=forever"], "/nats/streamRetention"),
        (["--set", "nats.streamMaxConsumers=0"], "/nats/streamMaxConsumers"),
        (["--set", "nats.replicas=7"], "/nats/replicas"),
        (["--set", "nats.replicas=3"], "nats.replicas=3 needs a NATS cluster"),
        (["--set-json", 'egress.allowNetworks=["10.0.0.0"]'], "/egress/allowNetworks/0"),
        (
            ["--set", "monitoring.prometheusRule.unverifiedFor=6 hours"],
            "/monitoring/prometheusRule/unverifiedFor",
        ),
        (["--set", "senderPools[0].name=Bulk_Mail"], "/senderPools/0/name"),
        (["--set", "senderPools[0].name=" + "p" * 41], "/senderPools/0/name"),
        (["--set", "senderPools[0].name=-bulk"], "/senderPools/0/name"),
        (["--set", "senderPools[0].replicas=-1"], "/senderPools/0/replicas"),
        (["--set", "senderPools[0].maxInFlightPerOrigin=0"], "/senderPools/0/maxInFlightPerOrigin"),
        (["--set", "senderPools[0].replica=3"], "replica"),
        (["--set", "operator.defaultSenderMode=pool"], "/operator/defaultSenderMode"),
        (["--set", "operator.defaultSenderPool=Default"], "/operator/defaultSenderPool"),
        (["--set", "poolKey.secretKey=pool/key"], "/poolKey/secretKey"),
        (["--set", "poolKey.existingSecretName=x"], "existingSecretName"),
        (["--set-json", 'senderPools=[{"name":"a"},{"name":"a"}]'], '"a" is listed twice'),
        (["--set", "operator.defaultSenderPool=bulk"], 'operator.defaultSenderPool="bulk" is not one of'),
        (
            ["--set-json", "senderPools=[]", "--set", "operator.defaultSenderMode=Pool"],
            "operator.defaultSenderPool",
        ),
    ],
)
def test_schema_rejects_bad_values_naming_the_field(flags, named):
    result = helm("template", RELEASE, str(CHART), *flags, check=False)
    assert result.returncode != 0
    assert named in result.stderr


# --- security ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_role_grants_a_wildcard(scenario):
    roles = [doc for doc in render(scenario) if doc["kind"] in ("Role", "ClusterRole")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)


def rule_set(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_watched_namespaces_get_roles_and_the_cluster_role_keeps_only_cluster_scoped_reads():
    (cluster,) = [
        r for r in objects("defaults", "ClusterRole") if r["metadata"]["name"] == "hk-hookline-operator"
    ]
    (scoped,) = [
        r
        for r in objects("watch-namespaces", "ClusterRole")
        if r["metadata"]["name"] == "hk-hookline-operator"
    ]
    cluster_scoped = {"customresourcedefinitions", "namespaces", "webhookpolicies", "webhookpolicies/status"}
    assert {resource for _, resource, _ in rule_set(scoped)} == cluster_scoped
    roles = {
        r["metadata"]["namespace"]: r
        for r in objects("watch-namespaces", "Role")
        if r["metadata"]["name"] == "hk-hookline-operator"
    }
    assert set(roles) == {"shop", "crm", NAMESPACE}  # and the release namespace: pools, Lease, own Secrets
    for namespace, role in roles.items():
        # together they grant exactly what the ClusterRole grants in the default mode, namespace by namespace
        assert rule_set(role) | rule_set(scoped) == rule_set(cluster), namespace
        (binding,) = [
            b
            for b in objects("watch-namespaces", "RoleBinding")
            if b["metadata"]["name"] == "hk-hookline-operator" and b["metadata"]["namespace"] == namespace
        ]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "hk-hookline-operator",
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "hk-hookline-operator", "namespace": NAMESPACE}
        ]
    args = container(operator("watch-namespaces"))["args"]
    assert [args[i + 1] for i, a in enumerate(args) if a == "--namespace"] == ["shop", "crm", NAMESPACE]
    assert build_parser("operator").parse_args(args).namespace == ["shop", "crm", NAMESPACE]
    assert "--namespace" not in container(operator("defaults"))["args"]
    assert not [r for r in objects("defaults", "Role") if r["metadata"]["name"] == "hk-hookline-operator"]


def test_operator_cluster_role_grants_exactly_what_the_operator_needs():
    (role,) = [
        r for r in objects("defaults", "ClusterRole") if r["metadata"]["name"] == "hk-hookline-operator"
    ]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }

    def grants(group: str, resources: list[str], verbs: list[str]) -> set[tuple[str, str, str]]:
        return {(group, r, v) for r in resources for v in verbs}

    expected = (
        grants("hookline.io", ["webhooks", "webhooktests"], ["get", "list", "watch", "patch", "update"])
        | grants("hookline.io", ["webhooktests"], ["delete"])  # finished tests expire
        | grants("hookline.io", ["webhooks/status", "webhooktests/status"], ["get", "patch", "update"])
        | grants("hookline.io", ["webhooks/finalizers"], ["update"])
        # WebhookDomains: tokens and instructions, the index, their proofs' status (issue 21)
        | grants("hookline.io", ["webhookdomains"], ["get", "list", "watch", "patch", "update"])
        | grants("hookline.io", ["webhookdomains/status"], ["get", "patch", "update"])
        | grants("apps", ["deployments"], ["get", "list", "watch", "create", "patch", "update", "delete"])
        | grants("apps", ["statefulsets"], ["get", "list", "watch"])  # sender pools: replica counts
        | grants("", ["configmaps"], ["get", "list", "watch", "create", "patch", "update", "delete"])
        | grants("", ["secrets"], ["get", "list", "watch", "create"])  # credentials, Secret watch, generate
        | grants("", ["secrets"], ["update"])  # a sender's NATS user minted again (nats.auth)
        | grants("", ["events"], ["create", "patch"])
        | grants("events.k8s.io", ["events"], ["create", "patch"])
        | grants("apiextensions.k8s.io", ["customresourcedefinitions"], ["get", "list", "watch"])
        | grants("", ["namespaces"], ["get", "list", "watch"])
        | grants("hookline.io", ["webhookpolicies"], ["get", "list", "watch"])  # tenancy: read the grants
        | grants("hookline.io", ["webhookpolicies/status"], ["get", "patch"])  # and count what they cover
    )
    assert granted == expected
    (binding,) = objects("defaults", "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (subject,) = binding["subjects"]
    sa = one("defaults", "ServiceAccount", subject["name"])
    assert sa["metadata"]["namespace"] == subject["namespace"] == NAMESPACE
    assert operator("defaults")["spec"]["template"]["spec"]["serviceAccountName"] == subject["name"]


def test_the_operator_enforces_grants_by_default_and_compiles_them_for_the_admission_policy():
    variables = {k: v for k, v in env(operator("defaults")).items() if isinstance(v, str)}
    config = config_from_env(variables)
    assert config.tenancy_enforce and config.grants_configmap == "hookline/hk-hookline-grants"
    (binding,) = objects("defaults", "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["paramRef"] == {
        "name": "hk-hookline-grants",
        "namespace": NAMESPACE,
        "parameterNotFoundAction": "Deny",
    }
    assert one("defaults", "ConfigMap", "hk-hookline-grants")["metadata"]["annotations"] == {
        "helm.sh/resource-policy": "keep"
    }
    assert config_from_env({"HOOKLINE_TENANCY_ENFORCE": "false"}).tenancy_enforce is False


def test_tenants_get_aggregated_roles_without_any_grant():
    roles = {r["metadata"]["name"]: r for r in objects("defaults", "ClusterRole")}
    edit, view = roles["hookline-edit"], roles["hookline-view"]
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    for role in (edit, view):
        resources = {r for rule in role["rules"] for r in rule["resources"]}
        assert "webhookpolicies" not in resources and {"webhooks", "webhooktests"} <= resources
    assert {"create", "delete", "patch"} <= {v for rule in edit["rules"] for v in rule["verbs"]}
    assert {v for rule in view["rules"] for v in rule["verbs"]} == {"get", "list", "watch"}


def test_operator_binding_follows_a_preexisting_service_account():
    (binding,) = objects("no-service-accounts", "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == "preexisting-operator"
    assert operator("no-service-accounts")["spec"]["template"]["spec"]["serviceAccountName"] == (
        "preexisting-operator"
    )
    assert not objects("no-service-accounts", "ServiceAccount")[1:]  # only the NATS one is left
    assert objects("no-service-accounts", "ServiceAccount")[0]["metadata"]["name"] == "hk-hookline-nats"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_and_container_is_hardened(scenario):
    assert workloads(scenario)
    for workload in workloads(scenario):
        pod = workload["spec"]["template"]["spec"]
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["runAsNonRoot"] is True, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], name
            assert c["resources"]["limits"]["memory"], name
        # Only the operator talks to the Kubernetes API.
        assert pod["automountServiceAccountToken"] is (name == "hk-hookline-operator"), name


def test_ingest_and_nats_service_accounts_carry_no_token():
    for name in ("hk-hookline-ingest", "hk-hookline-nats"):
        assert one("defaults", "ServiceAccount", name)["automountServiceAccountToken"] is False


def admitted(peers: list[dict], namespace_labels: dict[str, str], pod_labels: dict[str, str]) -> bool:
    """Whether a pod with these labels, in a namespace with these labels, matches one of the peers."""
    for peer in peers:
        ns = peer.get("namespaceSelector")
        ns_ok = ns is not None and matches(ns.get("matchLabels") or {}, namespace_labels)
        pod_ok = matches((peer.get("podSelector") or {}).get("matchLabels") or {}, pod_labels)
        if ns_ok and pod_ok:
            return True
    return False


def test_nats_admits_hooklines_own_components_by_namespace_and_senders_by_credentials():
    policy = one("defaults", "NetworkPolicy", "hk-hookline-nats")
    nats = one("defaults", "StatefulSet", "hk-hookline-nats")
    assert matches(
        policy["spec"]["podSelector"]["matchLabels"], nats["spec"]["template"]["metadata"]["labels"]
    )
    client_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "client")
    peers = client_rule["from"]
    home = {"kubernetes.io/metadata.name": "hookline"}
    tenant = {"kubernetes.io/metadata.name": "team-a"}
    for workload in (operator("defaults"), ingest("defaults"), *pools("defaults")):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert admitted(peers, home, labels)
        # The same labels set by a tenant on a pod of its own namespace: not admitted by them.
        if labels.get("app.kubernetes.io/component") != "sender":
            assert not admitted(peers, tenant, labels)
    # A tenant pod that only claims to be hookline (the old rule): refused.
    assert not admitted(peers, tenant, {"app.kubernetes.io/name": "hookline"})
    # Dedicated senders in tenant namespaces: admitted to the port; NATS auth is the boundary.
    sender = {"app.kubernetes.io/component": "sender", "app.kubernetes.io/managed-by": "hookline-operator"}
    assert admitted(peers, tenant, sender)
    assert not objects("no-persistence", "NetworkPolicy") or all(
        p["metadata"]["name"] != "hk-hookline-nats" for p in objects("no-persistence", "NetworkPolicy")
    )


def test_ingest_admits_only_the_producers_a_value_names():
    policy = one("defaults", "NetworkPolicy", "hk-hookline-ingest")
    assert matches(
        policy["spec"]["podSelector"]["matchLabels"],
        ingest("defaults")["spec"]["template"]["metadata"]["labels"],
    )
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {}}]  # its own namespace only, until producers are named
    shop = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}}}
    rendered = [
        d
        for d in yaml.safe_load_all(
            helm(
                "template",
                RELEASE,
                str(CHART),
                "--namespace",
                "hookline",
                "--set-json",
                f"ingest.networkPolicy.from={json.dumps([shop])}",
            ).stdout
        )
        if d and d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "hk-hookline-ingest"
    ]
    assert rendered[0]["spec"]["ingress"][0]["from"] == [{"podSelector": {}}, shop]


# --- operator ---------------------------------------------------------------------------------------


def test_operator_runs_two_replicas_with_leader_election_and_exposes_health_and_metrics():
    deployment = operator("defaults")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    variables = env(deployment)
    assert variables["HOOKLINE_LEADER_ELECTION_LEASE"] == "hk-hookline-operator"
    assert variables["HOOKLINE_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert variables["HOOKLINE_POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    election = config_from_env(
        {**{k: v for k, v in variables.items() if isinstance(v, str)}, "HOOKLINE_POD_NAME": "op-a"}
    ).leader_election
    assert election is not None
    assert (election.name, election.identity) == ("hk-hookline-operator", "op-a")
    timing = election.timing
    assert (timing.lease_seconds, timing.renew_deadline_seconds, timing.retry_seconds) == (15, 10, 2)
    # Replicas spread over nodes, and a drain keeps one.
    term = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ][0]["podAffinityTerm"]
    assert matches(term["labelSelector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"])
    budget = one("defaults", "PodDisruptionBudget", "hk-hookline-operator")
    assert budget["spec"]["minAvailable"] == 1
    assert matches(
        budget["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]
    )
    # The Lease is the operator's to get, create and update in its own namespace, and no other Lease.
    role = one("defaults", "Role", "hk-hookline-operator-leader")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["hk-hookline-operator"],
            "verbs": ["get", "update"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]
    binding = one("defaults", "RoleBinding", "hk-hookline-operator-leader")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "hk-hookline-operator", "namespace": NAMESPACE}
    ]
    c = container(deployment)
    assert c["args"] == ["operator"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090, "keys": 8082}  # keys: the JWKS endpoint
    service = one("defaults", "Service", "hk-hookline-operator-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_without_leader_election_one_operator_runs_with_recreate():
    deployment = operator("single-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "HOOKLINE_LEADER_ELECTION_LEASE" not in env(deployment)
    assert "affinity" not in deployment["spec"]["template"]["spec"]
    assert not [
        b for b in objects("single-operator", "PodDisruptionBudget") if "operator" in b["metadata"]["name"]
    ]
    assert not objects("single-operator", "Role")
    assert config_from_env({}).leader_election is None


def test_senders_get_the_chart_image_unless_told_otherwise():
    image = container(operator("defaults"))["image"]
    assert image == "ghcr.io/hookline/hookline:0.1.0"
    assert env(operator("defaults"))["HOOKLINE_SENDER_IMAGE"] == image
    assert container(ingest("defaults"))["image"] == image
    assert container(operator("images"))["image"] == f"ghcr.io/hookline/hookline@{DIGEST}"
    assert env(operator("images"))["HOOKLINE_SENDER_IMAGE"] == "registry.example.com/hookline-sender:custom"


def test_egress_settings_reach_the_operator_only_when_they_allow_something():
    assert "HOOKLINE_ALLOW_HTTP" not in env(operator("defaults"))
    assert "HOOKLINE_ALLOW_NETWORKS" not in env(operator("defaults"))
    assert env(operator("egress"))["HOOKLINE_ALLOW_HTTP"] == "1"
    assert env(operator("egress"))["HOOKLINE_ALLOW_NETWORKS"] == "10.0.0.0/8,fd00::/8"


# --- NATS -------------------------------------------------------------------------------------------


def test_embedded_nats_is_the_default_and_everyone_uses_it():
    nats = one("defaults", "StatefulSet", "hk-hookline-nats")
    c = container(nats)
    assert c["image"].startswith("nats:")
    args = c["args"]
    assert "-js" in args and args[args.index("-sd") + 1] == "/data"
    assert {"name": "data", "mountPath": "/data"} in c["volumeMounts"]
    (claim,) = nats["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    service = one("defaults", "Service", "hk-hookline-nats")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"client": 4222, "monitor": 8222}
    assert matches(service["spec"]["selector"], nats["spec"]["template"]["metadata"]["labels"])
    # The URL names that Service by its fully qualified name: senders run in other namespaces.
    assert env(operator("defaults"))["HOOKLINE_NATS_URL"] == EMBEDDED_NATS
    assert env(operator("defaults"))["HOOKLINE_SENDER_NATS_URL"] == EMBEDDED_NATS
    assert ingest_nats_url("defaults") == EMBEDDED_NATS


def ingest_flag(scenario: str, flag: str) -> str:
    args = container(ingest(scenario))["args"]
    return args[args.index(flag) + 1]


def test_the_stream_consumer_limit_and_replicas_reach_ingest_and_the_operator():
    # Defaults: sized for 10,000+ Webhooks (NATS 2.15 would allow 1,000), one replica on the embedded server.
    assert ingest_flag("defaults", "--stream-max-consumers") == "20000"
    assert ingest_flag("defaults", "--nats-replicas") == "1"
    assert env(operator("defaults"))["HOOKLINE_NATS_REPLICAS"] == "1"
    assert ingest_flag("nats-cluster", "--stream-max-consumers") == "50000"
    assert ingest_flag("nats-cluster", "--nats-replicas") == "3"
    assert env(operator("nats-cluster"))["HOOKLINE_NATS_REPLICAS"] == "3"


def test_the_chart_nats_image_runs_the_server_version_the_tests_run():
    out = subprocess.run([find_nats_server(), "--version"], capture_output=True, text=True, check=True)
    tested = out.stdout.strip().removeprefix("nats-server: v")
    image = container(one("defaults", "StatefulSet", "hk-hookline-nats"))["image"]
    assert image == f"nats:{tested}-alpine"


def test_nats_without_persistence_uses_an_empty_dir():
    nats = one("no-persistence", "StatefulSet", "hk-hookline-nats")
    assert "volumeClaimTemplates" not in nats["spec"]
    assert {"name": "data", "emptyDir": {}} in nats["spec"]["template"]["spec"]["volumes"]


# Kubernetes quantity suffixes, in bytes.
QUANTITY_FACTORS = {
    "": 1,
    **{suffix: 1000 ** (n + 1) for n, suffix in enumerate(("k", "M", "G", "T", "P", "E"))},
    **{suffix: 1024 ** (n + 1) for n, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
}


def documented_max_file_store(size: str) -> int:
    """The documented formula (values.yaml, docs/install.md): the volume less a tenth of it, in bytes."""
    number, suffix = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)", size).groups()  # type: ignore[union-attr]
    size_bytes = int(Decimal(number) * QUANTITY_FACTORS[suffix])
    return size_bytes - size_bytes // 10


def nats_config(scenario: str) -> str:
    return one(scenario, "ConfigMap", "hk-hookline-nats-config")["data"]["nats-server.conf"]


def rendered_max_file_store(scenario: str) -> int:
    (value,) = re.findall(r"^\s*max_file_store:\s*(\d+)\s*$", nats_config(scenario), re.MULTILINE)
    return int(value)


@pytest.mark.parametrize(
    ("scenario", "size", "expected"),
    [
        ("defaults", "10Gi", 9_663_676_416),  # 9 GiB: the 7 GiB stream, 1 GiB recovery, 1 GiB attempt log
        ("nats-volume", "50Gi", 48_318_382_080),
        ("small-nats-volume", "1.5Gi", 1_449_551_463),
        ("no-persistence", "10Gi", 9_663_676_416),  # the emptyDir keeps the same limit
    ],
)
def test_the_nats_store_limit_is_the_volume_less_a_tenth(scenario, size, expected):
    assert documented_max_file_store(size) == expected
    assert rendered_max_file_store(scenario) == expected
    nats = one(scenario, "StatefulSet", "hk-hookline-nats")
    if "volumeClaimTemplates" in nats["spec"]:
        (claim,) = nats["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["resources"]["requests"]["storage"] == size
    # The server reads the rendered file: mounted from the ConfigMap, passed with --config, and a new
    # config rolls the pod (the server reads it only when it starts).
    c = container(nats)
    config_path = c["args"][c["args"].index("--config") + 1]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "config"]
    assert config_path == f"{mount['mountPath']}/nats-server.conf" and mount["readOnly"] is True
    assert volume(nats, "config")["configMap"]["name"] == "hk-hookline-nats-config"
    # The store folder is the -sd flag only: nats-server refuses a store_dir given both ways.
    assert "store_dir" not in nats_config(scenario)
    assert c["args"][c["args"].index("-sd") + 1] == "/data"
    annotations = nats["spec"]["template"]["metadata"]["annotations"]
    assert len(annotations["checksum/config"]) == 64


def test_a_new_nats_config_rolls_the_server():
    def checksum(scenario: str) -> str:
        return one(scenario, "StatefulSet", "hk-hookline-nats")["spec"]["template"]["metadata"][
            "annotations"
        ]["checksum/config"]

    assert checksum("defaults") == checksum("no-persistence")  # same size, same config
    assert checksum("defaults") != checksum("nats-volume")


def test_external_nats_renders_no_server_config():
    assert not [c for c in objects("external-nats", "ConfigMap") if "nats" in c["metadata"]["name"]]


def test_stream_limits_that_do_not_fit_the_nats_store_are_refused():
    small = ["--set", "nats.persistence.size=5Gi"]
    result = helm("template", RELEASE, str(CHART), *small, check=False)
    assert result.returncode != 0
    assert (
        "nats.streamMaxBytes (7516192768), nats.recoveryMaxBytes (1073741824) and attempts.maxBytes "
        "(1073741824) reserve 9663676416 bytes"
    ) in result.stderr
    assert "max_file_store 4831838208" in result.stderr and "raise nats.persistence.size" in result.stderr
    # An external NATS has its own limits; the chart does not size it.
    helm(
        "template",
        RELEASE,
        str(CHART),
        *small,
        "--set",
        f"nats.url={EXTERNAL_NATS}",
        "--set",
        "nats.auth.enabled=false",
    )


@pytest.mark.parametrize("scenario", ["defaults", "small-nats-volume"])
def test_the_rendered_nats_config_is_what_the_real_server_runs_with(scenario, tmp_path):
    """`nats-server -t` takes the file, and the server started with the StatefulSet's own arguments
    (ports, store and name moved to loopback and a temporary folder) reports that store limit."""
    # As the pod has them: the ConfigMap's file beside the auth Secret's auth.conf (made by the operator's
    # own code), the full resolver's folder on the volume (here: the temporary one).
    config = tmp_path / "etc" / "nats" / "nats-server.conf"
    config.parent.mkdir(parents=True)
    config.write_text(
        nats_config(scenario).replace('"/data/jwt"', json.dumps(str(tmp_path / "data" / "jwt")))
    )
    (tmp_path / "etc" / "nats-auth").mkdir()
    (tmp_path / "etc" / "nats-auth" / "auth.conf").write_text(
        auth_secret_data(AuthKeys.generate())["auth.conf"]
    )
    tested = subprocess.run([find_nats_server(), "-c", str(config), "-t"], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stderr
    client_port, monitor_port = free_port(), free_port()
    moved = {
        "/etc/nats/nats-server.conf": str(config),
        "/data": str(tmp_path / "data"),
        "4222": str(client_port),
        "8222": str(monitor_port),
        "$(POD_NAME)": "hookline-nats-0",
    }
    args = [
        moved.get(arg, arg) for arg in container(one(scenario, "StatefulSet", "hk-hookline-nats"))["args"]
    ]
    server = subprocess.Popen(
        [find_nats_server(), *args, "-a", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/varz", timeout=2) as answer:
                    varz = json.load(answer)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "nats-server did not serve /varz"
                time.sleep(0.1)
        jetstream = varz["jetstream"]["config"]
        assert jetstream["max_storage"] == rendered_max_file_store(scenario)
        assert jetstream["store_dir"].startswith(str(tmp_path / "data"))
        assert varz["server_name"] == "hookline-nats-0"
        print(f"\n[{scenario}] nats-server -t: valid; /varz max_storage {jetstream['max_storage']}")
    finally:
        server.terminate()
        server.wait(15)


def test_external_nats_replaces_the_embedded_server():
    assert [s["metadata"]["name"] for s in objects("external-nats", "StatefulSet")] == [
        "hk-hookline-pool-default"
    ]
    assert not [s for s in objects("external-nats", "Service") if "nats" in s["metadata"]["name"]]
    assert [p["metadata"]["name"] for p in objects("external-nats", "NetworkPolicy")] == [
        "hk-hookline-ingest"
    ]
    assert env(operator("external-nats"))["HOOKLINE_NATS_URL"] == EXTERNAL_NATS
    assert env(operator("external-nats"))["HOOKLINE_SENDER_NATS_URL"] == EXTERNAL_NATS
    assert ingest_nats_url("external-nats") == EXTERNAL_NATS


# --- ingest -----------------------------------------------------------------------------------------


def test_ingest_serves_events_with_probes():
    deployment = ingest("defaults")
    c = container(deployment)
    assert c["args"][0] == "ingest"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    assert deployment["spec"]["replicas"] == 2
    pdb = one("defaults", "PodDisruptionBudget", "hk-hookline-ingest")
    assert matches(
        pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"]
    )
    # A PodDisruptionBudget that one replica can never satisfy would block every node drain.
    assert not [
        b for b in objects("single-ingest", "PodDisruptionBudget") if "ingest" in b["metadata"]["name"]
    ]


def test_the_stream_byte_limit_is_a_chart_value_ingest_applies():
    def limit(scenario: str) -> str:
        args = container(ingest(scenario))["args"]
        return args[args.index("--stream-max-bytes") + 1]

    assert limit("defaults") == "7516192768"  # 7 GiB: with the recovery stream and the attempt log, 9 GiB
    assert limit("stream-limit") == "1073741824"
    args = container(ingest("defaults"))["args"]
    assert args[args.index("--stream-retention") + 1] == "interest"
    # The recovery stream (a deleted consumer's unacknowledged events come back from it): ingest applies it.
    assert args[args.index("--recovery-window") + 1] == "1h"
    assert args[args.index("--recovery-max-bytes") + 1] == "1073741824"


def test_the_recovery_stream_counts_against_the_nats_store_only_under_interest_retention():
    full = ["--set", "nats.streamMaxBytes=8589934592"]  # 8 + 1 + 1 GiB: more than the 9 GiB store
    result = helm("template", RELEASE, str(CHART), *full, check=False)
    assert result.returncode != 0 and "nats.recoveryMaxBytes (1073741824)" in result.stderr
    helm("template", RELEASE, str(CHART), *full, "--set", "nats.streamRetention=limits")  # no recovery stream
    refused = helm("template", RELEASE, str(CHART), "--set", "nats.recoveryWindow=90", check=False)
    assert refused.returncode != 0 and "recoveryWindow" in refused.stderr  # a duration, not a number


def test_ingest_producer_tokens_and_tls_come_from_secrets_and_auth_off_is_explicit():
    c = container(ingest("ingest-producers-tls"))
    args = c["args"]
    tokens = args[args.index("--tokens-file") + 1]
    assert tokens == "/var/run/secrets/hookline/ingest-tokens/tokens.yaml"
    assert args[args.index("--tls-cert") + 1].startswith("/var/run/secrets/hookline/ingest-tls/")
    assert "HOOKLINE_INGEST_TOKEN" not in env(ingest("ingest-producers-tls"))  # singleToken=false
    assert not [s for s in objects("ingest-producers-tls", "Secret") if "ingest" in s["metadata"]["name"]]
    volumes = {v["name"]: v for v in ingest("ingest-producers-tls")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["producer-tokens"]["secret"]["secretName"] == "producer-tokens"
    assert volumes["tls"]["secret"]["secretName"] == "ingest-tls"
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    monitor = one("ingest-producers-tls", "ServiceMonitor", "hk-hookline-ingest")
    assert monitor["spec"]["endpoints"][0]["scheme"] == "https"
    # The command takes exactly these flags.
    parsed = build_parser("ingest").parse_args(args)
    assert parsed.tokens_file == tokens and parsed.tls_key.endswith("tls.key")
    # Auth off is said on the command line (ingest logs a WARNING at every start); on by default.
    assert "--insecure-no-auth" in container(ingest("auth-off"))["args"]
    assert "--insecure-no-auth" not in container(ingest("defaults"))["args"]
    refused = helm("template", RELEASE, str(CHART), "--set", "ingest.auth.singleToken=false", check=False)
    assert refused.returncode != 0 and "singleToken=false needs tokensSecret" in refused.stderr


def test_ingest_token_comes_from_a_generated_secret():
    ref = env(ingest("defaults"))["HOOKLINE_INGEST_TOKEN"]["secretKeyRef"]
    secret = one("defaults", "Secret", ref["name"])
    token = base64.b64decode(secret["data"][ref["key"]]).decode()
    assert len(token) >= 32 and token.isalnum()


def test_ingest_token_can_come_from_an_existing_secret_or_be_off():
    assert env(ingest("existing-token"))["HOOKLINE_INGEST_TOKEN"]["secretKeyRef"] == {
        "name": "producer-token",
        "key": "token",
    }
    assert not [s for s in objects("existing-token", "Secret") if "ingest" in s["metadata"]["name"]]
    assert "HOOKLINE_INGEST_TOKEN" not in env(ingest("auth-off"))
    assert not [s for s in objects("auth-off", "Secret") if "ingest" in s["metadata"]["name"]]


def test_ingress_routes_to_the_ingest_service():
    (ingress,) = objects("ingress", "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "hookline-tls", "hosts": ["hookline.example.com"]}]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "hookline.example.com"
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/v1/events"
    backend = path["backend"]["service"]
    service = one("ingress", "Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert not objects("defaults", "Ingress")


# --- sender pools -----------------------------------------------------------------------------------


def test_the_default_pool_is_one_statefulset_the_operator_finds():
    (statefulset,) = pools("defaults")
    assert statefulset["metadata"]["name"] == "hk-hookline-pool-default"
    assert statefulset["metadata"]["labels"][POOL_LABEL] == "default"
    # Dedicated is the default mode: the pool is defined but runs no idle pods.
    assert statefulset["spec"]["replicas"] == 0
    # The pods carry the same labels, so the PodMonitor and the NATS policy see them as pool pods.
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert matches(POOL_SELECTOR, pod_labels) and pod_labels[POOL_LABEL] == "default"
    # Stable selector: nothing that changes with the chart version (a StatefulSet's selector is immutable).
    selector = statefulset["spec"]["selector"]["matchLabels"]
    assert selector == {**POOL_SELECTOR, "app.kubernetes.io/instance": RELEASE, POOL_LABEL: "default"}


def test_a_pool_without_replicas_runs_two_when_pools_are_the_default_mode():
    out = helm("template", RELEASE, str(CHART), "--set", "operator.defaultSenderMode=Pool").stdout
    (statefulset,) = [
        d
        for d in yaml.safe_load_all(out)
        if d and d["kind"] == "StatefulSet" and "pool" in d["metadata"]["name"]
    ]
    assert statefulset["spec"]["replicas"] == 2
    explicit = helm(
        "template", RELEASE, str(CHART), "--set-json", 'senderPools=[{"name":"default","replicas":3}]'
    ).stdout
    (statefulset,) = [
        d
        for d in yaml.safe_load_all(explicit)
        if d and d["kind"] == "StatefulSet" and "pool" in d["metadata"]["name"]
    ]
    assert statefulset["spec"]["replicas"] == 3


def test_every_pool_has_its_statefulset_and_headless_service():
    by_name = {s["metadata"]["labels"][POOL_LABEL]: s for s in pools("two-pools")}
    assert set(by_name) == {"default", "bulk"}
    assert by_name["default"]["spec"]["replicas"] == 3
    assert by_name["bulk"]["spec"]["replicas"] == 0  # defined, nothing running
    for name, statefulset in by_name.items():
        spec = statefulset["spec"]
        assert statefulset["metadata"]["name"] == f"hk-hookline-pool-{name}"
        assert spec["podManagementPolicy"] == "Parallel"
        assert spec["template"]["metadata"]["labels"][POOL_LABEL] == name
        service = one("two-pools", "Service", spec["serviceName"])
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["ports"] == [
            {"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}
        ]
        selected = [
            w["metadata"]["name"]
            for w in workloads("two-pools")
            if matches(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        assert selected == [statefulset["metadata"]["name"]]
        assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in container(statefulset)[
            "ports"
        ]
    bulk = by_name["bulk"]["spec"]["template"]
    assert bulk["spec"]["nodeSelector"] == {"pool": "bulk"}
    assert bulk["metadata"]["annotations"] == {"team": "mail"}
    assert container(by_name["bulk"])["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"memory": "2Gi"},
    }
    # A pool listed without resources gets the default pool's, not none at all.
    assert container(by_name["default"])["resources"] == container(pools("defaults")[0])["resources"]


def test_a_pool_replica_learns_its_number_from_its_pod_name():
    statefulset = pools("defaults")[0]
    assert pool_args(statefulset).replica is None
    assert replica_from_hostname(f"{statefulset['metadata']['name']}-1") == 1


def test_pool_args_name_the_pool_the_operators_nats_and_the_mounted_key():
    for scenario in ("defaults", "two-pools", "external-nats", "existing-pool-key"):
        for statefulset in pools(scenario):
            args = pool_args(statefulset)
            assert args.pool == statefulset["metadata"]["labels"][POOL_LABEL]
            assert args.nats_url == env(operator(scenario))["HOOKLINE_SENDER_NATS_URL"]
            assert args.listen == "0.0.0.0:8081"
            _, _, key_file = mounted_file(statefulset, "pool-key")
            assert args.pool_key_file == key_file
    assert pool_args(pool("external-nats", "default")).nats_url == EXTERNAL_NATS


def test_pool_replicas_get_the_egress_settings_as_flags():
    defaults = pool_args(pool("defaults", "default"))
    assert defaults.allow_network == [] and not defaults.allow_http
    default = pool_args(pool("two-pools", "default"))
    assert default.allow_network == ["10.0.0.0/8", "fd00::/8"] and default.allow_http is True
    # extraArgs come last, after the chart's own flags.
    assert pool_args(pool("two-pools", "bulk")).allow_network == ["10.0.0.0/8", "fd00::/8", "192.168.0.0/16"]


def test_a_pool_caps_requests_per_receiver_at_its_value_or_the_replicas_default():
    for scenario in ("defaults", "two-pools"):
        unset = pool_args(pool(scenario, "default"))
        assert unset.max_in_flight_per_origin == DEFAULT_MAX_IN_FLIGHT_PER_ORIGIN
    assert pool_args(pool("two-pools", "bulk")).max_in_flight_per_origin == 16


def test_pool_pods_have_no_kubernetes_access_and_are_hardened():
    for statefulset in pools("two-pools") + pools("defaults"):
        pod = statefulset["spec"]["template"]["spec"]
        name = statefulset["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["enableServiceLinks"] is False, name
        assert "serviceAccountName" not in pod, name
        assert pod["terminationGracePeriodSeconds"] == 60, name
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        c = container(statefulset)
        assert c["name"] == "pool"
        assert c["image"] == container(operator("defaults"))["image"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert volume(statefulset, "tmp") == {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    # No role is bound to anything but the operator's ServiceAccount.
    subjects = [s for b in objects("two-pools", "ClusterRoleBinding") for s in b["subjects"]]
    subjects += [s for b in objects("two-pools", "RoleBinding") for s in b["subjects"]]
    assert {s["name"] for s in subjects} == {"hk-hookline-operator"}


def test_operator_and_pools_mount_the_same_generated_pool_key():
    operator_secret, operator_key, operator_file = mounted_file(operator("defaults"), "pool-key")
    assert env(operator("defaults"))["HOOKLINE_POOL_KEY_FILE"] == operator_file
    for statefulset in pools("two-pools") + pools("defaults"):
        assert mounted_file(statefulset, "pool-key")[:2] == (operator_secret, operator_key)
    assert operator_secret == "hk-hookline-pool-key" and operator_key == "key"
    secret = one("defaults", "Secret", operator_secret)
    key = base64.b64decode(secret["data"][operator_key]).decode()
    assert len(key) >= MIN_POOL_KEY_CHARS and key.isalnum()
    PoolKey(key)  # what the operator and the replicas do with the file


def test_an_existing_pool_key_secret_is_used_and_none_generated():
    name, key, path = mounted_file(operator("existing-pool-key"), "pool-key")
    assert (name, key) == ("hookline-pool-key-from-vault", "pool.key")
    assert path.endswith("/pool.key")
    assert env(operator("existing-pool-key"))["HOOKLINE_POOL_KEY_FILE"] == path
    assert mounted_file(pool("existing-pool-key", "default"), "pool-key") == (name, key, path)
    assert pool_args(pool("existing-pool-key", "default")).pool_key_file == path
    assert not [s for s in objects("existing-pool-key", "Secret") if "pool" in s["metadata"]["name"]]


def test_operator_learns_the_default_sender_mode_and_pool():
    def operator_config(scenario: str) -> Any:
        variables = {k: v for k, v in env(operator(scenario)).items() if isinstance(v, str)}
        return config_from_env(variables)

    defaults = operator_config("defaults")
    assert env(operator("defaults"))["HOOKLINE_DEFAULT_SENDER_MODE"] == "Dedicated"
    assert (defaults.default_sender_mode, defaults.default_sender_pool) == (SenderMode.DEDICATED, "default")
    pooled = operator_config("two-pools")
    assert env(operator("two-pools"))["HOOKLINE_DEFAULT_SENDER_MODE"] == "Pool"
    assert (pooled.default_sender_mode, pooled.default_sender_pool) == (SenderMode.POOL, "bulk")
    assert pooled.pool_key_file == mounted_file(operator("two-pools"), "pool-key")[2]


def test_without_pools_nothing_of_them_is_rendered():
    assert not pools("no-pools")
    assert not [s for s in objects("no-pools", "Service") if "pool" in s["metadata"]["name"]]
    assert not [s for s in objects("no-pools", "Secret") if "pool" in s["metadata"]["name"]]
    deployment = operator("no-pools")
    assert "HOOKLINE_POOL_KEY_FILE" not in env(deployment)
    assert "pool-key" not in {v["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert env(deployment)["HOOKLINE_DEFAULT_SENDER_MODE"] == "Dedicated"


def test_schema_takes_the_pool_names_the_api_takes():
    schema = json.loads((CHART / "values.schema.json").read_text())
    item = schema["properties"]["senderPools"]["items"]["properties"]
    assert item["name"]["pattern"] == POOL_NAME_PATTERN
    assert schema["properties"]["operator"]["properties"]["defaultSenderPool"]["pattern"] == POOL_NAME_PATTERN
    assert schema["properties"]["operator"]["properties"]["defaultSenderMode"]["enum"] == [
        m.value for m in SenderMode
    ]


def test_a_long_pool_name_keeps_its_statefulset_name_short_enough():
    name = "p" * 40
    out = helm(
        "template",
        "a-rather-long-release-name",
        str(CHART),
        "--set",
        f"senderPools[0].name={name}",
        "--set",
        f"operator.defaultSenderPool={name}",
    ).stdout
    (statefulset,) = [
        d
        for d in yaml.safe_load_all(out)
        if d and d["kind"] == "StatefulSet" and POOL_LABEL in d["metadata"]["labels"]
    ]
    # Its pods' controller-revision-hash label is <name>-<10 characters>, at most 63.
    assert len(statefulset["metadata"]["name"]) <= 52
    assert statefulset["metadata"]["name"].endswith(f"-pool-{name}")
    assert statefulset["spec"]["serviceName"] == statefulset["metadata"]["name"]


def test_pool_pods_are_scraped_by_a_pod_monitor():
    monitor = one("two-pools", "PodMonitor", "hk-hookline-sender-pools")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert sorted(s["metadata"]["name"] for s in pools("two-pools")) == sorted(
        w["metadata"]["name"]
        for w in workloads("two-pools")
        if matches(selector, w["spec"]["template"]["metadata"]["labels"])
    )
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    ports = {p["name"] for p in container(pools("two-pools")[0])["ports"]}
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    # Pool replicas report each Webhook's namespace, like dedicated senders.
    assert endpoint["honorLabels"] is True
    assert [m["metadata"]["name"] for m in objects("no-pools", "PodMonitor")] == ["hk-hookline-senders"]


# --- wiring: Services and monitors point at pods and ports that exist ------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_service_reaches_pods_on_named_ports(scenario):
    for service in objects(scenario, "Service"):
        targets = [
            w
            for w in workloads(scenario)
            if matches(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(targets) == 1, service["metadata"]["name"]
        port_names = {p["name"] for p in container(targets[0])["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, (service["metadata"]["name"], port)
    for workload in workloads(scenario):
        selector = workload["spec"]["selector"]["matchLabels"]
        assert matches(selector, workload["spec"]["template"]["metadata"]["labels"])
        others = [w for w in workloads(scenario) if w is not workload]
        assert not [w for w in others if matches(selector, w["spec"]["template"]["metadata"]["labels"])]


def test_service_monitors_scrape_operator_and_ingest_services():
    monitors = {m["metadata"]["name"]: m for m in objects("monitoring", "ServiceMonitor")}
    assert set(monitors) == {"hk-hookline-operator", "hk-hookline-ingest"}
    for monitor in monitors.values():
        services = [
            s
            for s in objects("monitoring", "Service")
            if matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(services) == 1, monitor["metadata"]["name"]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in services[0]["spec"]["ports"]}
        assert endpoint["path"] == "/metrics"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    # The operator reports each Webhook's namespace; the scrape must not replace it with its own.
    assert monitors["hk-hookline-operator"]["spec"]["endpoints"][0]["honorLabels"] is True


def test_pod_monitor_selects_the_sender_pods_in_every_namespace():
    monitor = one("monitoring", "PodMonitor", "hk-hookline-senders")
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "hookline",
        "app.kubernetes.io/component": "sender",
        "app.kubernetes.io/managed-by": "hookline-operator",
    }
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and endpoint["honorLabels"] is True


def test_monitoring_objects_need_the_switch_and_the_api():
    def monitoring_kinds(scenario: str) -> set[str]:
        return {d["kind"] for d in render(scenario) if d["apiVersion"].startswith("monitoring.coreos.com/")}

    assert monitoring_kinds("monitoring") == {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    # Switched on, they are rendered; an install without the Prometheus Operator fails naming the kinds.
    assert monitoring_kinds("monitoring-without-api") == {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    # monitoring.checkAPI: only where the cluster serves the API.
    assert monitoring_kinds("monitoring-checked-without-api") == set()
    checked = helm(
        "template",
        RELEASE,
        str(CHART),
        "--set",
        "monitoring.enabled=true",
        "--set",
        "monitoring.checkAPI=true",
        *MONITORING_API,
    ).stdout
    assert "kind: PrometheusRule" in checked
    assert monitoring_kinds("defaults") == set()
    off = helm("template", RELEASE, str(CHART), *MONITORING_API).stdout
    assert "monitoring.coreos.com" not in off


def test_dashboard_config_map_is_labelled_for_the_grafana_sidecar():
    (dashboard,) = [c for c in objects("monitoring", "ConfigMap") if "dashboard" in c["metadata"]["name"]]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["hookline.json"] == (
        CHART / "files/dashboards/hookline.json"
    ).read_text().rstrip("\n")
    assert not [c for c in objects("defaults", "ConfigMap") if "dashboard" in c["metadata"]["name"]]


# --- CRDs -------------------------------------------------------------------------------------------


def crd_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.yaml"))}


def test_chart_crds_are_byte_equal_to_the_repository_crds():
    """Refresh with: cp crds/*.yaml charts/hookline/files/crds/"""
    assert crd_files(CHART / "files" / "crds") == crd_files(ROOT / "crds")


def test_crds_are_rendered_kept_on_uninstall_and_switchable():
    expected = {
        doc["metadata"]["name"]
        for path in sorted((ROOT / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "CustomResourceDefinition"
    }
    rendered = objects("defaults", "CustomResourceDefinition")
    assert {crd["metadata"]["name"] for crd in rendered} == expected
    for crd in rendered:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not objects("crds-off", "CustomResourceDefinition")


def test_crd_specs_are_rendered_unchanged():
    originals = {
        doc["metadata"]["name"]: doc
        for path in sorted((ROOT / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "CustomResourceDefinition"
    }
    for crd in objects("defaults", "CustomResourceDefinition"):
        assert crd["spec"] == originals[crd["metadata"]["name"]]["spec"]


# --- NOTES ------------------------------------------------------------------------------------------


def notes(*flags: str) -> str:
    out = helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", *flags).stdout
    return out.split("NOTES:", 1)[1]


def test_notes_tell_the_next_step():
    text = notes()
    assert "kind: Webhook" in text
    assert "{.status.verification.fileName}" in text
    assert "kubectl get wh -w" in text
    assert "kubectl -n hookline get secret hk-hookline-ingest-token" in text
    assert EMBEDDED_NATS in text


def test_notes_warn_when_monitoring_cannot_be_installed():
    checked = ("--set", "monitoring.enabled=true", "--set", "monitoring.checkAPI=true")
    assert "does not serve monitoring.coreos.com/v1" in notes(*checked)
    assert "does not serve" not in notes()
    assert "does not serve" not in notes("--set", "monitoring.enabled=true")


# --- dedicated sender pods, log format, alerts one by one --------------------------------------------


def operator_config_of(scenario: str) -> Any:
    """The operator's config as it reads it from the rendered Deployment's environment."""
    variables = {k: v for k, v in env(operator(scenario)).items() if isinstance(v, str)}
    return config_from_env(variables)


def test_the_sender_pod_values_reach_the_operator_and_its_deployments():
    config = operator_config_of("sender-pod")
    assert config.sender_pod.model_dump(by_alias=True, mode="json") == SENDER_VALUES
    # What the operator then builds for a Webhook: the pure builder, checked against Kubernetes' schema.
    spec = parse_webhook_spec({"url": "https://shop.example.com/hook", "events": ["open"]})
    owner = {"metadata": {"name": "orders", "namespace": "shop", "uid": "u-1"}}
    deployment = desired.deployment(owner, spec, "h", config)
    pod = deployment["spec"]["template"]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["nodeSelector"] == {"pool": "senders"}
    assert pod["spec"]["tolerations"] == SENDER_VALUES["tolerations"]
    assert pod["spec"]["affinity"] == SENDER_VALUES["affinity"]
    assert pod["spec"]["priorityClassName"] == "webhooks"
    assert pod["metadata"]["labels"]["team"] == "crm"
    assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    (sender,) = pod["spec"]["containers"]
    assert sender["imagePullPolicy"] == "Always"
    assert sender["resources"] == SENDER_VALUES["resources"]
    assert {"name": "HOOKLINE_LOG_FORMAT", "value": "json"} in sender["env"]
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(deployment, version, strict=True)


def test_without_sender_values_the_operator_adds_the_pull_policy_and_default_resources():
    config = operator_config_of("defaults")
    assert json.loads(env(operator("defaults"))["HOOKLINE_SENDER_POD_TEMPLATE"]) == {
        "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    }
    assert config.sender_pod.pod_fields() == {}
    assert config.log_format == "text"
    # Every dedicated sender pod has requests (Burstable, not BestEffort) unless its Webhook says more.
    owner = {"metadata": {"name": "orders", "namespace": "shop", "uid": "u-1"}}
    plain = parse_webhook_spec({"url": "https://shop.example.com/hook", "events": ["open"]})
    (sender,) = desired.deployment(owner, plain, "h", config)["spec"]["template"]["spec"]["containers"]
    assert sender["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"memory": "256Mi"},
    }
    small = parse_webhook_spec(
        {
            "url": "https://shop.example.com/hook",
            "events": ["open"],
            "sender": {"resources": {"limits": {"memory": "32Mi"}}},
        }
    )
    (sender,) = desired.deployment(owner, small, "h", config)["spec"]["template"]["spec"]["containers"]
    # The Webhook's own limit wins; the default memory request above it is left out (the API server
    # would refuse a request over the limit); the default CPU request stays.
    assert sender["resources"] == {"requests": {"cpu": "50m"}, "limits": {"memory": "32Mi"}}
    big = parse_webhook_spec(
        {
            "url": "https://shop.example.com/hook",
            "events": ["open"],
            "sender": {"resources": {"requests": {"memory": "1Gi"}}},
        }
    )
    (sender,) = desired.deployment(owner, big, "h", config)["spec"]["template"]["spec"]["containers"]
    assert sender["resources"] == {"requests": {"cpu": "50m", "memory": "1Gi"}}


def test_the_log_format_reaches_every_process():
    for scenario, expected in (("defaults", "text"), ("sender-pod", "json")):
        for workload in (operator(scenario), ingest(scenario), *pools(scenario)):
            assert env(workload)["HOOKLINE_LOG_FORMAT"] == expected, workload["metadata"]["name"]
    assert operator_config_of("sender-pod").log_format == "json"


def test_alerts_can_be_switched_off_and_regraded_one_by_one():
    (rule,) = objects("alerts-tuned", "PrometheusRule")
    by_name = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "HooklineWebhookUnverified" not in by_name
    assert by_name["HooklineDeadLetters"]["labels"]["severity"] == "critical"
    assert by_name["HooklineDeadLetterFailures"]["labels"]["severity"] == "warning"
    # Every alert the chart has is in the values map, so each can be switched.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    (everything,) = objects("monitoring", "PrometheusRule")
    names = {r["alert"] for g in everything["spec"]["groups"] for r in g["rules"]}
    assert names == set(values["monitoring"]["alerts"])
    for name, rendered in (
        (n, r) for g in everything["spec"]["groups"] for r in g["rules"] for n in [r["alert"]]
    ):
        assert rendered["labels"]["severity"] == values["monitoring"]["alerts"][name]["severity"]


def test_every_alert_off_renders_no_rule_at_all():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    flags = [
        f
        for name in values["monitoring"]["alerts"]
        for f in ("--set", f"monitoring.alerts.{name}.enabled=false")
    ]
    out = helm("template", RELEASE, str(CHART), "--set", "monitoring.enabled=true", *flags).stdout
    assert "kind: PrometheusRule" not in out
    assert "kind: ServiceMonitor" in out


def test_relabelings_reach_every_monitor():
    relabel = [{"targetLabel": "cluster", "replacement": "eu-1"}]
    drop = [{"sourceLabels": ["__name__"], "regex": "go_.*", "action": "drop"}]
    endpoints = [e for m in objects("alerts-tuned", "ServiceMonitor") for e in m["spec"]["endpoints"]]
    endpoints += [e for m in objects("alerts-tuned", "PodMonitor") for e in m["spec"]["podMetricsEndpoints"]]
    assert len(endpoints) == 4  # operator, ingest, senders, pools
    for endpoint in endpoints:
        assert endpoint["relabelings"] == relabel
        assert endpoint["metricRelabelings"] == drop
    for monitor in objects("monitoring", "ServiceMonitor") + objects("monitoring", "PodMonitor"):
        for endpoint in monitor["spec"].get("endpoints", []) + monitor["spec"].get("podMetricsEndpoints", []):
            assert "relabelings" not in endpoint and "metricRelabelings" not in endpoint
