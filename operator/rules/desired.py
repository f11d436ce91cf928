"""What should exist for a verified Webhook: its sender ConfigMap and Deployment, and its labels. Pure.

The sender config is rendered into the ConfigMap and its hash goes on the pod template, so any
config change rolls the pods. Each object also carries the hash of everything the operator wants in
it (`hookline.io/desired-hash`), so a field the operator stops setting (signing removed, resources
dropped) is noticed and the object is replaced, not merged into (`replacement`). The signing Secret
is mounted by reference: the operator never reads it for senders. Pods run as hardened as Kubernetes
allows (non-root, read-only root, no capabilities, RuntimeDefault seccomp), and do not get a
service-account token they do not need. What the installation adds to every sender pod (pull
secrets, scheduling, labels, default resources: chart values sender.*) comes from
``config.sender_pod`` (rules/senderpod.py); the Webhook's own settings and the operator's labels win.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import yaml

from hookline.api import (
    API_VERSION,
    COLLECTION_LABEL,
    CONFIG_HASH_ANNOTATION,
    DATABASE_LABEL,
    DESIRED_HASH_ANNOTATION,
    WEBHOOK_KIND,
    WEBHOOK_LABEL,
    WebhookSpec,
)
from hookline.api.policy import Grant
from hookline.operator.rules import natscreds, tenancy
from hookline.operator.rules.credmounts import SIGNING_DIR as SIGNING_DIR
from hookline.operator.rules.credmounts import credential_mounts
from hookline.operator.settings import OperatorConfig
from hookline.sender.model.config import SenderConfig, parse_sender_config
from hookline.sender.observe.logs import LOG_FORMAT_ENV

SENDER_PORT = 8081
CONFIG_DIR = "/etc/hookline"
CONFIG_FILE = "sender.yaml"
MANAGED_BY = "hookline-operator"
SELECTOR_LABELS = {
    "app.kubernetes.io/name": "hookline",
    "app.kubernetes.io/component": "sender",
    "app.kubernetes.io/managed-by": MANAGED_BY,
}


def sender_name(webhook: str) -> str:
    """``<webhook>-sender``: the Deployment and ConfigMap of one Webhook."""
    return f"{webhook}-sender"


def scope_labels(spec: WebhookSpec) -> dict[str, str | None]:
    """A merge patch for the Webhook's own labels; None removes a label whose field is unset."""
    return {DATABASE_LABEL: spec.database, COLLECTION_LABEL: spec.collection}


def labels_patch(current: Mapping[str, str] | None, spec: WebhookSpec) -> dict[str, str | None]:
    """Only the scope labels that differ from ``current`` (empty when they are in step)."""
    current = current or {}
    return {k: v for k, v in scope_labels(spec).items() if current.get(k) != v}


def sender_labels(webhook: str) -> dict[str, str]:
    return {**SELECTOR_LABELS, WEBHOOK_LABEL: webhook}


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner.get("kind", WEBHOOK_KIND),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def sender_config(
    namespace: str, name: str, spec: WebhookSpec, config: OperatorConfig, grant: Grant | None = None
) -> SenderConfig:
    """The config of a Webhook's sender as this installation runs it (a pool entry starts from it):
    with its namespace's grant (tenancy), the grant's extra egress and its rate ceiling."""
    networks, allow_http = tenancy.egress_of(grant, config.egress)
    spec = tenancy.within_ceiling(spec, grant)
    cfg = SenderConfig.for_webhook(
        namespace,
        name,
        spec,
        nats_url=config.sender_nats_url,
        nats_replicas=config.nats_replicas,
        listen=f"0.0.0.0:{SENDER_PORT}",
        allow_networks=networks,
        allow_http=allow_http,
        # The rate limit is split across replicas; a paused Webhook keeps its configured count.
        replicas=max(1, spec.sender.replicas),
    )
    files = credential_mounts(name, spec).config  # the mounted Secret files' paths (rules/credmounts.py)
    if config.nats_auth.enabled:  # its own NATS user, minted into a Secret (rules/natscreds.py)
        doc = cfg.to_document()
        doc["nats"] = {**doc["nats"], **natscreds.config_fields(tls=bool(config.nats_auth.ca_file))}
        return parse_sender_config({**doc, **files})
    return parse_sender_config({**cfg.to_document(), **files}) if files else cfg


def render_config(cfg: SenderConfig) -> str:
    return yaml.safe_dump(cfg.to_document(), sort_keys=True)


def config_hash(rendered: str) -> str:
    return hashlib.sha256(rendered.encode()).hexdigest()[:16]


def with_desired_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with the hash of its own content in an annotation (the annotation itself excluded)."""
    meta = obj["metadata"]
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != DESIRED_HASH_ANNOTATION}
    bare = {**obj, "metadata": {**meta, "annotations": annotations}}
    digest = hashlib.sha256(json.dumps(bare, sort_keys=True).encode()).hexdigest()[:16]
    return {**obj, "metadata": {**meta, "annotations": {**annotations, DESIRED_HASH_ANNOTATION: digest}}}


def replacement(want: Mapping[str, Any], have: Mapping[str, Any]) -> dict[str, Any]:
    """The whole object to PUT over ``have`` so that it ends up exactly as ``want``.

    Everything but metadata is ``want``'s alone (a field dropped from ``want`` disappears; the API
    server fills its defaults and keeps status). Metadata keeps what others put there (the Deployment
    controller's revision annotation, labels added by people) under ours, and ``have``'s
    resourceVersion, so a change made meanwhile makes the PUT fail with a Conflict instead of being lost.
    """
    have_meta = have.get("metadata") or {}
    want_meta = want["metadata"]
    meta = {k: v for k, v in have_meta.items() if k not in ("managedFields", "labels", "annotations")}
    meta.update(
        {k: v for k, v in want_meta.items() if k not in ("labels", "annotations")},
        labels={**(have_meta.get("labels") or {}), **(want_meta.get("labels") or {})},
        annotations={**(have_meta.get("annotations") or {}), **(want_meta.get("annotations") or {})},
    )
    return {**{k: v for k, v in want.items() if k != "metadata"}, "metadata": meta}


def config_map(owner: Mapping[str, Any], rendered: str) -> dict[str, Any]:
    meta = owner["metadata"]
    return with_desired_hash(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": sender_name(meta["name"]),
                "namespace": meta["namespace"],
                "labels": sender_labels(meta["name"]),
                "ownerReferences": [owner_reference(owner)],
            },
            "data": {CONFIG_FILE: rendered},
        }
    )


def desired_replicas(spec: WebhookSpec) -> int:
    return 0 if spec.paused else spec.sender.replicas


def deployment(
    owner: Mapping[str, Any], spec: WebhookSpec, rendered_hash: str, config: OperatorConfig
) -> dict[str, Any]:
    meta = owner["metadata"]
    name = meta["name"]
    labels = sender_labels(name)
    template = config.sender_pod
    volumes: list[dict[str, Any]] = [
        {
            "name": "config",
            "configMap": {"name": sender_name(name), "items": [{"key": CONFIG_FILE, "path": CONFIG_FILE}]},
        },
        {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    creds = credential_mounts(name, spec)  # signing keys, secret headers, spec.tls: Secret volumes
    volumes += creds.volumes
    mounts += creds.mounts
    if config.nats_auth.enabled:
        volume, mount = natscreds.pod_volume(name)
        volumes.append(volume)
        mounts.append(mount)
    probe = {"periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3}
    container: dict[str, Any] = {
        "name": "sender",
        "image": config.sender_image,
        "imagePullPolicy": template.image_pull_policy,
        "args": ["sender", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
        "ports": [{"name": "metrics", "containerPort": SENDER_PORT, "protocol": "TCP"}],
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, **probe},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, **probe},
        "resources": template.container_resources(spec.sender.resources),
        "securityContext": {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    if config.log_format != "text":
        container["env"] = [{"name": LOG_FORMAT_ENV, "value": config.log_format}]
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": int(spec.delivery.timeout_seconds) + 20,
        "containers": [container],
        "volumes": volumes,
        **template.pod_fields(),
    }
    if config.sender_service_account:
        pod_spec["serviceAccountName"] = config.sender_service_account
    return with_desired_hash(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": sender_name(name),
                "namespace": meta["namespace"],
                "labels": labels,
                "ownerReferences": [owner_reference(owner)],
            },
            "spec": {
                "replicas": desired_replicas(spec),
                "revisionHistoryLimit": 3,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {
                        "labels": {**template.pod_labels, **labels},
                        "annotations": {**template.pod_annotations, CONFIG_HASH_ANNOTATION: rendered_hash},
                    },
                    "spec": pod_spec,
                },
            },
        }
    )


def differs(desired: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    """Whether ``actual`` lacks any part of ``desired`` (fields the API server adds are ignored)."""
    if isinstance(desired, Mapping):
        if not isinstance(actual, Mapping):
            return True
        return any(k not in actual or differs(v, actual[k]) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(desired) != len(actual):
            return True
        return any(differs(d, a) for d, a in zip(desired, actual, strict=True))
    return json.dumps(desired) != json.dumps(actual)
