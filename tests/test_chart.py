"""The Helm chart, rendered by the real helm binary and checked against the Kubernetes schemas.

Each scenario switches one option; every scenario must produce valid, hardened, least-privilege objects
whose Services, monitors and Ingress actually point at the pods and ports that exist.
"""

from __future__ import annotations

import base64
import functools
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from hookline.sender.natsserver import find_nats_server

ROOT = Path(__file__).resolve().parent.parent
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

SCENARIOS: dict[str, list[str]] = {
    "defaults": [],
    "external-nats": ["--set", f"nats.url={EXTERNAL_NATS}"],
    "stream-limit": ["--set", "nats.streamMaxBytes=1073741824"],
    "nats-cluster": [
        "--set",
        f"nats.url={EXTERNAL_NATS}",
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
    "crds-off": ["--set", "crds.install=false"],
    "existing-token": ["--set", "ingest.auth.existingSecret=producer-token"],
    "auth-off": ["--set", "ingest.auth.enabled=false"],
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
_ENDPOINT = _strict(
    {"port": _STRING, "path": _STRING, "interval": _DURATION, "honorLabels": {"type": "boolean"}}, ["port"]
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
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{doc['kind']} {meta['name']} invalid for Kubernetes {version}: {error}")


def test_chart_installs_on_oldest_supported_kubernetes():
    helm("template", RELEASE, str(CHART), "--kube-version", KUBE_VERSIONS[0])
    too_old = helm("template", RELEASE, str(CHART), "--kube-version", "1.27.0", check=False)
    assert too_old.returncode != 0
    assert "kubeVersion" in too_old.stderr or "incompatible" in too_old.stderr


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--set", "operater.resources.limits.memory=1Gi"], "operater"),
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


def test_operator_cluster_role_grants_exactly_what_the_operator_needs():
    (role,) = objects("defaults", "ClusterRole")
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
        | grants("apps", ["deployments"], ["get", "list", "watch", "create", "patch", "update", "delete"])
        | grants("", ["configmaps"], ["get", "list", "watch", "create", "patch", "update", "delete"])
        | grants("", ["secrets"], ["get"])
        | grants("", ["events"], ["create", "patch"])
        | grants("events.k8s.io", ["events"], ["create", "patch"])
        | grants("apiextensions.k8s.io", ["customresourcedefinitions"], ["get", "list", "watch"])
        | grants("", ["namespaces"], ["get", "list", "watch"])
    )
    assert granted == expected
    (binding,) = objects("defaults", "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (subject,) = binding["subjects"]
    sa = one("defaults", "ServiceAccount", subject["name"])
    assert sa["metadata"]["namespace"] == subject["namespace"] == NAMESPACE
    assert operator("defaults")["spec"]["template"]["spec"]["serviceAccountName"] == subject["name"]


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


def test_only_hookline_pods_may_reach_nats():
    policy = one("defaults", "NetworkPolicy", "hk-hookline-nats")
    nats = one("defaults", "StatefulSet", "hk-hookline-nats")
    assert matches(
        policy["spec"]["podSelector"]["matchLabels"], nats["spec"]["template"]["metadata"]["labels"]
    )
    client_rule = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "client")
    (peer,) = client_rule["from"]
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "hookline"}
    for workload in (operator("defaults"), ingest("defaults")):
        assert matches(peer["podSelector"]["matchLabels"], workload["spec"]["template"]["metadata"]["labels"])
    assert not objects("no-persistence", "NetworkPolicy")


# --- operator ---------------------------------------------------------------------------------------


def test_operator_runs_once_and_exposes_health_and_metrics():
    deployment = operator("defaults")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    c = container(deployment)
    assert c["args"] == ["operator"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    service = one("defaults", "Service", "hk-hookline-operator-metrics")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]


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


def test_external_nats_replaces_the_embedded_server():
    assert not objects("external-nats", "StatefulSet")
    assert not [s for s in objects("external-nats", "Service") if "nats" in s["metadata"]["name"]]
    assert not objects("external-nats", "NetworkPolicy")
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
    assert not objects("single-ingest", "PodDisruptionBudget")


def test_the_stream_byte_limit_is_a_chart_value_ingest_applies():
    def limit(scenario: str) -> str:
        args = container(ingest(scenario))["args"]
        return args[args.index("--stream-max-bytes") + 1]

    assert limit("defaults") == "8589934592"  # 8 GiB, below the 10Gi volume
    assert limit("stream-limit") == "1073741824"
    args = container(ingest("defaults"))["args"]
    assert args[args.index("--stream-retention") + 1] == "interest"


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
    assert not objects("existing-token", "Secret")
    assert "HOOKLINE_INGEST_TOKEN" not in env(ingest("auth-off"))
    assert not objects("auth-off", "Secret")


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
    (monitor,) = objects("monitoring", "PodMonitor")
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
    assert monitoring_kinds("monitoring-without-api") == set()
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
    assert "does not serve monitoring.coreos.com/v1" in notes("--set", "monitoring.enabled=true")
    assert "does not serve" not in notes()
