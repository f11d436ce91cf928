"""WebhookDomain handlers, the index of domains by namespace, and the proofs the re-check loop keeps.

- ``index_domain`` (a Kopf index, ``DOMAIN_INDEX``): each namespace's WebhookDomains as
  ``rules/domains.DomainEntry``. Kopf fills it before any handler runs, so a Webhook's reconcile right
  after an operator restart still sees the domain that proves it (and does not lapse it).
- ``domain_reconcile`` (create, resume, spec change): the domain's token, what to publish, Pending.
  It checks nothing itself: the re-check loop (loops/recheck.py) makes every check of a domain, the
  first one within a tick.
- ``domain_seen`` (every event): keeps the domain and its proof in ``Runtime.ownership``; when the
  domain's proof changed (verified, lapsed, deleted), the Webhooks it covers or covered are
  re-evaluated at once (``rules/domains.affected``, ``poke``).
- ``webhook_proof_seen`` (called by webhook_seen on every Webhook event): the Webhook's own proof for
  the re-check loop, and its host for the domain side.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from hookline.api import API_VERSION, GROUP, VERSION, Condition, ConditionType, SpecError, WebhookSpec
from hookline.api.domain import DOMAIN_KIND, DOMAIN_PLURAL, parse_domain_spec
from hookline.durations import parse_duration
from hookline.operator.adapters import kubeapi
from hookline.operator.adapters.proofs import DomainSeen
from hookline.operator.handlers.events import write_conditions
from hookline.operator.rules import domains, verification
from hookline.operator.rules.domains import PROOF_CHANGED_ANNOTATION, DomainEntry, WebhookProofFacts
from hookline.operator.rules.recheck import Proof, epoch_of
from hookline.operator.runtime import Runtime, runtime_of
from hookline.timestamps import rfc3339

log = logging.getLogger(__name__)

DOMAINS = (GROUP, VERSION, DOMAIN_PLURAL)
DOMAIN_INDEX = "webhook_domains"  # the keyword Kopf passes the index under


def domain_path(namespace: str, name: str, sub: str | None = None) -> str:
    return kubeapi.path(GROUP, VERSION, DOMAIN_PLURAL, namespace, name, sub)


def domain_ref(namespace: str, name: str, uid: str) -> dict[str, Any]:
    """Enough of a WebhookDomain for kopf.event."""
    return {
        "apiVersion": API_VERSION,
        "kind": DOMAIN_KIND,
        "metadata": {"namespace": namespace, "name": name, "uid": uid},
    }


# --- the index ------------------------------------------------------------------------------------------


def index_domain(
    namespace: str, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[str, DomainEntry] | None:
    entry = domains.index_entry(name, dict(spec), dict(status))
    return None if entry is None else {namespace: entry}


def domains_in(index: Any, namespace: str) -> list[DomainEntry]:
    """The namespace's domains from the Kopf index (none when there is no index: dev mode, tests)."""
    if index is None:
        return []
    return list(index.get(namespace, ()))


# --- WebhookDomain: token and instructions ----------------------------------------------------------------


async def domain_reconcile(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    patch: kopf.Patch,
    memo: Any,
    **_: Any,
) -> None:
    rt = runtime_of(memo)
    generation = meta.get("generation")
    patch.status["observedGeneration"] = generation
    try:
        parsed = parse_domain_spec(dict(spec))
    except SpecError as exc:
        invalid = Condition(
            ConditionType.VERIFIED, "False", "InvalidSpec", f"{exc}; fix the WebhookDomain's spec"
        )
        write_conditions(body, status, patch, [invalid], generation)
        raise kopf.PermanentError(f"invalid spec: {exc}") from None
    token = verification.existing_token({"verification": {"content": status.get("token")}}) or rt.new_token()
    info = domains.instructions(token, parsed, allow_http=rt.config.egress.allow_http)
    for key, value in info.items():
        if status.get(key) != value:
            patch.status[key] = value
    if domains.is_verified(parsed, status):
        return
    if status.get("verifiedFor") not in (None, domains.proof_key(parsed)):
        # Another domain or method than the one proven: a proof of its own, checked at once.
        for key in ("verifiedAt", "verifiedFor", "lastCheckedAt", "failingSince", "lapsedAt", "recordsFound"):
            patch.status[key] = None
        patch.status["checks"] = 0
    if not status.get("lapsedAt"):
        write_conditions(body, status, patch, [domains.pending_condition(token, parsed)], generation)


# --- WebhookDomain: every event ----------------------------------------------------------------------------


async def domain_seen(
    event: Mapping[str, Any], body: kopf.Body, meta: kopf.Meta, memo: Any, **_: Any
) -> None:
    rt = runtime_of(memo)
    namespace, name = meta["namespace"], meta["name"]
    key = (namespace, name)
    before = rt.ownership.domains.get(key)
    after: DomainSeen | None = None
    proof_key = ("WebhookDomain", namespace, name)
    if event.get("type") != "DELETED" and not meta.get("deletionTimestamp"):
        after = _domain_seen(rt, dict(body.get("spec") or {}), dict(body.get("status") or {}), meta)
    if after is None:
        rt.ownership.domains.pop(key, None)
        rt.ownership.proofs.pop(proof_key, None)
        rt.ownership.lapsed.pop(proof_key, None)
    else:
        rt.ownership.domains[key] = after
    old, new = (before.entry if before else None), (after.entry if after else None)
    if old != new:
        await poke(
            rt, domains.affected(rt.ownership.webhooks, namespace, old, new), f"WebhookDomain {name} changed"
        )


def _domain_seen(
    rt: Runtime, spec: dict[str, Any], status: dict[str, Any], meta: Mapping[str, Any]
) -> DomainSeen | None:
    try:
        parsed = parse_domain_spec(spec)
    except SpecError:
        return None
    entry = domains.index_entry(meta["name"], spec, status)
    assert entry is not None
    token = status.get("token")
    proof_key = ("WebhookDomain", meta["namespace"], meta["name"])
    if isinstance(token, str) and token:
        interval = (
            parse_duration(parsed.recheck_interval) if parsed.recheck_interval else rt.config.recheck.interval
        )
        rt.ownership.proofs[proof_key] = Proof(
            "WebhookDomain", meta["namespace"], meta["name"], str(meta.get("uid") or ""), parsed.method,
            parsed.domain, token, interval, epoch_of(status.get("lastCheckedAt")) or 0.0,
            verified=entry.verified or bool(status.get("lapsedAt")),
            failing_since=epoch_of(status.get("failingSince")), lapsed=bool(status.get("lapsedAt")),
            checks=int(status.get("checks") or 0),
        )  # fmt: skip
    rt.ownership.lapsed[proof_key] = bool(status.get("lapsedAt"))
    return DomainSeen(str(meta.get("uid") or ""), parsed, status, entry)


async def poke(rt: Runtime, webhooks: Iterable[tuple[str, str]], why: str) -> None:
    """Have Kopf reconcile these Webhooks now (their proof changed outside their own reconcile)."""
    stamp = rfc3339(time.time(), milliseconds=True)
    for namespace, name in webhooks:
        body = {"metadata": {"annotations": {PROOF_CHANGED_ANNOTATION: stamp}}}
        try:
            await rt.api.patch(kubeapi.webhook(namespace, name), body)
        except kubeapi.APIError as exc:
            log.warning("Webhook %s/%s not re-evaluated after %s: %s", namespace, name, why, exc)


# --- Webhooks: their own proofs, for the re-check loop ------------------------------------------------


def webhook_proof_seen(
    rt: Runtime, namespace: str, name: str, uid: str, spec: WebhookSpec, status: Mapping[str, Any]
) -> None:
    """Keep a Webhook's host and proof as its status shows them (called on every Webhook event)."""
    found = dict(status.get("verification") or {})
    verified = verification.is_verified_for(status, spec.url)
    by_domain = str(found.get("record")) if verified and found.get("method") == "Domain" else None
    rt.ownership.webhooks[(namespace, name)] = WebhookProofFacts(spec.url, verified, by_domain)
    key = ("Webhook", namespace, name)
    rt.ownership.lapsed[key] = bool(found.get("lapsedAt"))
    token = found.get("content")
    if not verified or by_domain is not None or not isinstance(token, str):
        rt.ownership.proofs.pop(key, None)  # pending, lapsed (the reconcile checks) or a domain's
        return
    interval = rt.config.recheck.interval
    if spec.verification.recheck_interval:
        interval = parse_duration(spec.verification.recheck_interval)
    last = epoch_of(found.get("lastCheckedAt")) or epoch_of(found.get("verifiedAt")) or time.time()
    method = "DNS" if found.get("method") == "DNS" else "File"
    rt.ownership.proofs[key] = Proof(
        "Webhook", namespace, name, uid, method, spec.url, token, interval, last, verified=True,
        failing_since=epoch_of(found.get("failingSince")),
    )  # fmt: skip
