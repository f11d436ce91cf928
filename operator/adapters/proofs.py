"""Checking ownership proofs (the operator's I/O for them) and what the operator remembers of them.

``check_webhook`` and ``check_domain`` make the one outbound check of a proof: GETs through the
SSRF-safe client for a file, one TXT lookup through the configured resolver for a record. The reconcile
(a Webhook's first proof), the re-check loop and `hookline verify` all use them, so each says the same
thing about the same proof.

``OwnershipMemory`` is what handlers and the re-check loop share (Runtime.ownership): the proofs the
loop keeps checking (written by webhook_seen and domain_seen from each object's status, and by the
loop after its own writes), each Webhook's host and how it is proven (for the domain side), and the
domains as last seen.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from hookline.api.domain import WebhookDomainSpec
from hookline.operator.adapters import kubeapi
from hookline.operator.rules.domains import DomainEntry, WebhookProofFacts
from hookline.operator.rules.recheck import Proof, ProofKey
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.dnsproof import TxtResolver, challenge_record, check_dns, txt_result
from hookline.sender.transport.ownership import (
    OwnershipResult,
    check_file_at,
    check_ownership,
    domain_file_locations,
    verification_file_name,
)

log = logging.getLogger(__name__)


async def check_webhook(
    http: SafeHTTPClient, dns: TxtResolver, url: str, token: str, method: str, *, check_timeout: float
) -> OwnershipResult:
    """A Webhook's own proof: the file beside spec.url or at its root (File), or its TXT record (DNS)."""
    if method == "DNS":
        return await check_dns(dns, urlsplit(url).hostname or "", token)
    return await check_ownership(http, url, token, per_location_timeout=check_timeout)


async def check_domain(
    http: SafeHTTPClient,
    dns: TxtResolver,
    spec: WebhookDomainSpec,
    token: str,
    *,
    allow_http: bool,
    check_timeout: float,
) -> OwnershipResult:
    """A WebhookDomain's proof: ``_hookline-challenge.<domain>`` (DNS) or the file at its web root."""
    if spec.method == "DNS":
        return txt_result(await dns.txt(challenge_record(spec.domain)), token)
    locations = domain_file_locations(spec.domain, verification_file_name(token), allow_http=allow_http)
    return await check_file_at(http, locations, token, per_location_timeout=check_timeout)


async def post_event(
    api: kubeapi.KubeAPI, ref: Mapping[str, Any], kind: str, reason: str, message: str
) -> None:
    """A Kubernetes Event about ``ref`` from a background loop (kopf.event works only inside Kopf's
    handlers), shaped as Kopf posts its own; a failure is logged, never raised."""
    meta = ref["metadata"]
    now = datetime.now(UTC).isoformat()
    body = {
        "metadata": {"namespace": meta["namespace"], "generateName": "hookline-event-"},
        "action": "Verify", "type": kind, "reason": reason, "message": message[:1024],
        "reportingComponent": "hookline-operator", "reportingInstance": "hookline-operator",
        "source": {"component": "hookline-operator"},
        "involvedObject": {"apiVersion": ref["apiVersion"], "kind": ref["kind"], "name": meta["name"],
                           "namespace": meta["namespace"], "uid": meta.get("uid") or ""},
        "firstTimestamp": now, "lastTimestamp": now, "eventTime": now,
    }  # fmt: skip
    try:
        await api.create(kubeapi.path("", "v1", "events", meta["namespace"]), body)
    except kubeapi.APIError as exc:
        log.warning("Event %s about %s/%s not posted: %s", reason, meta["namespace"], meta["name"], exc)


@dataclass
class DomainSeen:
    """A WebhookDomain as its last event showed it (the re-check loop writes its status from this)."""

    uid: str
    spec: WebhookDomainSpec
    status: Mapping[str, Any]
    entry: DomainEntry


@dataclass
class OwnershipMemory:
    """Proofs being kept up, Webhooks' hosts and proofs, and the domains (see the module docstring)."""

    proofs: dict[ProofKey, Proof] = field(default_factory=dict)
    webhooks: dict[tuple[str, str], WebhookProofFacts] = field(default_factory=dict)
    domains: dict[tuple[str, str], DomainSeen] = field(default_factory=dict)
    lapsed: dict[ProofKey, bool] = field(default_factory=dict)

    def in_grace(self, kind: str) -> int:
        """Proofs of ``kind`` whose re-checks fail, not lapsed yet (a gauge, read at scrape time)."""
        proofs = list(self.proofs.values())
        return sum(1 for p in proofs if p.kind == kind and p.failing_since is not None and not p.lapsed)

    def lapsed_count(self, kind: str) -> int:
        return sum(1 for (k, _, _), lapsed in list(self.lapsed.items()) if k == kind and lapsed)

    def forget_webhook(self, namespace: str, name: str) -> None:
        self.proofs.pop(("Webhook", namespace, name), None)
        self.lapsed.pop(("Webhook", namespace, name), None)
        self.webhooks.pop((namespace, name), None)
