"""Operator metrics (docs/internals.md): Webhooks by condition, verification checks, reconcile time.

Families live on a registry passed in, so several operators in one process (tests) do not collide.
The Webhook families are computed at scrape time from what the operator last saw of each Webhook, so
a deleted Webhook simply stops being counted and its per-Webhook series disappear. Labels name the
namespace, Webhook and spec.database (as kube-state-metrics does per object), never a URL.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hookline.api import CONDITION_ORDER as CONDITION_TYPES
from hookline.api import ConditionType, DeliveringReason
from hookline.sender.transport.ownership import REASONS

PROOF_KINDS = ("Webhook", "WebhookDomain")

CONDITION_STATUSES = ("True", "False", "Unknown")
DELIVERING_REASONS = {str(r) for r in DeliveringReason}  # a bounded label: nothing else passes

WebhookKey = tuple[str, str]  # (namespace, name)
CountKey = tuple[str, str, str, str]  # (namespace, database, condition, status)


@dataclass(frozen=True)
class WebhookSnapshot:
    """What the metrics need of one Webhook: its database ("" when unscoped) and condition statuses."""

    database: str
    conditions: Mapping[str, str]
    delivering_reason: str = "Unknown"  # the Delivering condition's reason; Unknown before there is one
    ready_reason: str = ""  # the Ready condition's reason (not a label: the backlog loop reads it)


def snapshot(database: str | None, conditions: Sequence[Mapping[str, Any]] | None) -> WebhookSnapshot:
    """Every known condition type with its status; a missing or odd one counts as Unknown."""
    by_type = {str(c.get("type")): str(c.get("status")) for c in conditions or ()}
    statuses = {t: by_type.get(t, "Unknown") for t in CONDITION_TYPES}
    reasons = {str(c.get("type")): c.get("reason") for c in conditions or ()}
    delivering = reasons.get(ConditionType.DELIVERING)
    return WebhookSnapshot(
        database=database or "",
        conditions={t: s if s in CONDITION_STATUSES else "Unknown" for t, s in statuses.items()},
        delivering_reason=str(delivering) if delivering in DELIVERING_REASONS else "Unknown",
        ready_reason=str(reasons.get(ConditionType.READY) or ""),
    )


def webhook_counts(seen: Mapping[WebhookKey, WebhookSnapshot]) -> dict[CountKey, int]:
    """How many Webhooks per (namespace, database, condition, status), zeros included, so a query
    such as `status="False"` finds a series at 0 rather than nothing."""
    tally: Tally[CountKey] = Tally()
    groups: set[tuple[str, str]] = set()
    for (namespace, _), webhook in seen.items():
        groups.add((namespace, webhook.database))
        for condition, status in webhook.conditions.items():
            tally[(namespace, webhook.database, condition, status)] += 1
    return {
        (namespace, database, condition, status): tally[(namespace, database, condition, status)]
        for namespace, database in sorted(groups)
        for condition in CONDITION_TYPES
        for status in CONDITION_STATUSES
    }


class WebhookConditions(Collector):
    """`hookline_webhooks{namespace, database, condition, status}` (counts) and
    `hookline_webhook_condition{namespace, webhook, database, condition, status}` (1 per Webhook and
    condition, the status it is in now)."""

    def __init__(self) -> None:
        self._seen: dict[WebhookKey, WebhookSnapshot] = {}

    def observe(
        self,
        namespace: str,
        name: str,
        database: str | None,
        conditions: Sequence[Mapping[str, Any]] | None,
    ) -> None:
        self._seen[(namespace, name)] = snapshot(database, conditions)

    def forget(self, namespace: str, name: str) -> None:
        self._seen.pop((namespace, name), None)

    def snapshots(self) -> dict[WebhookKey, WebhookSnapshot]:
        """Every Webhook the operator watches as last seen (a copy; the backlog loop reads it)."""
        return dict(self._seen)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        seen = dict(self._seen)  # handlers may change it while a scrape thread reads it
        counts = GaugeMetricFamily(
            "hookline_webhooks",
            "Webhooks by namespace, database, condition and status, as last seen by the operator",
            labels=["namespace", "database", "condition", "status"],
        )
        for labels, count in webhook_counts(seen).items():
            counts.add_metric(list(labels), count)
        yield counts
        per_webhook = GaugeMetricFamily(
            "hookline_webhook_condition",
            "1 for the status each condition of each Webhook is in, as last seen by the operator",
            labels=["namespace", "webhook", "database", "condition", "status"],
        )
        for (namespace, name), webhook in sorted(seen.items()):
            for condition, status in webhook.conditions.items():
                per_webhook.add_metric([namespace, name, webhook.database, condition, status], 1)
        yield per_webhook
        delivering = GaugeMetricFamily(
            "hookline_webhook_delivering_reason",
            "1 for the reason of each Webhook's Delivering condition (Delivering, Failing, Backlogged, "
            "ReceiverGone, Paused, ConsumerMissing, EventsLost, Disabled; Unknown before the first "
            "report), as last seen by the operator",
            labels=["namespace", "webhook", "database", "reason"],
        )
        for (namespace, name), webhook in sorted(seen.items()):
            delivering.add_metric([namespace, name, webhook.database, webhook.delivering_reason], 1)
        yield delivering


ReplicaReport = tuple[str, int, bool]
"""(pool, replica, whether its roster is fresh): one per replica its StatefulSet asks for."""


class PoolReplicas(Collector):
    """`hookline_pool_replica_reporting{pool, replica}`: 1 while the replica's roster is fresh, 0 for
    a replica its StatefulSet asks for that reports nothing (down, crash-looping, cut off from NATS).
    Computed at scrape time from ``reports`` (the Runtime's pool memory), so nothing is kept here."""

    def __init__(self) -> None:
        self.reports: Callable[[], Iterable[ReplicaReport]] = tuple

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "hookline_pool_replica_reporting",
            "1 when a sender pool replica reported its roster within the last 35 s, 0 when a replica "
            "the pool's StatefulSet asks for reports nothing, as seen by the leading operator",
            labels=["pool", "replica"],
        )
        for pool, replica, fresh in sorted(self.reports()):
            family.add_metric([pool, str(replica)], 1 if fresh else 0)
        yield family


def leader_gauge(registry: CollectorRegistry) -> Gauge:
    """`hookline_operator_leader`: 1 on the replica that holds the Lease (leader election only)."""
    return Gauge(
        "hookline_operator_leader",
        "1 while this operator replica holds the leader election Lease and runs the handlers",
        registry=registry,
    )


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.webhooks = WebhookConditions()
        registry.register(self.webhooks)
        self.pool_replicas = PoolReplicas()
        registry.register(self.pool_replicas)
        self.checks = Counter(
            "hookline_verification_checks",
            "Ownership checks of Webhook URLs, by result",
            ["reason"],
            registry=registry,
        )
        for reason in REASONS:
            self.checks.labels(reason=reason)
        # Periodic re-verification (operator/loops/recheck.py); kind is Webhook or WebhookDomain.
        self.recheck_failures = Counter(
            "hookline_ownership_recheck_failures",
            "Re-checks of a verified ownership proof (file, TXT record, WebhookDomain) that did not find it",
            ["kind"],
            registry=registry,
        )
        self.in_grace = Gauge(
            "hookline_ownership_in_grace",
            "Proofs whose re-checks fail, in their grace period: deliveries pause when it ends",
            ["kind"],
            registry=registry,
        )
        self.lapsed = Gauge(
            "hookline_ownership_lapsed",
            "Proofs that lapsed (Verified=False, OwnershipLapsed): their Webhooks' deliveries are paused",
            ["kind"],
            registry=registry,
        )
        for kind in PROOF_KINDS:
            self.recheck_failures.labels(kind=kind)
        self.status_writes = Counter(
            "hookline_delivery_status_writes",
            "status.delivery writes from the senders' health reports (bounded by the write budget)",
            registry=registry,
        )
        self.reconcile = Histogram(
            "hookline_reconcile_duration_seconds",
            "Time to reconcile one Webhook (verification and sender), in seconds",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.moved_aside = Counter(
            "hookline_events_moved_aside",
            "Events of a stuck or over-cap Webhook moved to its dead letters (reason backlog_limit) so "
            "the shared stream keeps room for the others; redrivable with hookline redrive",
            ["namespace", "webhook"],
            registry=registry,
        )
        self.moves_refused = Counter(
            "hookline_backlog_moves_refused",
            "Backlog moves stopped because NATS did not store the dead letters (the events stay)",
            registry=registry,
        )
