"""Every sender and ingest metric, by the names in docs/internals.md (dashboards depend on them).

Metric families live on a registry passed in, so tests and dev mode (many senders in one process)
never collide. Each sender binds its label values once (`SenderMetrics.bind`) because looking up a
labelled child on every delivery costs more than the delivery bookkeeping itself. Sender series carry
`namespace`, `webhook` and `database` (the Webhook's spec.database, "" when unscoped), so a dashboard
can filter by database.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = [
    "ATTEMPT_OUTCOMES",
    "CONTENT_TYPE_LATEST",
    "DEAD_LETTER_REASONS",
    "EVENTS_LOST_REASONS",
    "FINAL_OUTCOMES",
    "IngestMetrics",
    "LoopValue",
    "SenderMetrics",
    "WebhookMetrics",
    "render",
    "use_loop_values",
]

ATTEMPT_OUTCOMES = ("success", "http_error", "timeout", "connection_error", "blocked")
FINAL_OUTCOMES = ("delivered", "dead_lettered")
DEAD_LETTER_REASONS = ("max_attempts", "max_age", "gone", "blocked")
EVENTS_LOST_REASONS = ("window_passed", "no_recovery_stream")  # model/outcomes.LossReason
INGEST_OUTCOMES = ("accepted", "duplicate", "rejected")
WEBHOOK_LABELS = ("namespace", "webhook", "database")

# Request times of customer endpoints: from a fast local receiver to the 10 s default timeout and beyond.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# End-to-end latency includes retries, so it reaches hours.
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 7200.0, 36000.0)
# Events per request: 1 without a batch, up to spec.delivery.batch.maxEvents (at most 1000).
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
PUBLISH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class LoopValue:
    """prometheus_client's metric value without its lock, for a process whose metrics only its event
    loop's thread touches (`hookline sender`, `hookline pool`). A delivery makes ~10 observations and
    each took and released a `threading.Lock` (~4 % of a sender's CPU per delivery,
    bench/profile_sender.py); one thread needs no lock. Same interface as `values.MutexValue`."""

    __slots__ = ("_exemplar", "_value")
    _multiprocess = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._value = 0.0
        self._exemplar: Any = None

    def inc(self, amount: float) -> None:
        self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._value = value

    def set_exemplar(self, exemplar: Any) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self._value

    def get_exemplar(self) -> Any:
        return self._exemplar


def observe_repeated(histogram: Histogram, amount: float, count: int) -> None:
    """`histogram.observe(amount)` done `count` times, in one step. Written to prometheus_client's
    Histogram storage (`_sum`, `_buckets`, `_upper_bounds`) as its own `observe` writes it;
    tests/unit/test_loop_values.py holds the result equal to `count` observations."""
    if count == 1:
        histogram.observe(amount)
        return
    histogram._raise_if_not_observable()  # type: ignore[attr-defined]
    histogram._sum.inc(amount * count)  # type: ignore[attr-defined]
    for index, bound in enumerate(histogram._upper_bounds):  # type: ignore[attr-defined]
        if amount <= bound:
            histogram._buckets[index].inc(count)  # type: ignore[attr-defined]
            break


def observe_ages(histogram: Histogram, now: float, since: Sequence[float]) -> None:
    """Observe `now - t` (at least 0) for each `t` of `since`, equal neighbours in one step: the events
    of a bundle share their stored time, and a batch of them made one observation each (~3 % of a
    batched sender's CPU, bench/profile_sender.py)."""
    for at, same in itertools.groupby(since):
        observe_repeated(histogram, max(0.0, now - at), sum(1 for _ in same))


def use_loop_values() -> None:
    """Metrics made from now on in this process hold `LoopValue`s. Only for processes that touch their
    metrics from one thread: a metric updated from two threads at once could lose an increment."""
    values.ValueClass = LoopValue  # type: ignore[misc,assignment]


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of a registry."""
    return generate_latest(registry)


@dataclass(frozen=True)
class WebhookMetrics:
    """The children of one Webhook (labels namespace, webhook, database already applied)."""

    attempts: dict[str, Counter]
    deliveries: dict[str, Counter]
    dead_letters: dict[str, Counter]
    duration: Histogram
    pending: Gauge
    in_flight: Gauge
    waiting_for_receiver: Gauge
    gone: Gauge
    latency: Histogram
    consumer_lost: Gauge
    consumer_recreated: Counter
    events_recovered: Counter
    events_lost: dict[str, Counter]
    dead_letter_failures: Counter
    request_events: Histogram


class SenderMetrics:
    """Metric families of the delivery engine; one instance per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = WEBHOOK_LABELS
        self._bound: dict[tuple[str, str], str] = {}  # (namespace, webhook) -> database
        self.attempts = Counter(
            "hookline_delivery_attempts",
            "HTTP delivery attempts by outcome",
            (*labels, "outcome"),
            registry=registry,
        )
        self.deliveries = Counter(
            "hookline_deliveries",
            "Events whose delivery ended, by final outcome",
            (*labels, "outcome"),
            registry=registry,
        )
        self.duration = Histogram(
            "hookline_delivery_duration_seconds",
            "Request time of each delivery attempt",
            labels,
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.pending = Gauge(
            "hookline_pending_events",
            "Events waiting in the Webhook's consumer (not yet delivered or awaiting a retry)",
            labels,
            registry=registry,
        )
        self.in_flight = Gauge(
            "hookline_in_flight_requests", "Delivery requests in progress", labels, registry=registry
        )
        self.waiting_for_receiver = Gauge(
            "hookline_requests_waiting_for_receiver",
            "Delivery requests waiting for a place under the pool replica's cap of requests in flight "
            "to one receiver (--max-in-flight-per-origin)",
            labels,
            registry=registry,
        )
        self.dead_letters = Counter(
            "hookline_dead_letters",
            "Events moved to the dead-letter stream, by reason",
            (*labels, "reason"),
            registry=registry,
        )
        self.gone = Gauge(
            "hookline_webhook_gone",
            "1 when the receiver answered 410 Gone and deliveries stopped",
            labels,
            registry=registry,
        )
        self.latency = Histogram(
            "hookline_end_to_end_latency_seconds",
            "Time from the event's arrival at ingest to its successful delivery",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

        self.consumer_lost = Gauge(
            "hookline_consumer_lost",
            "1 while the Webhook's JetStream consumer is missing (deleted outside hookline), until recreated",
            labels,
            registry=registry,
        )
        self.consumer_recreated = Counter(
            "hookline_consumer_recreated",
            "Times the sender found its consumer missing and recreated it from its last ack floor",
            labels,
            registry=registry,
        )
        self.events_recovered = Counter(
            "hookline_events_recovered",
            "Events put back from the recovery stream after the Webhook's consumer was deleted",
            labels,
            registry=registry,
        )
        self.events_lost = Counter(
            "hookline_events_lost",
            "Events the Webhook was owed after its consumer was deleted that could not be put back, by "
            "reason (window_passed: older than the recovery window; at most, other Webhooks' events of "
            "those stream sequences count too)",
            (*labels, "reason"),
            registry=registry,
        )
        self.dead_letter_failures = Counter(
            "hookline_dead_letter_failures",
            "Dead letters NATS did not store after every try (the event is kept and tried again later)",
            labels,
            registry=registry,
        )
        self.request_events = Histogram(
            "hookline_delivery_request_events",
            "Events carried by each delivery request (1 without spec.delivery.batch)",
            labels,
            buckets=BATCH_BUCKETS,
            registry=registry,
        )

    def bind(self, namespace: str, webhook: str, database: str | None = None) -> WebhookMetrics:
        """Create every child of one Webhook up front, so all series exist from the start at zero."""
        ids = (namespace, webhook, database or "")
        self._bound[(namespace, webhook)] = ids[2]
        return WebhookMetrics(
            attempts={o: self.attempts.labels(*ids, o) for o in ATTEMPT_OUTCOMES},
            deliveries={o: self.deliveries.labels(*ids, o) for o in FINAL_OUTCOMES},
            dead_letters={r: self.dead_letters.labels(*ids, r) for r in DEAD_LETTER_REASONS},
            duration=self.duration.labels(*ids),
            pending=self.pending.labels(*ids),
            in_flight=self.in_flight.labels(*ids),
            waiting_for_receiver=self.waiting_for_receiver.labels(*ids),
            gone=self.gone.labels(*ids),
            latency=self.latency.labels(*ids),
            consumer_lost=self.consumer_lost.labels(*ids),
            consumer_recreated=self.consumer_recreated.labels(*ids),
            events_recovered=self.events_recovered.labels(*ids),
            events_lost={r: self.events_lost.labels(*ids, r) for r in EVENTS_LOST_REASONS},
            dead_letter_failures=self.dead_letter_failures.labels(*ids),
            request_events=self.request_events.labels(*ids),
        )

    def unbind(self, namespace: str, webhook: str) -> None:
        """Drop one Webhook's series (dev mode, when a Webhook goes away)."""
        database = self._bound.pop((namespace, webhook), None)
        if database is None:
            return
        ids = (namespace, webhook, database)
        for family, extra in (
            (self.attempts, ATTEMPT_OUTCOMES),
            (self.deliveries, FINAL_OUTCOMES),
            (self.dead_letters, DEAD_LETTER_REASONS),
            (self.events_lost, EVENTS_LOST_REASONS),
        ):
            for value in extra:
                family.remove(*ids, value)
        for family in (
            self.duration,
            self.pending,
            self.in_flight,
            self.waiting_for_receiver,
            self.gone,
            self.latency,
            self.consumer_lost,
            self.consumer_recreated,
            self.events_recovered,
            self.dead_letter_failures,
            self.request_events,
        ):
            family.remove(*ids)


class IngestMetrics:
    """Metric families of `hookline ingest`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "hookline_ingest_events",
            "Events received by ingest, by outcome",
            ("outcome",),
            registry=registry,
        )
        self.requests = Counter(
            "hookline_ingest_requests", "Ingest HTTP requests by status code", ("code",), registry=registry
        )
        self.publish_duration = Histogram(
            "hookline_ingest_publish_duration_seconds",
            "Time to publish one request's events to the stream and get every acknowledgement",
            buckets=PUBLISH_BUCKETS,
            registry=registry,
        )
        self.event_outcomes = {o: self.events.labels(o) for o in INGEST_OUTCOMES}
        # By the producer token's NAME (never the token): who sends what, and who is refused (401s,
        # which have no producer, are counted under "unknown").
        self.producer_requests = Counter(
            "hookline_ingest_producer_requests",
            "Ingest requests by producer token name and HTTP status code",
            ("producer", "code"),
            registry=registry,
        )
        self.store_refusing = Gauge(
            "hookline_ingest_store_refusing",
            "1 while JetStream refuses new events (stream full or storage exhausted); /readyz is false",
            registry=registry,
        )
