"""Where a Webhook's engine runs, and what its status.sender says about that. Pure.

A Webhook runs in its own sender Deployment (Dedicated) or as one engine in a sender pool; a pooled
Webhook is assigned to one replica of its pool by a hash of its consumer name, so scaling a pool
moves about 1/N of its Webhooks. Every status.sender part is built here through the typed
``SenderStatus`` of hookline.api (a field the CRD does not declare cannot be written), and dumped
as a merge patch: a field set to None is removed from the Webhook's status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hookline.api import SenderMode, SenderStatus, WebhookSpec
from hookline.operator.settings import OperatorConfig
from hookline.sender.bus.poolproto import replica_of

Place = tuple[str, int | None]
"""A pooled Webhook's pool and replica (None: the pool has no replicas, so nothing serves it)."""


@dataclass(frozen=True)
class Placement:
    """Where a Webhook's engine runs: its own Deployment, or a pool (by name)."""

    mode: SenderMode
    pool: str | None = None


def placement(spec: WebhookSpec, config: OperatorConfig) -> Placement:
    """The spec's choice, else the installation's default; a pool name alone means Pool mode."""
    mode = spec.sender.mode or (SenderMode.POOL if spec.sender.pool else config.default_sender_mode)
    if mode == SenderMode.DEDICATED:
        return Placement(SenderMode.DEDICATED)
    return Placement(SenderMode.POOL, spec.sender.pool or config.default_sender_pool)


def assigned_replica(consumer: str, replicas: int) -> int | None:
    """The replica that serves `consumer` in a pool of `replicas` (None: the pool does not run)."""
    return replica_of(consumer, replicas) if replicas > 0 else None


def pool_place(status: Mapping[str, Any]) -> Place | None:
    """Where status says the Webhook's pool engine was assigned (what the operator wrote last)."""
    sender = status.get("sender") or {}
    if sender.get("mode") != SenderMode.POOL or not sender.get("pool"):
        return None
    replica = sender.get("replica")
    return str(sender["pool"]), (int(replica) if isinstance(replica, int) else None)


def pool_seen(running: bool, problem: str | None = None) -> dict[str, Any]:
    """What status.sender mirrors of a pooled Webhook's engine (a merge patch)."""
    return SenderStatus(
        ready_replicas=int(running), available_replicas=int(running), engine_problem=problem
    ).patch()


def pool_sender_status(
    pool: str, replica: int | None, *, running: bool, stopped: bool = False, config_hash: str | None = None
) -> dict[str, Any]:
    """status.sender of a pooled Webhook (a merge patch: a dedicated Deployment's name is dropped)."""
    seen = running and replica is not None
    digest = {} if config_hash is None else {"config_hash": config_hash}
    return SenderStatus(
        mode=SenderMode.POOL,
        pool=pool,
        replica=replica,
        replicas=0 if stopped else 1,
        ready_replicas=int(seen),
        available_replicas=int(seen),
        engine_problem=None,
        deployment=None,
        **digest,
    ).patch()


def dedicated_sender_status(deployment: str, replicas: int, config_hash: str) -> dict[str, Any]:
    """status.sender of a Webhook with its own Deployment (a pool's fields are dropped)."""
    return SenderStatus(
        mode=SenderMode.DEDICATED,
        pool=None,
        replica=None,
        engine_problem=None,
        deployment=deployment,
        replicas=replicas,
        config_hash=config_hash,
    ).patch()


def scaled_sender_status(replicas: int) -> dict[str, Any]:
    """status.sender after its Deployment was scaled (held while a new URL is not verified)."""
    return SenderStatus(replicas=replicas).patch()
