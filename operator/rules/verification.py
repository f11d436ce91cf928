"""Ownership verification decisions: the token, when to check, what a result means. Pure.

The token is made once and lives in status.verification.content for the Webhook's whole life: a
restart of the operator or an edit of spec.url never changes the file the customer has placed.
status.verification.verifiedFor records which spec.url the match was for, so a verified Webhook is
never checked again until its URL changes. It holds a fingerprint of the URL, not the URL: customers
put tokens in queries, and status is for everyone who may read the Webhook's state.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from hookline.api import Condition, VerificationStatus, VerifiedReason
from hookline.operator.rules.status import VERIFIED
from hookline.operator.settings import VerificationSchedule
from hookline.sender.model.outcomes import url_digest
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
    """What the customer needs to place: file name, content and the two places it may be."""
    name = verification_file_name(token)
    locations = verification_locations(url, name)
    return VerificationStatus(file_name=name, content=token, locations=locations).patch()


def url_fingerprint(url: str) -> str:
    """``sha256:<32 hex>`` of spec.url: tells whether the URL changed without repeating it."""
    return "sha256:" + url_digest(url)[:32]


def _is_for(recorded: object, url: str) -> bool:
    return recorded == url_fingerprint(url) or recorded == url  # the URL itself: before fingerprints


def is_verified_for(status: Mapping[str, Any] | None, url: str) -> bool:
    verification = (status or {}).get("verification") or {}
    return bool(verification.get("verifiedURL")) and _is_for(verification.get("verifiedFor"), url)


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
    result: OwnershipResult, *, url: str, now: str, checks: int, next_check_at: str | None
) -> dict[str, Any]:
    """The status.verification merge patch that records one check (token fields are set separately)."""
    verified = result.verified
    return VerificationStatus(
        verified_url=result.verified_url if verified else None,
        verified_at=now if verified else None,
        verified_for=url_fingerprint(url) if verified else None,
        last_checked_at=now,
        checked_for=url_fingerprint(url),
        checks=checks,
        last_result=result.reason,
        next_check_at=None if verified else next_check_at,
        last_error=None if verified else result.message,
    ).patch()


def verified_at(url: str | None) -> Condition:
    return Condition(VERIFIED, "True", VerifiedReason.FILE_MATCHED, f"ownership verified at {url}")


def verified_condition(result: OwnershipResult, next_delay: float | None = None) -> Condition:
    if result.verified:
        return verified_at(result.verified_url)
    message = result.message
    if next_delay is not None and result.reason != VerifiedReason.BLOCKED:
        message = f"{message}. Next check in {_human(next_delay)}"
    return Condition(VERIFIED, "False", result.reason, message)


def pending_condition(token: str, url: str) -> Condition:
    info = instructions(token, url)
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
