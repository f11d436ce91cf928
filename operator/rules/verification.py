"""Ownership verification decisions: the token, when to check, what a result means. Pure.

The token is made once and lives in status.verification.content for the Webhook's whole life: a
restart of the operator or an edit of spec.url never changes the file the customer has placed.
status.verification.verifiedFor records which spec.url the match was for, so the reconcile does not
check a verified Webhook again until its URL changes (the re-check loop, rules/recheck.py, does, on its
schedule). It holds a fingerprint of the URL, not the URL: customers put tokens in queries, and status is
for everyone who may read the Webhook's state.

Three proofs (``status.verification.method``): File (the file beside the URL or at the root), DNS (a
TXT record ``_hookline-challenge.<host>``, spec.verification.method DNS) and Domain (a verified
WebhookDomain of the namespace covers the host; no outbound check of its own). A proof that was valid
for spec.url and is gone past its grace period has lapsed (``lapsedAt``): Verified=False with reason
OwnershipLapsed until a check finds a proof again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from hookline.api import Condition, ConditionType, DeliveringReason, VerificationStatus, VerifiedReason
from hookline.operator.rules.status import VERIFIED
from hookline.operator.settings import VerificationSchedule
from hookline.sender.model.outcomes import url_digest
from hookline.sender.transport.dnsproof import challenge_record
from hookline.sender.transport.ownership import (
    OwnershipResult,
    verification_file_name,
    verification_locations,
)

_TOKEN = re.compile(r"[0-9a-f]{32}")


def existing_token(status: Mapping[str, Any] | None) -> str | None:
    """The token already given to this Webhook, if any (a malformed one is not reused)."""
    content = ((status or {}).get("verification") or {}).get("content")
    return content if isinstance(content, str) and _TOKEN.fullmatch(content) else None


def ensure_token(status: Mapping[str, Any] | None, new_token: Callable[[], str]) -> tuple[str, bool]:
    """``(token, is_new)``: the stored token, or a fresh one when there is none yet."""
    token = existing_token(status)
    return (token, False) if token else (new_token(), True)


def instructions(token: str, url: str) -> dict[str, Any]:
    """What the customer needs to place: file name, content and the two places it may be (the DNS
    method's record is named by the Pending condition and, once checked, status.verification.record)."""
    name = verification_file_name(token)
    locations = verification_locations(url, name)
    return VerificationStatus(file_name=name, content=token, locations=locations).patch()


def dns_record_for(url: str) -> str:
    """The TXT record that proves spec.url's host."""
    return challenge_record(urlsplit(url).hostname or "")


def url_fingerprint(url: str) -> str:
    """``sha256:<32 hex>`` of spec.url: tells whether the URL changed without repeating it."""
    return "sha256:" + url_digest(url)[:32]


def _is_for(recorded: object, url: str) -> bool:
    return recorded == url_fingerprint(url) or recorded == url  # the URL itself: before fingerprints


def is_verified_for(status: Mapping[str, Any] | None, url: str) -> bool:
    """A proof holds for ``url`` now: it matched (a file, a record or a domain) and has not lapsed."""
    verification = (status or {}).get("verification") or {}
    proven = bool(verification.get("verifiedURL")) or verification.get("method") in ("DNS", "Domain")
    return proven and _is_for(verification.get("verifiedFor"), url) and not verification.get("lapsedAt")


def was_verified_for(status: Mapping[str, Any] | None, url: str) -> bool:
    """``url`` had a proof that lapsed (or whose domain is gone): a failed check is OwnershipLapsed."""
    verification = (status or {}).get("verification") or {}
    return _is_for(verification.get("verifiedFor"), url)


def check_delay(checks_done: int, schedule: VerificationSchedule) -> float:
    """Delay before the next check after ``checks_done`` failed ones: first, first*factor, ..., max."""
    delay = schedule.first_delay * schedule.factor ** max(0, checks_done - 1)
    return float(min(delay, schedule.max_delay))


def checks_so_far(status: Mapping[str, Any] | None, url: str) -> int:
    """Failed checks for this URL (the count restarts when the URL changes)."""
    verification = (status or {}).get("verification") or {}
    if not _is_for(verification.get("checkedFor"), url):
        return 0
    checks = verification.get("checks")
    return checks if isinstance(checks, int) and checks >= 0 else 0


def result_fields(
    result: OwnershipResult,
    *,
    url: str,
    now: str,
    checks: int,
    next_check_at: str | None,
    lapsed_at: str | None = None,
) -> dict[str, Any]:
    """The status.verification merge patch that records one check (token fields are set separately).
    ``lapsed_at``: the URL had a proof that is gone (kept until a proof is found again)."""
    verified = result.verified
    fields = VerificationStatus(
        verified_url=result.verified_url if verified else None,
        verified_at=now if verified else None,
        verified_for=url_fingerprint(url) if verified or lapsed_at else None,
        last_checked_at=now,
        checked_for=url_fingerprint(url),
        checks=checks,
        last_result=result.reason,
        next_check_at=None if verified else next_check_at,
        last_error=None if verified else result.message,
        method=result.method,
        record=result.record,
        records_found=list(result.records_found) or None,
        lapsed_at=None if verified else lapsed_at,
    ).patch()
    if verified:
        fields["failingSince"] = None
    return fields


def verified_at(url: str | None) -> Condition:
    return Condition(VERIFIED, "True", VerifiedReason.FILE_MATCHED, f"ownership verified at {url}")


def verified_by(verification: Mapping[str, Any]) -> Condition:
    """Verified=True as status.verification says it was proven (a file, a TXT record, a domain)."""
    method, record = verification.get("method"), verification.get("record")
    if method == "DNS":
        return Condition(
            VERIFIED, "True", VerifiedReason.RECORD_MATCHED, f"ownership verified by the TXT record {record}"
        )
    if method == "Domain":
        return Condition(
            VERIFIED,
            "True",
            VerifiedReason.DOMAIN_VERIFIED,
            f"ownership verified by WebhookDomain {record} of this namespace (the URL's host is on it)",
        )
    return verified_at(verification.get("verifiedURL"))


def verified_condition(
    result: OwnershipResult, next_delay: float | None = None, *, lapsed: bool = False
) -> Condition:
    if result.verified:
        return verified_by(
            {"method": result.method, "record": result.record, "verifiedURL": result.verified_url}
        )
    message = result.message
    if next_delay is not None and result.reason != VerifiedReason.BLOCKED:
        message = f"{message}. Next check in {_human(next_delay)}"
    if lapsed:
        return Condition(
            VERIFIED,
            "False",
            VerifiedReason.OWNERSHIP_LAPSED,
            "the proof of ownership lapsed: deliveries are paused and events kept until it is back. "
            + message,
        )
    return Condition(VERIFIED, "False", result.reason, message)


LAPSED_DELIVERING = (
    "deliveries are paused: the proof of ownership lapsed (the Verified condition says what was found); "
    "events are kept within the stream's retention and delivered once the proof is back"
)


def lapsed_delivering() -> Condition:
    """Delivering while the proof is lapsed: stopped like a paused Webhook (its sender is held)."""
    return Condition(ConditionType.DELIVERING, "False", DeliveringReason.PAUSED, LAPSED_DELIVERING)


def pending_condition(token: str, url: str, method: str = "File") -> Condition:
    info = instructions(token, url)
    if method == "DNS":
        return Condition(
            VERIFIED,
            "False",
            VerifiedReason.PENDING,
            f"publish a TXT record {dns_record_for(url)} holding {token}; it is checked shortly",
        )
    where = " or ".join(info["locations"])
    return Condition(
        VERIFIED,
        "False",
        VerifiedReason.PENDING,
        f"place a file named {info['fileName']} containing {token} at {where}; it is checked shortly",
    )


def _human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"
