"""Verified domains (WebhookDomain): which Webhooks a domain proof covers, and what a check writes. Pure.

A WebhookDomain is proven once (TXT record or a file at its web root) and covers every Webhook of its
own namespace whose URL host is the domain, or a name below it when proven by DNS with
includeSubdomains. The reconcile of a covered Webhook asks no server anything: it reads the Kopf index
of domains by namespace (``index_entry``), so 1,000 Webhooks on 10 domains cost 10 proofs. When a
domain's proof changes (verified, lapsed, deleted), the Webhooks it covers (or covered) are
re-evaluated at once (``affected``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from hookline.api import Condition, ConditionType, VerifiedReason
from hookline.api.domain import DomainStatus, SpecError, WebhookDomainSpec, host_covered, parse_domain_spec
from hookline.operator.rules.status import find
from hookline.sender.transport.dnsproof import challenge_record
from hookline.sender.transport.ownership import OwnershipResult, domain_file_locations, verification_file_name

# Written on a Webhook to have Kopf run its reconcile again when its proof changed outside it (a domain
# verified or lapsed, its own proof lapsed in the re-check loop). Not under the hookline.io/ prefix:
# Kopf leaves its own prefix's annotations out of the diffs that start handlers.
PROOF_CHANGED_ANNOTATION = "ownership.hookline.io/proof-changed"


@dataclass(frozen=True)
class DomainEntry:
    """A WebhookDomain as the index of its namespace holds it."""

    name: str
    domain: str
    include_subdomains: bool
    verified: bool


def proof_key(spec: WebhookDomainSpec) -> str:
    """What was proven: ``<method>:<domain>`` (another spec needs a proof of its own)."""
    return f"{spec.method}:{spec.domain}"


def is_verified(spec: WebhookDomainSpec, status: Mapping[str, Any]) -> bool:
    """The domain's proof holds for its current spec and has not lapsed."""
    return status.get("verifiedFor") == proof_key(spec) and not status.get("lapsedAt")


def index_entry(name: str, spec: Mapping[str, Any], status: Mapping[str, Any]) -> DomainEntry | None:
    """The index's view of one WebhookDomain (None: its spec is invalid, it covers nothing)."""
    try:
        parsed = parse_domain_spec(dict(spec))
    except SpecError:
        return None
    covers_below = parsed.include_subdomains and parsed.method == "DNS"
    return DomainEntry(name, parsed.domain, covers_below, is_verified(parsed, status))


def covering(entries: Iterable[DomainEntry], url: str) -> DomainEntry | None:
    """The verified domain of the namespace that covers ``url``'s host: the most specific one."""
    host = urlsplit(url).hostname or ""
    found = [
        e
        for e in entries
        if e.verified and host_covered(host, e.domain, include_subdomains=e.include_subdomains)
    ]
    return max(found, key=lambda e: (len(e.domain), e.name), default=None)


def domain_result(entry: DomainEntry) -> OwnershipResult:
    """A Webhook proven by a domain: no request is made."""
    below = " and the names below it" if entry.include_subdomains else ""
    message = f"verified by WebhookDomain {entry.name} ({entry.domain}{below}, proven for this namespace)"
    return OwnershipResult("DomainVerified", None, message, method="Domain", record=entry.name)


def instructions(token: str, spec: WebhookDomainSpec, *, allow_http: bool) -> dict[str, Any]:
    """What to publish: the TXT record (DNS) or where the file goes (File)."""
    if spec.method == "DNS":
        return DomainStatus(token=token, record=challenge_record(spec.domain), locations=None).patch()
    places = domain_file_locations(spec.domain, verification_file_name(token), allow_http=allow_http)
    return DomainStatus(token=token, record=None, locations=places).patch()


def pending_condition(token: str, spec: WebhookDomainSpec) -> Condition:
    if spec.method == "DNS":
        what = f"publish a TXT record {challenge_record(spec.domain)} holding {token}"
    else:
        what = (
            f"place a file named {verification_file_name(token)} containing {token} at https://{spec.domain}/"
        )
    return Condition(
        ConditionType.VERIFIED, "False", VerifiedReason.PENDING, f"{what}; it is checked shortly"
    )


def checked(
    spec: WebhookDomainSpec, status: Mapping[str, Any], result: OwnershipResult, now: str
) -> tuple[dict[str, Any], Condition]:
    """What a check of a domain that is not verified (new, or lapsed) writes: status and Verified."""
    lapsed = bool(status.get("lapsedAt"))
    if result.verified:
        fields = DomainStatus(
            verified_at=now, verified_for=proof_key(spec), last_checked_at=now, last_result=result.reason,
            last_error=None, records_found=None, checks=0, failing_since=None, lapsed_at=None,
        ).patch()  # fmt: skip
        message = f"ownership of {spec.domain} proven: {result.message}"
        return fields, Condition(ConditionType.VERIFIED, "True", result.reason, message)
    checks = int(status.get("checks") or 0) + 1
    fields = DomainStatus(
        last_checked_at=now, last_result=result.reason, last_error=result.message[:1024],
        records_found=list(result.records_found) or None, checks=checks,
    ).patch()  # fmt: skip
    if lapsed:
        message = (
            f"the proof of {spec.domain} lapsed; its Webhooks are paused until it is back. {result.message}"
        )
        return fields, Condition(ConditionType.VERIFIED, "False", VerifiedReason.OWNERSHIP_LAPSED, message)
    return fields, Condition(ConditionType.VERIFIED, "False", result.reason, result.message)


def lapsed_condition(spec: WebhookDomainSpec, message: str) -> Condition:
    text = f"the proof of {spec.domain} lapsed; its Webhooks are paused until it is back. {message}"
    return Condition(ConditionType.VERIFIED, "False", VerifiedReason.OWNERSHIP_LAPSED, text)


def verified_condition_of(status: Mapping[str, Any]) -> str | None:
    current = find(status.get("conditions"), ConditionType.VERIFIED)
    return None if current is None else str(current.get("status"))


@dataclass(frozen=True)
class WebhookProofFacts:
    """What the domain side needs of each Webhook: its host and how it is proven now."""

    url: str
    verified: bool
    by_domain: str | None  # the WebhookDomain that proves it, if one does


def affected(
    webhooks: Mapping[tuple[str, str], WebhookProofFacts],
    namespace: str,
    before: DomainEntry | None,
    after: DomainEntry | None,
) -> list[tuple[str, str]]:
    """Webhooks of ``namespace`` to re-evaluate after a domain changed from ``before`` to ``after``:
    those it proves and no longer covers verified (lapsed, deleted, subdomains dropped, another
    domain), and the unverified ones it now covers."""
    out = []
    for (ns, name), facts in webhooks.items():
        if ns != namespace:
            continue
        name_of = (after or before).name if (after or before) else None
        still = after is not None and covering([after], facts.url) is not None  # verified and covering
        lost = facts.by_domain is not None and facts.by_domain == name_of and not still
        gained = (
            after is not None
            and after.verified
            and not facts.verified
            and covering([after], facts.url) is not None
        )
        if lost or gained:
            out.append((ns, name))
    return sorted(out)
