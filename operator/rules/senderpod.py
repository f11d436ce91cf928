"""What the installation adds to every dedicated sender pod: the chart's `sender` values. Pure.

A cluster may need pull secrets, a node pool, tolerations, a priority class, cost labels or a
sidecar annotation on every pod; the operator builds the sender Deployments, so it applies them
(rules/desired.py). The chart passes them as JSON in HOOKLINE_SENDER_POD_TEMPLATE; a key the model
does not know is an error at start, not a field silently dropped. Unset parts add nothing, so an
installation without them keeps the exact Deployments (and desired hashes) it had.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from hookline.api import CamelModel

POD_TEMPLATE_ENV = "HOOKLINE_SENDER_POD_TEMPLATE"
# The operator's own pod labels (selector, component, Webhook): an extra label may not replace them.
RESERVED_LABEL_PREFIXES = ("app.kubernetes.io/", "hookline.io/")


class LocalObjectReference(CamelModel):
    name: str = Field(min_length=1)


class SenderPodTemplate(CamelModel):
    """The pod-level settings of every dedicated sender (chart values `sender.*`)."""

    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    # Secrets of these names must exist in each Webhook's namespace (a pod reads its own namespace's).
    image_pull_secrets: tuple[LocalObjectReference, ...] = ()
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    affinity: dict[str, Any] = Field(default_factory=dict)
    priority_class_name: str = ""
    pod_labels: dict[str, str] = Field(default_factory=dict)
    pod_annotations: dict[str, str] = Field(default_factory=dict)
    # Requests and limits for a Webhook whose spec.sender.resources leaves them out (the spec wins per key).
    resources: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("pod_labels")
    @classmethod
    def _own_labels_stay(cls, labels: dict[str, str]) -> dict[str, str]:
        taken = sorted(k for k in labels if k.startswith(RESERVED_LABEL_PREFIXES))
        if taken:
            owned = "labels under app.kubernetes.io/ and hookline.io/ are the operator's"
            raise ValueError(f"{', '.join(taken)}: {owned}")
        return labels

    @field_validator("resources")
    @classmethod
    def _requests_and_limits(cls, resources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        unknown = sorted(set(resources) - {"requests", "limits"})
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: resources has requests and limits only")
        return resources

    def container_resources(self, spec_resources: dict[str, Any]) -> dict[str, Any]:
        """The Webhook's spec.sender.resources over these defaults, per key (requests.cpu, ...). A
        default that would contradict the Webhook's own values is left out: a default request above
        the Webhook's limit, or a default limit below its request (the API server refuses a request
        over its limit; Kubernetes then takes the limit as the request)."""
        merged: dict[str, Any] = dict(spec_resources)
        own_requests = spec_resources.get("requests") or {}
        own_limits = spec_resources.get("limits") or {}
        for part, defaults in self.resources.items():
            if not defaults:
                continue
            kept = {}
            for name, value in defaults.items():
                if part == "requests" and _exceeds(value, own_limits.get(name)):
                    continue
                if part == "limits" and _exceeds(own_requests.get(name), value):
                    continue
                kept[name] = value
            combined = {**kept, **(spec_resources.get(part) or {})}
            if combined:
                merged[part] = combined
        return merged

    def pod_fields(self) -> dict[str, Any]:
        """Pod spec fields for what is set (nothing for what is not)."""
        fields: dict[str, Any] = {}
        if self.image_pull_secrets:
            fields["imagePullSecrets"] = [{"name": s.name} for s in self.image_pull_secrets]
        if self.node_selector:
            fields["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            fields["tolerations"] = [dict(t) for t in self.tolerations]
        if self.affinity:
            fields["affinity"] = dict(self.affinity)
        if self.priority_class_name:
            fields["priorityClassName"] = self.priority_class_name
        return fields


_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY = re.compile(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(n|u|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity (``50m``, ``64Mi``, ``1``) as a number, or None when it is not one."""
    match = _QUANTITY.fullmatch(str(value).strip()) if value is not None else None
    if match is None:
        return None
    try:
        return Decimal(match.group(1)) * _SUFFIXES[match.group(2) or ""]
    except InvalidOperation:
        return None


def _exceeds(first: Any, second: Any) -> bool:
    """Whether quantity `first` is more than `second` (False when either is absent or unreadable)."""
    a, b = quantity(first), quantity(second)
    return a is not None and b is not None and a > b


def parse_pod_template(text: str) -> SenderPodTemplate:
    """HOOKLINE_SENDER_POD_TEMPLATE (JSON, the chart's `sender` values); empty: nothing added."""
    if not text.strip():
        return SenderPodTemplate()
    try:
        return SenderPodTemplate.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'the value'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"{POD_TEMPLATE_ENV} (chart values sender.*): {problems}") from None
