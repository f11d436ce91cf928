"""Operator metrics (docs/internals.md): Webhooks by condition, verification checks, reconcile time.

Families live on a registry passed in, so several operators in one process (tests) do not collide.
`hookline_webhooks` is computed at scrape time from what the operator last saw of each Webhook, so a
deleted Webhook simply stops counting.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hookline.operator.status import CONDITION_TYPES
from hookline.sender.ownership import REASONS

CONDITION_STATUSES = ("True", "False", "Unknown")


class WebhookConditions(Collector):
    """`hookline_webhooks{namespace, condition, status}`: how many Webhooks are in each state."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], dict[str, str]] = {}

    def observe(self, namespace: str, name: str, conditions: Sequence[Mapping[str, Any]] | None) -> None:
        by_type = {str(c.get("type")): str(c.get("status")) for c in conditions or ()}
        self._seen[(namespace, name)] = {t: by_type.get(t, "Unknown") for t in CONDITION_TYPES}

    def forget(self, namespace: str, name: str) -> None:
        self._seen.pop((namespace, name), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "hookline_webhooks",
            "Webhooks by condition and status, as last seen by the operator",
            labels=["namespace", "condition", "status"],
        )
        tally: Tally[tuple[str, str, str]] = Tally()
        namespaces = set()
        for (namespace, _), conditions in self._seen.items():
            namespaces.add(namespace)
            for condition, status in conditions.items():
                tally[(namespace, condition, status)] += 1
        for namespace in sorted(namespaces):
            for condition in CONDITION_TYPES:
                for status in CONDITION_STATUSES:
                    family.add_metric([namespace, condition, status], tally[(namespace, condition, status)])
        yield family


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.webhooks = WebhookConditions()
        registry.register(self.webhooks)
        self.checks = Counter(
            "hookline_verification_checks",
            "Ownership checks of Webhook URLs, by result",
            ["reason"],
            registry=registry,
        )
        for reason in REASONS:
            self.checks.labels(reason=reason)
        self.reconcile = Histogram(
            "hookline_reconcile_duration_seconds",
            "Time to reconcile one Webhook (verification and sender), in seconds",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
