"""Tenancy from Kopf's side: indexes of WebhookPolicies, Namespaces (their labels) and Webhooks (per
namespace, by age), and the one question every reconcile asks, `verdict_for`: may this Webhook run,
within what egress and rate? The decisions are rules/tenancy.py's.

Kopf fills every index from a full list before it runs any handler, so an operator that starts never
sees a Webhook before the grants: a restart does not stop what is granted. A change of a grant (a
policy, or a namespace's labels, or a Webhook gone under maxWebhooks) wakes loops/grants.py, which
bumps the annotation ``tenancy.hookline.io/grant`` of each Webhook whose standing changed; that change
runs its reconcile (main.py registers it), which stops or starts its sender.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import kopf

from hookline.api import SpecError, WebhookSpec
from hookline.api.policy import Grant, WebhookPolicySpec, parse_policy_spec
from hookline.operator.rules import tenancy
from hookline.operator.rules.tenancy import Verdict
from hookline.operator.runtime import Runtime, runtime_of
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.egress import EgressPolicy

log = logging.getLogger(__name__)

POLICIES = "tenancy_policies"
NAMESPACES = "tenancy_namespaces"
WEBHOOKS = "tenancy_webhooks"


def policy_indexed(name: str, spec: Mapping[str, Any], **_: Any) -> dict[str, WebhookPolicySpec]:
    """A WebhookPolicy by name, parsed once (an invalid one grants nothing, and says so in the log)."""
    try:
        return {name: parse_policy_spec(dict(spec))}
    except SpecError as exc:
        log.warning("WebhookPolicy %s grants nothing: %s", name, exc)
        return {}


def namespace_indexed(name: str, labels: Mapping[str, str], **_: Any) -> dict[str, dict[str, str]]:
    return {name: dict(labels)}


def webhook_indexed(
    namespace: str, name: str, meta: Mapping[str, Any], **_: Any
) -> dict[str, tuple[str, str]]:
    """A namespace's Webhooks with their creation times (maxWebhooks keeps the oldest running)."""
    return {namespace: (str(meta.get("creationTimestamp") or ""), name)}


def remember(rt: Runtime, kwargs: Mapping[str, Any]) -> None:
    """Keep Kopf's live indexes for the grants loop (the same objects on every call)."""
    for name in (POLICIES, NAMESPACES, WEBHOOKS):
        if name in kwargs:
            rt.tenancy.indexes[name] = kwargs[name]


def policies(rt: Runtime) -> list[tuple[str, WebhookPolicySpec]]:
    index = rt.tenancy.indexes.get(POLICIES) or {}
    return [(name, spec) for name in index for spec in index[name]]


def labels_of(rt: Runtime, namespace: str) -> dict[str, str]:
    index = rt.tenancy.indexes.get(NAMESPACES) or {}
    return next(iter(index.get(namespace, ())), {})


def webhooks_in(rt: Runtime, namespace: str) -> list[str]:
    index = rt.tenancy.indexes.get(WEBHOOKS) or {}
    return tenancy.names_by_age(index.get(namespace, ()))


def grant_of(rt: Runtime, namespace: str) -> Grant:
    return tenancy.grant_of(namespace, labels_of(rt, namespace), policies(rt))


def verdict_for(
    rt: Runtime, namespace: str, name: str, spec: WebhookSpec, kwargs: Mapping[str, Any]
) -> Verdict | None:
    """The grant's verdict on a Webhook (None: enforcement is off), remembered for Ready and the loop."""
    if not rt.config.tenancy_enforce:
        return None
    remember(rt, kwargs)
    key = (namespace, name)
    grant = grant_of(rt, namespace)
    by_age = webhooks_in(rt, namespace) if grant.max_webhooks is not None else []  # sorted only if needed
    found = tenancy.verdict(spec, namespace, name, grant, by_age, floor_http=rt.config.egress.allow_http)
    if key not in rt.tenancy.digests:
        rt.tenancy.dirty.set()  # a new Webhook: the policies' counts change
    rt.tenancy.digests[key] = found.digest
    if found.problem is None:
        rt.tenancy.stopped.pop(key, None)
    else:
        rt.tenancy.stopped[key] = found.problem
    return found


@contextlib.asynccontextmanager
async def grant_client(rt: Runtime, namespace: str) -> AsyncIterator[SafeHTTPClient]:
    """The outbound client for a namespace's WebhookTests: the shared one, or one that also reaches
    what the namespace's grant adds to the installation's egress (as its senders do)."""
    if not rt.config.tenancy_enforce:
        yield rt.http
        return
    networks, allow_http = tenancy.egress_of(grant_of(rt, namespace), rt.http.policy)
    policy = EgressPolicy(networks, allow_http)
    if policy == rt.http.policy:
        yield rt.http
        return
    client = await SafeHTTPClient(policy, max_response_bytes=rt.http.max_response_bytes).start()
    try:
        yield client
    finally:
        await client.close()


async def grant_changed(memo: Any, **kwargs: Any) -> None:
    """A WebhookPolicy or a Namespace changed: the grants loop looks at every Webhook's standing."""
    rt = runtime_of(memo)
    remember(rt, kwargs)
    rt.tenancy.dirty.set()


def register(
    registry: kopf.OperatorRegistry, webhooks: tuple[str, str, str], policies_: tuple[str, str, str]
) -> None:
    """The indexes and the handlers that wake the grants loop (only when enforcement is on)."""
    kopf.index(*policies_, id=POLICIES, registry=registry)(policy_indexed)
    kopf.index("", "v1", "namespaces", id=NAMESPACES, registry=registry)(namespace_indexed)
    kopf.index(*webhooks, id=WEBHOOKS, registry=registry)(webhook_indexed)
    kopf.on.event(*policies_, id="tenancy_policy", registry=registry)(grant_changed)
    kopf.on.event("", "v1", "namespaces", id="tenancy_namespace", registry=registry)(grant_changed)
