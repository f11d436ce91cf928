"""Leader election over a Kubernetes Lease (coordination.k8s.io/v1), as client-go does it. Pure.

Several operator replicas share one Lease; only its holder runs Kopf. The holder renews it every
retry period; a standby takes it once the holder has not renewed for the lease duration, counted on
the standby's own clock from the moment it last saw the record change (never by comparing
``renewTime`` with its clock, so clock skew between nodes does not matter). A holder that could not
renew within the renew deadline (shorter than the lease duration) stops at once, before any standby
may take over, so two replicas never work at the same time. A holder that stops cleanly releases the
Lease (empty holder), and a standby takes it at its next try.

Kopf's own peering is not used: replicas of equal priority both keep working there (it only warns),
and it needs its own CRDs.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

API_VERSION = "coordination.k8s.io/v1"


@dataclass(frozen=True)
class LeaseTiming:
    """client-go's defaults: a dead leader is replaced within lease + retry seconds (~17 s)."""

    lease_seconds: float = 15.0
    renew_deadline_seconds: float = 10.0
    retry_seconds: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_seconds < self.renew_deadline_seconds < self.lease_seconds:
            raise ValueError(
                "leader election needs retry period < renew deadline < lease duration "
                f"(got {self.retry_seconds:g} s, {self.renew_deadline_seconds:g} s, {self.lease_seconds:g} s)"
            )


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a Lease the election reads; ``version`` is its resourceVersion."""

    holder: str
    lease_seconds: float
    acquire_time: str | None
    renew_time: str | None
    transitions: int
    version: str | None

    @property
    def observed(self) -> tuple[str, str | None, int]:
        """What must change for a standby to count the holder as alive."""
        return (self.holder, self.renew_time, self.transitions)


def record_of(lease: Mapping[str, Any] | None) -> LeaseRecord | None:
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        lease_seconds=float(spec.get("leaseDurationSeconds") or 0),
        acquire_time=spec.get("acquireTime"),
        renew_time=spec.get("renewTime"),
        transitions=int(spec.get("leaseTransitions") or 0),
        version=(lease.get("metadata") or {}).get("resourceVersion"),
    )


class Move(enum.Enum):
    CREATE = "create"  # no Lease yet
    TAKE = "take"  # released, or its holder stopped renewing: write ourselves in
    RENEW = "renew"  # ours
    WAIT = "wait"  # another replica holds it and renews


def next_move(record: LeaseRecord | None, me: str, unchanged_for: float) -> Move:
    """What a replica does with the Lease as it reads it now; ``unchanged_for`` is how long (on this
    replica's clock) the record has looked exactly like this."""
    if record is None:
        return Move.CREATE
    if record.holder == me:
        return Move.RENEW
    if not record.holder or unchanged_for >= record.lease_seconds:
        return Move.TAKE
    return Move.WAIT


def micro_time(when: datetime | None = None) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds)."""
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_body(
    namespace: str,
    name: str,
    me: str,
    timing: LeaseTiming,
    record: LeaseRecord | None,
    now: str,
) -> dict[str, Any]:
    """The Lease held by ``me`` from ``now``: a create (no record) or a replace carrying the record's
    resourceVersion, so a replica that wrote meanwhile makes this one fail with a Conflict."""
    taken = record is None or record.holder != me
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if record is not None and record.version:
        metadata["resourceVersion"] = record.version
    transitions = 0 if record is None else record.transitions + int(taken)
    return {
        "apiVersion": API_VERSION,
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": me,
            "leaseDurationSeconds": max(1, round(timing.lease_seconds)),
            "acquireTime": now if taken or record is None else record.acquire_time or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        },
    }


def released_body(namespace: str, name: str, record: LeaseRecord, now: str) -> dict[str, Any]:
    """The Lease given up by its holder on a clean stop: no holder, so a standby takes it at once."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if record.version:
        metadata["resourceVersion"] = record.version
    return {
        "apiVersion": API_VERSION,
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "acquireTime": record.acquire_time or now,
            "renewTime": now,
            "leaseTransitions": record.transitions,
        },
    }
