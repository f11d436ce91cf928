"""Tenancy decisions of the operator: what a Webhook's namespace is granted and what that means for
its sender. Pure (the grant itself is hookline/api/policy.py's; the facts come from Kopf's indexes of
WebhookPolicies, Namespaces and Webhooks, handlers/grants.py).

A Webhook outside its grant (or beyond its namespace's maxWebhooks, newest first) is stopped like a
paused one: its sender Deployment at 0 replicas or its pool engine removed, its consumer kept, so it
resumes where it stopped once granted; Ready says ScopeNotAllowed with the field and the missing grant.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hookline.api import WebhookSpec
from hookline.api.policy import (
    Grant,
    WebhookPolicySpec,
    capped_rate,
    effective_grant,
    over_limit,
    scope_problem,
)
from hookline.sender.transport.egress import EgressPolicy


@dataclass(frozen=True)
class Verdict:
    """What the grant decides for one Webhook: ``problem`` None lets it run (within ``grant``'s egress
    and rate ceiling); ``digest`` changes whenever anything the reconcile derives from it changes."""

    grant: Grant
    problem: str | None
    digest: str


def grant_of(
    namespace: str, labels: Mapping[str, str], policies: Iterable[tuple[str, WebhookPolicySpec]]
) -> Grant:
    return effective_grant(namespace, labels, policies)


def names_by_age(entries: Iterable[tuple[str, str]]) -> list[str]:
    """A namespace's Webhook names, oldest first: entries are (creationTimestamp, name)."""
    return [name for _, name in sorted(entries)]


def standing(grant: Grant, by_age: list[str], name: str) -> str:
    """The digest of a Webhook's grant and its place under the namespace's limit."""
    limit = over_limit(by_age, name, grant)
    text = f"{grant.digest()}/{'over' if limit is not None else 'in'}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def verdict(
    spec: WebhookSpec, namespace: str, name: str, grant: Grant, by_age: list[str], *, floor_http: bool
) -> Verdict:
    """Whether the Webhook may run, and why not, in words naming the field and the missing grant."""
    digest = standing(grant, by_age, name)
    found = scope_problem(spec, grant, namespace, floor_http=floor_http, check_rate=False)
    if found is not None:
        return Verdict(grant, f"{found}; its sender is stopped, events are kept", digest)
    limit = over_limit(by_age, name, grant)
    if limit is not None:
        message = (
            f"namespace {namespace!r} may have {limit} Webhooks (WebhookPolicy "
            f"{', '.join(grant.policies)} maxWebhooks) and this one is newer than the first {limit}; "
            "delete another Webhook or ask for a higher maxWebhooks; its sender is stopped, events are kept"
        )
        return Verdict(grant, message, digest)
    return Verdict(grant, None, digest)


def within_ceiling(spec: WebhookSpec, grant: Grant | None) -> WebhookSpec:
    """The spec its sender runs: maxRequestsPerSecond at most the grant's ceiling."""
    if grant is None:
        return spec
    rate = capped_rate(spec, grant)
    if rate == spec.delivery.max_requests_per_second:
        return spec
    return spec.model_copy(
        update={"delivery": spec.delivery.model_copy(update={"max_requests_per_second": rate})}
    )


def egress_of(grant: Grant | None, floor: EgressPolicy) -> tuple[list[str], bool]:
    """The networks and http a Webhook's sender may use: the installation's floor plus its grant's."""
    networks = [str(n) for n in floor.allow_networks]
    if grant is None:
        return networks, floor.allow_http
    networks += [n for n in grant.allow_networks if n not in networks]
    return networks, floor.allow_http or grant.allow_http


def policy_counts(
    policies: Iterable[tuple[str, WebhookPolicySpec]],
    namespaces: Mapping[str, Mapping[str, str]],
    webhooks_per_namespace: Mapping[str, int],
) -> dict[str, tuple[int, int]]:
    """Per policy: (namespaces with Webhooks it selects, Webhooks in them): its status, cheaply."""
    out: dict[str, tuple[int, int]] = {}
    for name, spec in policies:
        selected = [ns for ns in webhooks_per_namespace if spec.selects(ns, namespaces.get(ns, {}))]
        out[name] = (len(selected), sum(webhooks_per_namespace[ns] for ns in selected))
    return out
