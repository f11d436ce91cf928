"""Periodic re-verification: when each proof is checked again, and what a re-check writes. Pure.

A proof that was valid once is not valid forever: a domain lapses and is registered by someone else, a
server is handed to another team. Every proof (a Webhook's own file or TXT record, a WebhookDomain's)
is therefore checked again every ``interval`` (24 h by default, ``recheckInterval`` per object). A
failed re-check starts a grace period (72 h): the proof is re-checked more often meanwhile
(``grace_retry``), deliveries go on, a Warning Event and ``hookline_ownership_recheck_failures_total``
say so. When the grace has passed the proof has lapsed: ``Verified`` turns False with reason
``OwnershipLapsed`` and deliveries pause (the sender scaled to 0, its consumer and events kept) until a
check finds the proof again.

Load stays bounded: one loop for the whole installation (operator/loops/recheck.py) takes re-checks
from a token bucket (``checks_per_second``), and each proof's due time is moved earlier by a stable
share (``jitter``) of its interval, so 10,000 proofs made in one hour do not all come due in the same
second a day later. A re-check that finds what the last one found writes one timestamp
(``lastCheckedAt``), nothing else.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from hookline.operator.rules.status import Announcement
from hookline.sender.transport.ownership import OwnershipResult
from hookline.timestamps import parse_rfc3339, rfc3339

ProofKind = Literal["Webhook", "WebhookDomain"]
ProofKey = tuple[str, str, str]
"""(kind, namespace, name) of the object a proof belongs to."""

DAY = 86_400.0


@dataclass(frozen=True)
class RecheckSchedule:
    """How often proofs are checked again and how much a failing one is forgiven (chart values
    verification.recheckInterval, verification.gracePeriod, verification.rechecksPerSecond)."""

    interval: float = DAY
    grace: float = 3 * DAY
    grace_retry: float = 3600.0
    """A proof in its grace period (or lapsed) is looked at this often (at most its interval)."""
    checks_per_second: float = 1.0
    burst: int = 10
    jitter: float = 0.1
    """Each proof comes due up to this share of its interval early (a stable share per object)."""
    tick: float = 1.0

    def __post_init__(self) -> None:
        if min(self.interval, self.grace_retry, self.checks_per_second, self.tick) <= 0 or self.grace < 0:
            raise ValueError("re-verification needs interval, grace_retry, checks_per_second, tick > 0")
        if not 0 <= self.jitter < 1 or self.burst < 1:
            raise ValueError("re-verification needs 0 <= jitter < 1 and burst >= 1")


@dataclass(frozen=True)
class Proof:
    """One proof the re-check loop keeps: a Webhook's own (File or DNS) or a WebhookDomain's."""

    kind: ProofKind
    namespace: str
    name: str
    uid: str
    method: Literal["File", "DNS"]
    target: str  # the Webhook's URL, or the domain
    token: str
    interval: float
    last_checked: float  # epoch seconds; 0: never
    verified: bool
    failing_since: float | None = None
    lapsed: bool = False
    checks: int = 0  # failed checks so far of a proof never verified (a WebhookDomain's first proof)

    @property
    def key(self) -> ProofKey:
        return (self.kind, self.namespace, self.name)


@functools.lru_cache(maxsize=65_536)  # the loop asks for every proof every tick
def jitter_share(key: ProofKey) -> float:
    """A stable number in [0, 1) for an object: where in its jitter window its re-check falls."""
    digest = hashlib.sha256("/".join(key).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def due_at(proof: Proof, schedule: RecheckSchedule, *, first_delay: float, max_delay: float) -> float:
    """When ``proof`` is checked next (epoch seconds)."""
    if proof.lapsed or not proof.verified:
        if proof.last_checked == 0:
            return 0.0
        backoff = first_delay * 2 ** max(0, proof.checks - 1)
        return proof.last_checked + min(backoff, max_delay, schedule.grace_retry)
    if proof.failing_since is not None:
        return proof.last_checked + min(proof.interval, schedule.grace_retry)
    early = proof.interval * schedule.jitter * jitter_share(proof.key)
    return proof.last_checked + proof.interval - early


def due_now(
    proofs: Iterable[Proof], now: float, schedule: RecheckSchedule, *, first_delay: float, max_delay: float
) -> list[Proof]:
    """The proofs due at ``now``, the longest overdue first."""
    due = [
        (at, p)
        for p in proofs
        if (at := due_at(p, schedule, first_delay=first_delay, max_delay=max_delay)) <= now
    ]
    return [p for _, p in sorted(due, key=lambda item: item[0])]


@dataclass
class TokenBucket:
    """Re-checks across the installation: ``rate`` per second, at most ``burst`` at once."""

    rate: float
    burst: int
    tokens: float = field(default=-1.0)
    at: float = 0.0

    def take(self, now: float) -> bool:
        if self.tokens < 0:
            self.tokens, self.at = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass(frozen=True)
class Recheck:
    """What one re-check of a verified proof writes and says.

    ``fields`` is the merge patch of status.verification (a Webhook) or of status (a WebhookDomain);
    ``lapsed``: the grace passed with this check (Verified turns False, deliveries pause); ``restored``:
    a failing or lapsed proof is back."""

    fields: dict[str, Any]
    event: Announcement | None = None
    lapsed: bool = False
    restored: bool = False


def _what(proof: Proof) -> str:
    return f"WebhookDomain {proof.name}" if proof.kind == "WebhookDomain" else "the Webhook's proof"


def after_recheck(proof: Proof, result: OwnershipResult, now: float, schedule: RecheckSchedule) -> Recheck:
    """The writes, Event and transition of one re-check of a verified (or failing) proof."""
    stamp = rfc3339_at(now)
    if result.verified:
        if proof.failing_since is None and not proof.lapsed:
            return Recheck({"lastCheckedAt": stamp})  # the usual case: one timestamp
        fields = {
            "lastCheckedAt": stamp, "failingSince": None, "lapsedAt": None,
            "lastResult": result.reason, "lastError": None, "recordsFound": None,
        }  # fmt: skip
        event = Announcement("Normal", "OwnershipRestored", f"ownership proven again: {result.message}")
        return Recheck(fields, event, restored=True)
    since = proof.failing_since if proof.failing_since is not None else now
    fields = {
        "lastCheckedAt": stamp, "lastResult": result.reason, "lastError": result.message[:1024],
        "failingSince": rfc3339_at(since), "recordsFound": list(result.records_found) or None,
    }  # fmt: skip
    deadline = since + schedule.grace
    if now >= deadline:
        fields["lapsedAt"] = stamp
        message = (
            f"{_what(proof)} has failed re-checks since {rfc3339_at(since)}, past the grace period: "
            "deliveries pause (events are kept) until ownership is proven again. Last check: "
            f"{result.message}"
        )
        return Recheck(fields, Announcement("Warning", "OwnershipLapsed", message), lapsed=True)
    if proof.failing_since is not None:
        return Recheck(fields)  # still in the grace period: said once already
    message = (
        f"re-check of {_what(proof)} failed: {result.message}. Deliveries go on; they pause at "
        f"{rfc3339_at(deadline)} unless the proof is back by then"
    )
    return Recheck(fields, Announcement("Warning", "OwnershipRecheckFailed", message))


def rfc3339_at(epoch: float) -> str:
    return rfc3339(datetime.fromtimestamp(epoch, UTC))


def epoch_of(value: object) -> float | None:
    """An RFC 3339 time from status as epoch seconds (None when absent or unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_rfc3339(value).timestamp()
    except ValueError:
        return None


def in_grace(verification: Mapping[str, Any]) -> bool:
    """A verified proof whose re-checks fail, not lapsed yet (the gauge of Webhooks in grace)."""
    return bool(verification.get("failingSince")) and not verification.get("lapsedAt")
