"""What one operator instance shares between its handlers and loops: ``memo.runtime`` in Kopf.

Kopf serializes the handlers of one object, not of different objects, and the background loops run
beside them all; the Runtime is only ever touched from the operator's one event loop, so no lock is
needed, but every table has few writers, named here, and readers that take what they find:

- the wiring (config, api, http, consumers, metrics, directory, pool_key, new_token) is set at start
  and only read;
- ``senders``: ``seen`` (status.sender as last written from the sender's side) is written by
  handlers/webhooks.py (reconcile, sender_observed) and loops/poolsync.py (rebalance, mirror), each
  to skip a write that changes nothing; ``bus_problems`` only by the reconcile;
- ``delivery``: ``reports`` by the health watch (loops/health.py); ``written`` by the health writer;
  ``seen`` and ``resume_asks`` by webhook_seen, ``seen`` also by the health writer and the resume
  follower (loops/resumes.py) after their own writes;
- ``pools``: ``replicas`` and ``listed`` by loops/poolsync.py (pool_observed, list_pools);
  ``placed`` by the reconcile, the deletion and rebalance; ``rosters`` by the roster watch;
- ``tests``: ``finished`` by webhook_test_seen and the expiry loop (loops/expiry.py);
- ``background``: main.py's startup and cleanup.

A Webhook that is deleted is forgotten everywhere at once (``forget``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hookline.api import WebhookSpec
from hookline.operator.adapters import kubeapi
from hookline.operator.adapters.consumers import Consumers
from hookline.operator.adapters.natsauth import NatsMinter
from hookline.operator.adapters.pools import PoolDirectory
from hookline.operator.adapters.proofs import OwnershipMemory
from hookline.operator.adapters.shares import NamespaceShares
from hookline.operator.metrics import PROOF_KINDS, OperatorMetrics
from hookline.operator.rules.credmounts import referenced_names
from hookline.operator.rules.delivery import WriteState
from hookline.operator.rules.placement import Place
from hookline.operator.rules.status import BusProblem
from hookline.operator.settings import OperatorConfig
from hookline.sender.bus.poolproto import PoolKey, Roster
from hookline.sender.model.deliveryhealth import HealthReport
from hookline.sender.transport import ownership
from hookline.sender.transport.client import SafeHTTPClient
from hookline.sender.transport.dnsproof import TxtResolver

WebhookKey = tuple[str, str]
"""(namespace, name) of a Webhook (or of a WebhookTest in ``tests``)."""


@dataclass
class SenderMemory:
    """What is known of each Webhook's sender between events."""

    seen: dict[WebhookKey, dict[str, Any]] = field(default_factory=dict)
    # Why a Webhook's consumer (or pool engine) could not be made, until it can: a fact for Ready.
    bus_problems: dict[WebhookKey, BusProblem] = field(default_factory=dict)


@dataclass
class DeliveryMemory:
    """The senders' latest health reports, and what of them is in each Webhook's status.delivery."""

    reports: dict[WebhookKey, HealthReport] = field(default_factory=dict)
    written: dict[WebhookKey, WriteState] = field(default_factory=dict)
    # What webhook_seen last saw of each verified Webhook: status.delivery, and the resume
    # annotation with spec.url (the resume follower acts on them).
    seen: dict[WebhookKey, dict[str, Any]] = field(default_factory=dict)
    resume_asks: dict[WebhookKey, tuple[str | None, str]] = field(default_factory=dict)


@dataclass
class PoolMemory:
    """Sender pools: replicas of each pool (its StatefulSet's spec.replicas), where each pooled
    Webhook is placed (replica None: its pool does not run), and each replica's latest roster."""

    replicas: dict[str, int] = field(default_factory=dict)
    placed: dict[WebhookKey, Place] = field(default_factory=dict)
    rosters: dict[tuple[str, int], Roster] = field(default_factory=dict)
    listed: asyncio.Event = field(default_factory=asyncio.Event)

    def running(self, pool: str, replica: int | None, consumer: str) -> bool:
        """Whether the replica's roster says it runs this engine now."""
        roster = self.rosters.get((pool, replica)) if replica is not None else None
        return roster is not None and roster.alive(time.time()) and consumer in roster.consuming

    def reports(self) -> list[tuple[str, int, bool]]:
        """Each replica every pool should have, and whether its roster is fresh (metrics, at scrape
        time: from another thread, so the tables are copied first)."""
        now = time.time()
        rosters = dict(self.rosters)
        return [
            (pool, replica, (roster := rosters.get((pool, replica))) is not None and roster.alive(now))
            for pool, count in dict(self.replicas).items()
            for replica in range(count)
        ]

    def problem(self, pool: str, replica: int | None, consumer: str) -> str | None:
        """Why the replica does not run this engine, as its roster says (or that it reports nothing)."""
        if replica is None:
            return None
        roster = self.rosters.get((pool, replica))
        if roster is None or not roster.alive(time.time()):
            return f"replica {replica} of pool {pool} reports nothing (down, or not started)"
        problem = roster.problems.get(consumer)
        return problem[:512] if problem else None


@dataclass
class CredentialMemory:
    """Which Secrets (and CA ConfigMaps) each Webhook reads, so the Secret watch wakes only those
    Webhooks, and each Webhook's status.signing, the source of the JWKS endpoint."""

    by_object: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (ns, name) -> Webhooks
    named: dict[WebhookKey, set[str]] = field(default_factory=dict)
    public: dict[WebhookKey, dict[str, Any]] = field(default_factory=dict)

    def watch(self, namespace: str, webhook: str, spec: WebhookSpec) -> None:
        self.forget((namespace, webhook))
        names = referenced_names(webhook, spec)
        self.named[(namespace, webhook)] = names
        for name in names:
            self.by_object.setdefault((namespace, name), set()).add(webhook)

    def webhooks_reading(self, namespace: str, name: str) -> set[str]:
        return set(self.by_object.get((namespace, name), ()))

    def forget(self, key: WebhookKey) -> None:
        for name in self.named.pop(key, ()):
            readers = self.by_object.get((key[0], name))
            if readers is not None:
                readers.discard(key[1])
                if not readers:
                    del self.by_object[(key[0], name)]


@dataclass
class TenancyMemory:
    """Grants (handlers/grants.py): Kopf's live indexes of WebhookPolicies, Namespaces and Webhooks,
    kept by every tenancy handler; each Webhook's grant digest and why it may not run, written by its
    reconcile (webhook_seen reads ``stopped`` for Ready); ``dirty`` wakes the grants loop."""

    indexes: dict[str, Any] = field(default_factory=dict)
    digests: dict[WebhookKey, str] = field(default_factory=dict)
    stopped: dict[WebhookKey, str] = field(default_factory=dict)
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    compiled: dict[str, str] | None = None  # what the grants ConfigMap holds, as last written
    counted: dict[str, tuple[int, int]] = field(default_factory=dict)  # each policy's status, as written
    published: dict[str, Any] = field(default_factory=dict)  # pool grant records (g.<ns>), as written


@dataclass
class TestMemory:
    """Finished WebhookTests and when they finished, for the one expiry loop."""

    finished: dict[WebhookKey, str] = field(default_factory=dict)


@dataclass
class Runtime:
    """Everything handlers and loops share; see the module docstring for who writes what."""

    config: OperatorConfig
    api: kubeapi.KubeAPI
    http: SafeHTTPClient
    consumers: Consumers
    metrics: OperatorMetrics
    new_token: Callable[[], str] = ownership.new_token
    pool_key: PoolKey | None = None
    senders: SenderMemory = field(default_factory=SenderMemory)
    delivery: DeliveryMemory = field(default_factory=DeliveryMemory)
    pools: PoolMemory = field(default_factory=PoolMemory)
    tests: TestMemory = field(default_factory=TestMemory)
    tenancy: TenancyMemory = field(default_factory=TenancyMemory)
    credentials: CredentialMemory = field(default_factory=CredentialMemory)
    background: list[asyncio.Task[None]] = field(default_factory=list)
    # Mints dedicated senders' NATS users (None: NATS without auth, or no signing key given).
    nats_minter: NatsMinter | None = None
    ownership: OwnershipMemory = field(default_factory=OwnershipMemory)
    directory: PoolDirectory = field(init=False)
    dns: TxtResolver = field(init=False)  # DNS TXT proofs, through config.dns_nameservers
    # Each namespace's share of ``http`` (config.outbound_per_namespace operations at once).
    shares: NamespaceShares = field(init=False)

    def __post_init__(self) -> None:
        self.directory = PoolDirectory(self.consumers, self.pool_key)
        self.shares = NamespaceShares(self.config.outbound_per_namespace)
        self.metrics.pool_replicas.reports = self.pools.reports
        self.dns = TxtResolver(self.config.dns_nameservers, timeout=self.config.dns_timeout)
        for kind in PROOF_KINDS:  # read at scrape time
            self.metrics.in_grace.labels(kind=kind).set_function(lambda k=kind: self.ownership.in_grace(k))
            self.metrics.lapsed.labels(kind=kind).set_function(lambda k=kind: self.ownership.lapsed_count(k))

    def forget(self, key: WebhookKey) -> None:
        """A Webhook was deleted: nothing of it is kept."""
        self.ownership.forget_webhook(*key)
        self.credentials.forget(key)
        self.credentials.public.pop(key, None)
        for table in (
            self.senders.seen,
            self.senders.bus_problems,
            self.pools.placed,
            self.delivery.reports,
            self.delivery.written,
            self.delivery.seen,
            self.delivery.resume_asks,
            self.tenancy.digests,
            self.tenancy.stopped,
        ):
            table.pop(key, None)  # type: ignore[attr-defined]

    async def close(self) -> None:
        await asyncio.gather(self.http.close(), self.consumers.close())


def runtime_of(memo: Any) -> Runtime:
    """The Runtime in Kopf's memo (main.serve puts it there)."""
    return memo.runtime  # type: ignore[no-any-return]
